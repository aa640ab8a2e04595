//! Studies from a PACS, against a real Orthanc: the test binary starts its own Orthanc (DICOM
//! and HTTP on free loopback ports, the DICOMweb plugin, storage in a temporary folder),
//! uploads the IRCAD series through Orthanc's REST API, and every test talks to it over DIMSE
//! and DICOMweb, through the library and through the `ape pacs` command line.
//!
//! Without Orthanc (Debian packages `orthanc`, `orthanc-dicomweb`) or the shared data the
//! tests say SKIPPED; under `CI=true` they fail instead.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ape::pacs::{Client, Control, Limits, PacsError, Query, SeriesStore, Server};

const ORTHANC: &str = "/usr/sbin/Orthanc";
const DICOMWEB_PLUGIN: &str = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so";
const AET: &str = "ORTHANC";
const PATIENT_NAME: &str = "liver_17^patient";
const SLICES: usize = 119;

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// An Orthanc of this test run: killed on drop, and by a watchdog when the test process ends
/// (a static is never dropped).
struct Orthanc {
    child: Child,
    dicom_port: u16,
    http_port: u16,
    _dir: tempfile::TempDir,
    ircad: PathBuf,
    study: String,
    series: String,
}

impl Drop for Orthanc {
    fn drop(&mut self) {
        // SIGKILL would skip the watchdog's cleanup: it ends on its own once Orthanc is gone.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 exchange with `Connection: close`: status and body.
fn http(port: u16, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let start = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(response.len(), |i| i + 4);
    Ok((status, response[start..].to_vec()))
}

fn start_orthanc() -> Option<Orthanc> {
    let missing = if !Path::new(ORTHANC).is_file() {
        Some(ORTHANC)
    } else if !Path::new(DICOMWEB_PLUGIN).is_file() {
        Some(DICOMWEB_PLUGIN)
    } else {
        None
    };
    if let Some(missing) = missing {
        assert!(
            !ci(),
            "{missing} is missing, and under CI the PACS tests must run (apt-get install orthanc orthanc-dicomweb)"
        );
        eprintln!("SKIPPED: {missing} not found (apt-get install orthanc orthanc-dicomweb)");
        return None;
    }
    let data = common::shared_data("pacs")?;
    let ircad = data.join("ircad_17/dicom");
    assert!(ircad.is_dir(), "{} is missing", ircad.display());

    let dir = tempfile::tempdir().unwrap();
    let (dicom_port, http_port) = (free_port(), free_port());
    let config = serde_json::json!({
        "Name": "ape-test",
        "StorageDirectory": dir.path().join("storage"),
        "IndexDirectory": dir.path().join("storage"),
        "DicomAet": AET,
        "DicomPort": dicom_port,
        "HttpPort": http_port,
        "RemoteAccessAllowed": false,
        "AuthenticationEnabled": false,
        // Orthanc accepts any called AE title unless told to check it.
        "DicomCheckCalledAet": true,
        "DicomAlwaysAllowEcho": true,
        "DicomAlwaysAllowFind": true,
        "DicomAlwaysAllowGet": true,
        "DicomAlwaysAllowStore": true,
        "DicomModalities": { "ape": ["APE", "127.0.0.1", 104] },
        "Plugins": [DICOMWEB_PLUGIN],
        "DicomWeb": { "Enable": true, "Root": "/dicom-web/" },
        "ConcurrentJobs": 1,
    });
    let config_path = dir.path().join("orthanc.json");
    std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    let log = std::fs::File::create(dir.path().join("orthanc.log")).unwrap();
    // The watchdog shell ends Orthanc when this test process is gone, however it ends, and
    // removes the temporary folder (a static's TempDir is never dropped).
    let child = Command::new("bash")
        .arg("-c")
        .arg(
            "\"$1\" \"$2\" & o=$!; trap 'kill $o 2>/dev/null; wait $o; rm -rf \"$4\"' EXIT; \
             trap 'exit' TERM; \
             while kill -0 \"$3\" 2>/dev/null && kill -0 $o 2>/dev/null; do sleep 0.5; done",
        )
        .args(["watchdog", ORTHANC])
        .arg(&config_path)
        .arg(std::process::id().to_string())
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut orthanc = Orthanc {
        child,
        dicom_port,
        http_port,
        _dir: dir,
        ircad,
        study: String::new(),
        series: String::new(),
    };
    let started = Instant::now();
    while !matches!(http(http_port, "GET", "/system", b""), Ok((200, _))) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "Orthanc did not answer within 60 s: {}",
            std::fs::read_to_string(orthanc._dir.path().join("orthanc.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let upload = Instant::now();
    for entry in std::fs::read_dir(&orthanc.ircad).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let (status, body) = http(http_port, "POST", "/instances", &bytes).unwrap();
        assert_eq!(status, 200, "upload: {}", String::from_utf8_lossy(&body));
    }
    eprintln!(
        "Orthanc up; {SLICES} slices uploaded in {:.1} s",
        upload.elapsed().as_secs_f64()
    );
    let headers = ape::io::dicom::list_series(&orthanc.ircad).unwrap();
    orthanc.series = headers[0].uid.clone();
    let (_, body) = http(http_port, "GET", "/studies?expand", b"").unwrap();
    let studies: serde_json::Value = serde_json::from_slice(&body).unwrap();
    orthanc.study = studies[0]["MainDicomTags"]["StudyInstanceUID"]
        .as_str()
        .unwrap()
        .to_owned();
    Some(orthanc)
}

/// The Orthanc of this run, started by the first test that asks.
fn orthanc() -> Option<&'static Orthanc> {
    static ORTHANC: OnceLock<Option<Orthanc>> = OnceLock::new();
    ORTHANC.get_or_init(start_orthanc).as_ref()
}

impl Orthanc {
    fn dimse(&self) -> Server {
        Server::dimse("127.0.0.1", self.dicom_port, AET, None).unwrap()
    }

    fn web_url(&self) -> String {
        format!("http://127.0.0.1:{}/dicom-web", self.http_port)
    }

    fn web(&self) -> Server {
        Server::parse_web(&self.web_url()).unwrap()
    }

    fn servers(&self) -> [(&'static str, Server); 2] {
        [("DIMSE", self.dimse()), ("DICOMweb", self.web())]
    }
}

fn client(server: Server, store: &Path) -> Client {
    Client::new(server).with_store(SeriesStore::new(store))
}

/// The IRCAD volume read straight from the shared folder.
fn reference(orthanc: &Orthanc) -> ape::io::StoredVolume {
    ape::io::read_volume(&orthanc.ircad).unwrap()
}

fn assert_same_volume(folder: &Path, reference: &ape::io::StoredVolume) {
    let got = ape::io::read_volume(folder).unwrap();
    assert_eq!(got.volume.shape(), reference.volume.shape());
    assert_eq!(got.volume.affine(), reference.volume.affine());
    assert!(
        got.volume.data() == reference.volume.data(),
        "voxels differ from the series read directly"
    );
}

#[test]
fn echo_answers_over_dimse_and_dicomweb() {
    let Some(o) = orthanc() else { return };
    let store = tempfile::tempdir().unwrap();
    for (kind, server) in o.servers() {
        client(server, store.path())
            .echo()
            .unwrap_or_else(|e| panic!("{kind} echo: {e}"));
    }
}

#[test]
fn find_by_patient_and_by_modality_returns_the_study_and_its_series() {
    let Some(o) = orthanc() else { return };
    let store = tempfile::tempdir().unwrap();
    let queries = [
        Query {
            patient_name: Some(PATIENT_NAME.into()),
            ..Query::default()
        },
        Query {
            patient_name: Some("LIVER_17".into()),
            ..Query::default()
        },
        Query {
            modality: Some("CT".into()),
            ..Query::default()
        },
    ];
    for (kind, server) in o.servers() {
        let client = client(server, store.path());
        for query in &queries {
            let studies = client.find(query).unwrap();
            assert_eq!(studies.len(), 1, "{kind} {query:?}: {studies:?}");
            let study = &studies[0];
            assert_eq!(study.uid, o.study, "{kind}");
            assert_eq!(study.patient_name, PATIENT_NAME, "{kind}");
            assert_eq!(study.series.len(), 1, "{kind}");
            assert_eq!(study.series[0].uid, o.series, "{kind}");
            assert_eq!(study.series[0].modality, "CT", "{kind}");
            assert_eq!(study.series[0].slices, Some(SLICES), "{kind}");
        }
        for nothing in [
            Query {
                patient_name: Some("nobody".into()),
                ..Query::default()
            },
            Query {
                modality: Some("MR".into()),
                ..Query::default()
            },
            Query {
                description: Some("no such description".into()),
                ..Query::default()
            },
            Query::default()
                .with_date_range("19000101-19000102")
                .unwrap(),
        ] {
            let studies = client.find(&nothing).unwrap();
            assert!(studies.is_empty(), "{kind} {nothing:?}: {studies:?}");
        }
        assert_eq!(client.study_of(&o.series).unwrap(), o.study, "{kind}");
    }
}

#[test]
fn get_by_dimse_and_dicomweb_gives_the_volume_read_directly() {
    let Some(o) = orthanc() else { return };
    let reference = reference(o);
    let store = tempfile::tempdir().unwrap();
    for (kind, server) in o.servers() {
        let client = client(server, store.path());
        let progress_calls = std::sync::atomic::AtomicUsize::new(0);
        let progress = |_done: usize, _total: Option<usize>| {
            progress_calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        };
        let control = Control {
            progress: Some(&progress),
            ..Control::default()
        };
        let started = Instant::now();
        // The study is looked up when not given.
        let first = client.retrieve_to_store(None, &o.series, &control).unwrap();
        let took = started.elapsed();
        eprintln!(
            "{kind}: {} slices retrieved in {:.2} s",
            first.instances,
            took.as_secs_f64()
        );
        assert!(
            !first.from_store && first.instances == SLICES,
            "{kind}: {first:?}"
        );
        assert!(
            progress_calls.load(std::sync::atomic::Ordering::Relaxed) >= SLICES,
            "{kind}: progress reported per slice"
        );
        assert!(first.folder.starts_with(store.path()));
        assert_same_volume(&first.folder, &reference);

        // A second open comes from the store, without the network.
        let started = Instant::now();
        let second = client
            .retrieve_to_store(Some(&o.study), &o.series, &control)
            .unwrap();
        assert!(
            second.from_store && second.folder == first.folder,
            "{kind}: {second:?}"
        );
        assert!(started.elapsed() < Duration::from_millis(500));

        // Into a chosen folder; one that is not empty is refused.
        let out = store.path().join(format!("out-{kind}"));
        let n = client
            .retrieve_into(Some(&o.study), &o.series, &out, &control)
            .unwrap();
        assert_eq!(n, SLICES);
        assert_same_volume(&out, &reference);
        let err = client
            .retrieve_into(Some(&o.study), &o.series, &out, &control)
            .unwrap_err();
        assert!(err.to_string().contains("not empty"), "{err}");
        // No partial folders are left behind.
        let partial = std::fs::read_dir(store.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains("partial")
            })
            .count();
        assert_eq!(partial, 0);
    }
}

#[test]
fn a_cancelled_retrieval_leaves_nothing() {
    let Some(o) = orthanc() else { return };
    let store = tempfile::tempdir().unwrap();
    for (kind, server) in o.servers() {
        let client = client(server, store.path());
        let cancel = std::sync::atomic::AtomicBool::new(false);
        let progress = |done: usize, _: Option<usize>| {
            if done >= 5 {
                cancel.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        };
        let control = Control {
            cancel: Some(&cancel),
            progress: Some(&progress),
        };
        let err = client
            .retrieve_to_store(Some(&o.study), &o.series, &control)
            .unwrap_err();
        assert!(matches!(err, PacsError::Cancelled), "{kind}: {err}");
        let left = std::fs::read_dir(store.path()).map_or(0, |d| d.count());
        assert_eq!(left, 0, "{kind}: a cancelled retrieval left files");
    }
}

/// Short limits, so that failures show within seconds.
fn short() -> Limits {
    Limits {
        connect: Duration::from_secs(2),
        read: Duration::from_secs(2),
        total: Duration::from_secs(10),
        ..Limits::default()
    }
}

#[test]
fn a_stopped_server_and_a_wrong_ae_title_give_clear_errors_within_the_timeout() {
    let Some(o) = orthanc() else { return };
    let store = tempfile::tempdir().unwrap();
    let down = free_port();
    let stopped = [
        Server::dimse("127.0.0.1", down, AET, None).unwrap(),
        Server::parse_web(&format!("http://127.0.0.1:{down}/dicom-web")).unwrap(),
    ];
    for server in stopped {
        let started = Instant::now();
        let err = client(server, store.path())
            .with_limits(short())
            .echo()
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        let message = err.to_string();
        assert!(matches!(err, PacsError::Unreachable { .. }), "{message}");
        assert!(
            message.contains(&down.to_string()) && message.contains("cannot connect"),
            "{message}"
        );
    }

    let wrong = Server::dimse("127.0.0.1", o.dicom_port, "NOT-ORTHANC", None).unwrap();
    let started = Instant::now();
    let err = client(wrong, store.path())
        .with_limits(short())
        .echo()
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    let message = err.to_string();
    assert!(matches!(err, PacsError::Rejected { .. }), "{message}");
    assert!(
        message.contains("NOT-ORTHANC@127.0.0.1") && message.contains("rejected"),
        "{message}"
    );
    assert!(message.to_lowercase().contains("called"), "{message}");
}

/// A server that accepts connections and then either says nothing or sends garbage.
fn hostile_server(garbage: bool) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut stream = stream;
                if garbage {
                    let mut x = 7u32;
                    let bytes: Vec<u8> = (0..100_000)
                        .map(|_| {
                            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                            (x >> 16) as u8
                        })
                        .collect();
                    let _ = stream.write_all(&bytes);
                }
                std::thread::sleep(Duration::from_secs(30));
            });
        }
    });
    port
}

