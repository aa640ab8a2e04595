//! `ape pacs echo|find|get`: studies from a PACS over DIMSE (`--host --port --called-aet`) or
//! DICOMweb (`--url`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use ape::pacs::{Client, Control, Query, Server, Study};

#[derive(Debug, clap::Args)]
pub struct PacsArgs {
    #[command(subcommand)]
    command: PacsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum PacsCommand {
    /// Check that the server answers (C-ECHO; for DICOMweb a QIDO-RS search).
    Echo {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List the matching studies and their series (UIDs, descriptions, slice counts).
    Find {
        #[command(flatten)]
        server: ServerArgs,
        /// Patient name; without * or ? it matches names that contain it (any case on most
        /// servers).
        #[arg(long)]
        patient: Option<String>,
        #[arg(long)]
        patient_id: Option<String>,
        /// Study dates FROM-TO as YYYYMMDD-YYYYMMDD (either side may be empty), or one date.
        #[arg(long)]
        date: Option<String>,
        /// Series modality, e.g. CT.
        #[arg(long)]
        modality: Option<String>,
        /// Text the study's or series' description contains.
        #[arg(long)]
        description: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Retrieve one series and print its folder, which every other ape command opens.
    Get {
        #[command(flatten)]
        server: ServerArgs,
        /// SeriesInstanceUID.
        #[arg(long)]
        series: String,
        /// StudyInstanceUID (looked up when not given).
        #[arg(long)]
        study: Option<String>,
        /// A new or empty folder for the slices (default: the local store, where a series
        /// retrieved before is found at once).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

/// Where the server is: DIMSE (`--host`, `--port`, `--called-aet`) or DICOMweb (`--url`).
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// DICOM host (with --port and --called-aet).
    #[arg(long, conflicts_with = "url", requires_all = ["port", "called_aet"])]
    host: Option<String>,
    /// DICOM port.
    #[arg(long, requires = "host")]
    port: Option<u16>,
    /// The server's AE title.
    #[arg(long, requires = "host")]
    called_aet: Option<String>,
    /// Our AE title.
    #[arg(long, requires = "host", default_value = ape::pacs::DEFAULT_CALLING_AET)]
    aet: String,
    /// DICOMweb root URL, e.g. http://localhost:8042/dicom-web (credentials as
    /// http://user:password@host/…; they are never printed).
    #[arg(long, required_unless_present = "host")]
    url: Option<String>,
}

impl ServerArgs {
    fn server(&self) -> anyhow::Result<Server> {
        Ok(match (&self.url, &self.host, self.port, &self.called_aet) {
            (Some(url), ..) => Server::parse_web(url)?,
            (None, Some(host), Some(port), Some(aet)) => {
                Server::dimse(host, port, aet, Some(&self.aet))?
            }
            _ => anyhow::bail!("give --url, or --host with --port and --called-aet"),
        })
    }
}

pub fn run(args: &PacsArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        PacsCommand::Echo { server } => {
            let client = Client::new(server.server()?);
            client.echo()?;
            say!("{} answers", client.server().name());
        }
        PacsCommand::Find {
            server,
            patient,
            patient_id,
            date,
            modality,
            description,
            json,
        } => {
            let client = Client::new(server.server()?);
            let mut query = Query {
                patient_name: patient.clone(),
                patient_id: patient_id.clone(),
                modality: modality.clone(),
                description: description.clone(),
                ..Query::default()
            };
            if let Some(range) = date {
                query = query.with_date_range(range)?;
            }
            let studies = client.find(&query)?;
            if *json {
                say!("{}", serde_json::to_string_pretty(&studies)?);
            } else if studies.is_empty() {
                say!("no matching studies on {}", client.server().name());
            } else {
                say_raw!("{}", render(&studies));
            }
        }
        PacsCommand::Get {
            server,
            series,
            study,
            output,
        } => {
            let client = Client::new(server.server()?);
            let progress = progress_printer();
            let control = Control {
                progress: Some(&progress),
                ..Control::default()
            };
            let folder = match output {
                Some(dir) => {
                    let n = client
                        .retrieve_into(study.as_deref(), series, dir, &control)
                        .with_context(|| format!("retrieving series {series}"))?;
                    eprintln!("{n} slices");
                    dir.clone()
                }
                None => {
                    let got = client
                        .retrieve_to_store(study.as_deref(), series, &control)
                        .with_context(|| format!("retrieving series {series}"))?;
                    if got.from_store {
                        eprintln!("{} slices, already in the local store", got.instances);
                    } else {
                        eprintln!("{} slices", got.instances);
                    }
                    got.folder
                }
            };
            say!("{}", folder.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints "received N/M" on stderr at most a few times a second.
fn progress_printer() -> impl Fn(usize, Option<usize>) + Sync {
    let last = std::sync::Mutex::new(std::time::Instant::now());
    move |done, total| {
        let Ok(mut last) = last.lock() else { return };
        if last.elapsed() < std::time::Duration::from_millis(250) && Some(done) != total {
            return;
        }
        *last = std::time::Instant::now();
        match total {
            Some(t) => eprint!("\rreceived {done}/{t}"),
            None => eprint!("\rreceived {done}"),
        }
        if Some(done) == total {
            eprintln!();
        }
    }
}

/// Studies and their series as an indented list.
fn render(studies: &[Study]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let or_dash = |s: &str| {
        if s.is_empty() {
            "—".to_owned()
        } else {
            s.to_owned()
        }
    };
    for study in studies {
        let _ = writeln!(
            out,
            "study {}  patient {} (ID {})  date {}  {}",
            study.uid,
            or_dash(&study.patient_name),
            or_dash(&study.patient_id),
            or_dash(&study.date),
            or_dash(&study.description)
        );
        for s in &study.series {
            let slices = s.slices.map_or("?".to_owned(), |n| n.to_string());
            let _ = writeln!(
                out,
                "  series {}  {}  {} slices  {}",
                s.uid,
                or_dash(&s.modality),
                slices,
                or_dash(&s.description)
            );
        }
    }
    out
}
