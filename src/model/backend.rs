//! Choosing where the network runs: wgpu on a real GPU, else burn's CPU backend (`flex`).

use std::sync::OnceLock;

use burn::tensor::Device;
pub use burn::tensor::wgpu::WgpuSetup;

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// wgpu when it finds a hardware adapter; the CPU backend otherwise (also when the only
    /// adapter is a software one such as Mesa's lavapipe, which is far slower than flex).
    #[default]
    Auto,
    /// wgpu on whatever adapter it finds, software ones included.
    Wgpu,
    /// burn's `flex` CPU backend.
    Cpu,
}

impl std::str::FromStr for BackendChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "wgpu" | "gpu" => Ok(Self::Wgpu),
            "cpu" | "flex" => Ok(Self::Cpu),
            other => Err(format!("unknown backend {other:?}: use auto, wgpu or cpu")),
        }
    }
}

/// A device the network can run on, and what it is, in words.
#[derive(Debug, Clone)]
pub struct ComputeDevice {
    pub device: Device,
    pub is_wgpu: bool,
    /// E.g. "wgpu: NVIDIA H100 (Vulkan, discrete GPU)" or "cpu (2 threads)".
    pub description: String,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("no wgpu adapter: {0}")]
pub struct NoAdapter(pub String);

/// wgpu's runtime can be set up once per process: keep what it found.
fn wgpu_runtime() -> &'static Result<(Device, String, bool), String> {
    static RUNTIME: OnceLock<Result<(Device, String, bool), String>> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        // Adapter discovery can panic deep in a driver; a missing GPU must not take ape down.
        let attempt = std::panic::catch_unwind(|| Device::wgpu_options().init_with_setup());
        match attempt {
            Ok(Ok((device, setup))) => {
                let info = setup.adapter.get_info();
                let software = info.device_type == burn::tensor::wgpu::wgpu::DeviceType::Cpu;
                let text = format!(
                    "wgpu: {} ({:?}, {:?}{})",
                    info.name,
                    info.backend,
                    info.device_type,
                    if software { ", software" } else { "" }
                );
                Ok((device, text, software))
            }
            Ok(Err(e)) if e.to_string().contains("already initialized") => {
                default_wgpu_device().ok_or_else(|| e.to_string())
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the wgpu runtime panicked while looking for an adapter".to_owned()),
        }
    })
}

/// burn's default wgpu device, when something in this process set wgpu's runtime up before ape
/// asked (burn's optimiser loading does: `--resume` materialises AdamW's state on
/// `Device::default()`, which is wgpu when it is compiled in). Its adapter cannot be asked what
/// it is, so it counts as a software one: `--backend auto` keeps the CPU; `--backend wgpu` gets it.
fn default_wgpu_device() -> Option<(Device, String, bool)> {
    std::panic::catch_unwind(|| {
        let device = Device::wgpu(burn::tensor::DeviceKind::DefaultDevice);
        let probe = burn::tensor::Tensor::<1>::ones([4], &device).sum();
        probe.try_into_data().ok()?;
        let text = "wgpu: the default adapter (set up earlier in this process)".to_owned();
        Some((device, text, true))
    })
    .ok()
    .flatten()
}

/// The CPU device.
pub fn cpu() -> ComputeDevice {
    keep_freed_memory();
    ComputeDevice {
        device: Device::flex(),
        is_wgpu: false,
        // burn's flex backend; inference on it runs `cpu_net` (src/model/cpu_net.rs).
        description: format!("cpu ({} threads)", rayon::current_num_threads()),
    }
}

/// Tells glibc's allocator to keep freed blocks of up to 32 MiB for reuse, once per process.
///
/// A training step on the CPU allocates and frees hundreds of tensors of 1–30 MB. By default
/// glibc serves blocks past its (adaptive) threshold with `mmap` and returns them with `munmap`,
/// so every new tensor starts on fresh pages: page faults and zeroing by the kernel, 5 % of a
/// step's profile. With the heap keeping them the 8-pair bench step went from 2.48 to 2.76
/// steps/s (medians of four alternations; 4 pairs level), Session 18 of training/README.md.
/// Costs a few hundred MB of resident memory that the process would soon ask for again anyway.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            const MMAP_THRESHOLD: libc::c_int = 32 << 20;
            const TRIM_THRESHOLD: libc::c_int = 1 << 30;
            const TOP_PAD: libc::c_int = 256 << 20;
            #[allow(unsafe_code)]
            // SAFETY: mallopt only sets allocator parameters; it is called before the CPU
            // backend's first tensor and is safe at any time in glibc.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
                libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
                libc::mallopt(libc::M_TOP_PAD, TOP_PAD);
            }
        });
    }
}