#[test]
fn stalled_and_garbage_servers_end_in_errors_not_hangs() {
    let store = tempfile::tempdir().unwrap();
    for garbage in [false, true] {
        let port = hostile_server(garbage);
        let servers = [
            Server::dimse("127.0.0.1", port, AET, None).unwrap(),
            Server::parse_web(&format!("http://127.0.0.1:{port}/dicom-web")).unwrap(),
        ];
        for server in servers {
            let name = server.name();
            let started = Instant::now();
            let client = client(server, store.path()).with_limits(short());
            let err = client.echo().unwrap_err();
            let err_find = client.find(&Query::default()).unwrap_err();
            assert!(
                started.elapsed() < Duration::from_secs(12),
                "{name}: took {:?}",
                started.elapsed()
            );
            for e in [&err, &err_find] {
                assert!(e.to_string().contains(&port.to_string()), "{e}");
                if !garbage {
                    assert!(matches!(e, PacsError::Timeout { .. }), "{name}: {e}");
                }
            }
        }
    }
}

#[test]
fn ape_pacs_runs_end_to_end() {
    let Some(o) = orthanc() else { return };
    let reference = reference(o);
    let cache = tempfile::tempdir().unwrap();
    let port = o.dicom_port.to_string();
    let dimse: Vec<&str> = vec!["--host", "127.0.0.1", "--port", &port, "--called-aet", AET];
    let url = o.web_url();
    let web: Vec<&str> = vec!["--url", &url];
    for (kind, server) in [("DIMSE", &dimse), ("DICOMweb", &web)] {
        let args = |cmd: &[&str]| -> Vec<String> {
            let mut a = vec!["pacs".to_owned(), cmd[0].to_owned()];
            a.extend(server.iter().map(|s| (*s).to_owned()));
            a.extend(cmd[1..].iter().map(|s| (*s).to_owned()));
            a
        };
        let out = common::run_ape(&args(&["echo"]), cache.path());
        assert!(out.contains("answers"), "{kind}: {out}");

        let out = common::run_ape(&args(&["find", "--patient", "liver_17"]), cache.path());
        assert!(
            out.contains(&o.study) && out.contains(&o.series),
            "{kind}: {out}"
        );
        assert!(out.contains("119"), "{kind}: {out}");

        let out = common::run_ape(&args(&["find", "--modality", "CT", "--json"]), cache.path());
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(json[0]["uid"], o.study.as_str(), "{kind}: {out}");
        assert_eq!(json[0]["series"][0]["slices"], SLICES, "{kind}: {out}");

        let out = common::run_ape(&args(&["get", "--series", &o.series]), cache.path());
        let folder = PathBuf::from(out.trim());
        assert!(folder.starts_with(cache.path()), "{kind}: {out}");
        assert_same_volume(&folder, &reference);
        // The folder is what every other command accepts.
        let info = common::run_ape(&["info", folder.to_str().unwrap()], cache.path());
        assert!(info.contains("512 × 512 × 119 voxels"), "{kind}: {info}");

        let dir = cache.path().join(format!("chosen-{kind}"));
        let out = common::run_ape(
            &args(&[
                "get",
                "--series",
                &o.series,
                "--study",
                &o.study,
                "-o",
                dir.to_str().unwrap(),
            ]),
            cache.path(),
        );
        assert_eq!(PathBuf::from(out.trim()), dir, "{kind}");
        assert_same_volume(&dir, &reference);

        let err = common::run_ape_failing(&args(&["get", "--series", "1.2.3.4"]), cache.path());
        assert!(err.contains("1.2.3.4"), "{kind}: {err}");
    }
    let wrong = [
        "pacs",
        "echo",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--called-aet",
        "WRONG",
    ];
    let err = common::run_ape_failing(&wrong, cache.path());
    assert!(err.contains("rejected"), "{err}");
    let err = common::run_ape_failing(&["pacs", "echo", "--host", "127.0.0.1"], cache.path());
    assert!(err.contains("--port") || err.contains("port"), "{err}");
}

