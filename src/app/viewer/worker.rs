//! Reading and embedding scans on a background thread, so that the UI never waits: jobs go in
//! through a channel, progress and results come back through another, and the UI is asked to
//! repaint whenever something arrives.

use std::path::PathBuf;
use std::sync::Arc;

use std::sync::mpsc::{Receiver, Sender, channel};

use burn::tensor::Device;

use ape::ape_map::ApeMap;
use ape::cache::{CacheUse, MapCache, embed_cached};
use ape::labels::Organs;
use ape::model::ApeModel;
use ape::refine::PatchImage;
use ape::retrieval::MapIndex;
use ape::scan::Scan;

/// What the worker reports.
#[derive(Debug)]
pub enum WorkerEvent {
    Loaded(usize, Arc<Scan>),
    Progress(usize, f32),
    /// The map, its index and the image patches for refined transfer (`None` when the scan's
    /// grid is too large to resample).
    Embedded(usize, Arc<ApeMap>, Arc<MapIndex>, Option<Arc<PatchImage>>),
    Failed(usize, String),
    /// Something the user should know that did not stop the job (a map not cached).
    Warning(usize, String),
    /// The organs of the label map beside the scan, or why it could not be read. Not sent for
    /// scans without one.
    Organs(usize, Result<Arc<Organs>, String>),
    /// The scan's map runs back along S–I (sent after `Embedded`, only when it does).
    SiFault(usize, ape::SiFault),
}

struct Job {
    id: usize,
    path: PathBuf,
}

/// The background worker. Dropping it lets the thread finish its queue and stop.
#[derive(Debug)]
pub struct Worker {
    jobs: Sender<Job>,
    events: Receiver<WorkerEvent>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Job({}, {})", self.id, self.path.display())
    }
}

impl Worker {
    /// Starts the thread. `model` is `None` when no model could be loaded: scans are then read
    /// but not embedded. `wake` is called after every event (the UI's repaint request).
    pub fn spawn(
        model: Option<Arc<ApeModel>>,
        device: Device,
        cache: Option<MapCache>,
        wake: impl Fn() + Send + 'static,
    ) -> Self {
        let (jobs, job_rx) = channel::<Job>();
        let (event_tx, events) = channel();
        let spawned = std::thread::Builder::new()
            .name("ape-worker".into())
            .spawn(move || {
                for job in job_rx {
                    let send = |e: WorkerEvent| {
                        let _ = event_tx.send(e);
                        wake();
                    };
                    run_job(&job, model.as_deref(), &device, cache.as_ref(), &send);
                }
            });
        if let Err(e) = spawned {
            // No thread, no work: every job will fail visibly instead of hanging.
            eprintln!("ape: could not start the worker thread: {e}");
        }
        Self { jobs, events }
    }

    /// Queues a scan for reading and embedding.
    pub fn open(&self, id: usize, path: PathBuf) -> bool {
        self.jobs.send(Job { id, path }).is_ok()
    }

    /// Events that have arrived since the last call.
    pub fn poll(&self) -> Vec<WorkerEvent> {
        self.events.try_iter().collect()
    }
}

fn run_job(
    job: &Job,
    model: Option<&ApeModel>,
    device: &Device,
    cache: Option<&MapCache>,
    send: &dyn Fn(WorkerEvent),
) {
    let scan = match Scan::read(&job.path) {
        Ok(scan) => Arc::new(scan),
        Err(e) => return send(WorkerEvent::Failed(job.id, e.to_string())),
    };
    send(WorkerEvent::Loaded(job.id, scan.clone()));
    if let Some(labels) = ape::cohort::label_map_for(&job.path) {
        let organs = read_organs(&labels, &scan, &job.path).map(|(organs, warnings)| {
            for w in warnings {
                send(WorkerEvent::Warning(job.id, w.to_string()));
            }
            organs
        });
        send(WorkerEvent::Organs(job.id, organs));
    }
    let Some(model) = model else {
        return send(WorkerEvent::Failed(
            job.id,
            "no model loaded: the scan is shown without APE".into(),
        ));
    };
    let mut progress = |p: f32| send(WorkerEvent::Progress(job.id, p));
    let cache = cache.map_or(CacheUse::Off, CacheUse::ReadWrite);
    let embedded = match embed_cached(cache, model, device, &job.path, &scan.volume, &mut progress)
    {
        Ok(embedded) => embedded,
        Err(e) => return send(WorkerEvent::Failed(job.id, e.to_string())),
    };
    if let Some(w) = embedded.warning {
        send(WorkerEvent::Warning(job.id, w));
    }
    // A fold sends points of the abdomen into the chest: undone before anything searches.
    let (map, fault) = ape::unfolded(embedded.map, &scan);
    let map = Arc::new(map);
    let index = Arc::new(MapIndex::build_in_body(&map, &scan));
    let image = PatchImage::of_scan(&scan).ok().map(Arc::new);
    send(WorkerEvent::Embedded(job.id, map, index, image));
    if let Some(fault) = fault {
        send(WorkerEvent::SiFault(job.id, fault));
    }
}

/// The organs of a scan's label map, and what its reader found odd.
fn read_organs(
    path: &std::path::Path,
    scan: &Scan,
    scan_path: &std::path::Path,
) -> Result<(Arc<Organs>, Vec<ape::validate::InputWarning>), String> {
    let labels = ape::labels::LabelMap::read_for_scan(path, &scan.volume, scan_path)
        .map_err(|e| e.to_string())?;
    Ok((Arc::new(Organs::of(&labels)), labels.warnings.clone()))
}