/// The wgpu device, if an adapter exists.
pub fn wgpu() -> Result<ComputeDevice, NoAdapter> {
    match wgpu_runtime() {
        Ok((device, description, _)) => Ok(ComputeDevice {
            device: device.clone(),
            is_wgpu: true,
            description: description.clone(),
        }),
        Err(e) => Err(NoAdapter(e.clone())),
    }
}

/// burn on a wgpu device the application already has (the viewer's renderer), so that the
/// network and the views share one GPU and one queue. `None` under `Auto` when the adapter is a
/// software one (flex is faster there), or when burn's wgpu runtime cannot take the device
/// (it can be set up once per process).
pub fn shared_wgpu(setup: WgpuSetup, choice: BackendChoice) -> Option<ComputeDevice> {
    if choice == BackendChoice::Cpu {
        return None;
    }
    let info = setup.adapter.get_info();
    let software = info.device_type == burn::tensor::wgpu::wgpu::DeviceType::Cpu;
    if choice == BackendChoice::Auto && software {
        return None;
    }
    // The setup is moved in and dropped if init panics: nothing observes a broken state.
    let device = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Device::wgpu_options().setup(setup).init()
    }))
    .ok()?
    .ok()?;
    // A device made with too few limits or features for burn's kernels fails at the first
    // execution: try one before trusting it.
    let probe = burn::tensor::Tensor::<2>::ones([8, 8], &device)
        .matmul(burn::tensor::Tensor::<2>::ones([8, 8], &device));
    probe.try_into_data().ok()?;
    Some(ComputeDevice {
        device,
        is_wgpu: true,
        description: format!(
            "wgpu, shared with the viewer: {} ({:?}, {:?})",
            info.name, info.backend, info.device_type
        ),
    })
}

/// What the viewer's renderer asks of the GPU: every limit and feature the adapter has, so that
/// burn's compute kernels can run on the same device (eframe's default asks for the minimum).
pub fn device_descriptor(
    adapter: &burn::tensor::wgpu::wgpu::Adapter,
) -> burn::tensor::wgpu::wgpu::DeviceDescriptor<'static> {
    use burn::tensor::wgpu::wgpu;
    wgpu::DeviceDescriptor {
        label: Some("ape renderer and network"),
        required_features: adapter.features() - wgpu::Features::MAPPABLE_PRIMARY_BUFFERS,
        required_limits: adapter.limits(),
        ..Default::default()
    }
}

/// Resolves a choice to a device.
pub fn select(choice: BackendChoice) -> Result<ComputeDevice, NoAdapter> {
    match choice {
        BackendChoice::Cpu => Ok(cpu()),
        BackendChoice::Wgpu => wgpu(),
        BackendChoice::Auto => match wgpu_runtime() {
            Ok((_, _, false)) => wgpu(),
            _ => Ok(cpu()),
        },
    }
}

/// Runs `work` on one of rayon's threads: here if this already is one, else handed to the pool
/// once, the caller waiting for the whole of it.
///
/// CPU work made of many parallel regions (a training step opens hundreds: burn flex's, gemm's,
/// ape's kernels) should be entered this way. A region opened from a thread outside the pool is
/// handed over and its caller sleeps until it is done, a sleep and a wake-up per region; a pool
/// thread takes part in the work instead. On the 2-core bench machine this made a training step
/// 12–19 % faster (`training/README.md`, Session 16).
pub fn on_cpu_pool<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        work()
    } else {
        rayon::scope(|_| work())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_pool_work_runs_on_a_pool_thread_from_outside_and_inside_the_pool() {
        // A test thread is outside rayon's pool: the work is handed over once.
        assert_eq!(rayon::current_thread_index(), None);
        let (index, value) = on_cpu_pool(|| (rayon::current_thread_index(), 6 * 7));
        assert!(index.is_some());
        assert_eq!(value, 42);
        // Inside the pool it runs where it is called.
        let (outer, inner) = on_cpu_pool(|| {
            let outer = rayon::current_thread_index();
            (outer, on_cpu_pool(rayon::current_thread_index))
        });
        assert_eq!(outer, inner);
    }
}