#[path = "common/viewer.rs"]
mod viewer_steps;
use viewer_steps::step_until;

/// The viewer's "Open from PACS…" window, driven like a user: the saved servers come from the
/// config folder, a search typed into the form finds the study over DICOMweb, "Open" retrieves
/// the series into the store and the cohort embeds it; the same over DIMSE; a server that is
/// down is a message in the window while the UI keeps drawing.
#[test]
fn the_viewer_finds_the_study_on_the_pacs_and_opens_its_series() {
    use ape_app::viewer::ApeApp;
    use ape_app::viewer::state::ScanStatus;
    use egui_kittest::kittest::Queryable;

    let Some(o) = orthanc() else { return };
    let reference = reference(o);
    let config = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let servers = serde_json::json!([
        { "name": "test Orthanc (DICOMweb)", "web": true, "url": o.web_url() },
        { "name": "test Orthanc (DIMSE)", "web": false, "host": "127.0.0.1",
          "port": o.dicom_port.to_string(), "called_aet": AET, "calling_aet": "APE" },
    ]);
    std::fs::write(
        config.path().join("pacs-servers.json"),
        serde_json::to_vec(&servers).unwrap(),
    )
    .unwrap();
    let compute = ape::model::backend::cpu();
    let model = std::sync::Arc::new(ape::model::ApeModel::bundled(&compute.device).unwrap());
    let (config_dir, store_dir) = (config.path().to_owned(), store.path().to_owned());
    let mut harness = egui_kittest::Harness::builder()
        .with_size(egui::vec2(1280.0, 900.0))
        .build_eframe(move |cc| {
            ApeApp::new(
                &cc.egui_ctx,
                Some(model),
                compute.device,
                None,
                "test".into(),
            )
            .with_recent_files(config_dir)
            .with_pacs_store(SeriesStore::new(store_dir))
        });
    harness.get_by_label("Open from PACS…").click();
    for _ in 0..3 {
        harness.step(); // a new window is sized on its first frame, shown on the next
    }
    assert_eq!(harness.state().pacs().servers.len(), 2);
    harness.get_by_label("Patient name").focus();
    harness.step();
    harness.get_by_label("Patient name").type_text("liver_17");
    harness.step();
    assert_eq!(
        harness.state().pacs().query.patient_name,
        "liver_17",
        "the typed name is in the form"
    );
    harness.get_by_label("Search").click();
    harness.step();
    step_until(&mut harness, "the search", Duration::from_secs(60), |app| {
        !app.pacs().busy()
    });
    let window = harness.state().pacs();
    assert!(
        window.message.as_ref().is_some_and(|(error, _)| !error),
        "{:?}",
        window.message
    );
    assert_eq!(window.studies.len(), 1);
    assert_eq!(window.studies[0].uid, o.study);
    assert_eq!(window.studies[0].series[0].uid, o.series);
    assert!(
        harness
            .query_by_label_contains("liver_17 patient")
            .is_some()
    );
    assert!(harness.query_by_label("119 slices").is_some());

    harness.get_by_label("Open").click();
    step_until(
        &mut harness,
        "the series to be retrieved, read and embedded",
        Duration::from_secs(300),
        |app| {
            app.state
                .cohort
                .first()
                .is_some_and(|s| matches!(s.status, ScanStatus::Ready | ScanStatus::Failed(_)))
        },
    );
    let app = harness.state();
    let message = app.pacs().message.clone();
    assert!(
        message
            .as_ref()
            .is_some_and(|(error, text)| !error && text.contains("119 slices")),
        "{message:?}"
    );
    let opened = &app.state.cohort[0];
    assert!(
        matches!(opened.status, ScanStatus::Ready),
        "{:?}",
        opened.status
    );
    assert!(
        opened.path.starts_with(store.path()),
        "{}",
        opened.path.display()
    );
    assert!(
        opened.name.starts_with("liver_17 patient · CT"),
        "{}",
        opened.name
    );
    assert!(opened.map.is_some(), "embedded like any other scan");
    let scan = opened.scan.as_ref().unwrap();
    assert_eq!(scan.volume.shape(), reference.volume.shape());
    assert_eq!(scan.volume.affine(), reference.volume.affine());

    // The same series over DIMSE: the other saved server, chosen in its list.
    harness
        .get_by(|n| {
            n.role() == egui::accesskit::Role::ComboBox
                && n.value().as_deref() == Some("test Orthanc (DICOMweb)")
        })
        .click();
    for _ in 0..3 {
        harness.step(); // the list pops up
    }
    harness.get_by_label("test Orthanc (DIMSE)").click();
    harness.step();
    assert!(!harness.state().pacs().form.web);
    harness.get_by_label("Search").click();
    harness.step();
    step_until(
        &mut harness,
        "the DIMSE search",
        Duration::from_secs(60),
        |app| !app.pacs().busy(),
    );
    assert_eq!(harness.state().pacs().studies.len(), 1);
    harness.get_by_label("Open").click();
    step_until(
        &mut harness,
        "the DIMSE series to be read",
        Duration::from_secs(300),
        |app| app.state.cohort.get(1).is_some_and(|s| s.scan.is_some()),
    );
    let scan = harness.state().state.cohort[1].scan.clone().unwrap();
    assert!(scan.volume.data() == reference.volume.data());

    // A server that is down: a message in the window, and frames keep coming meanwhile.
    let down = free_port();
    harness.state_mut().pacs_mut().form.port = down.to_string();
    harness.get_by_label("Test connection").click();
    harness.step();
    let started = Instant::now();
    let mut frames = 0;
    while harness.state().pacs().busy() {
        assert!(started.elapsed() < Duration::from_secs(20), "no answer");
        harness.step();
        frames += 1;
    }
    harness.step();
    let message = harness.state().pacs().message.clone();
    assert!(
        message.as_ref().is_some_and(|(error, text)| *error
            && text.contains("cannot connect")
            && text.contains(&down.to_string())),
        "{message:?}"
    );
    assert!(frames > 0 || started.elapsed() < Duration::from_millis(100));
    assert!(harness.query_by_label_contains("cannot connect").is_some());
}
