//! CLIP's image tower as burn 0.22 modules, for the CLIP-ES CAMs on burn's devices (`flex`, the
//! pure-Rust CPU backend, always; a Vulkan GPU through burn's `wgpu` backend with the `vulkan`
//! feature). docs/gpu.md, "CAMs on the GPU", says what runs where.
//!
//! The tower ([`VisionTower`]) mirrors `clip_es_model::VisionTransformer` (reference
//! `clip/model.py` `VisionTransformer`, `ResidualAttentionBlock`) and is loaded from the same
//! weights (any [`clip_es_model::TensorSource`]: a `ClipWeights` read from HF, state-dict or
//! TorchScript checkpoints). [`VisionTower::softmax_gradcam`] runs the Softmax-GradCAM pass of
//! `clip_es::gradcam::softmax_gradcam` (docs/algorithm.md, "Softmax-GradCAM") with the tensors on
//! the device: the forward pass, the attention maps CAA needs, and the gradient of each
//! target's softmax probability with respect to the last block's `ln_1` output by burn's
//! autodiff. Only the results (activation, channel weights, probabilities, attention maps)
//! come back to the host.

pub mod vision;

pub use burn::tensor::Device;
pub use vision::{GradCamParts, GradCamRequest, VisionTower};

/// A burn device the CAMs can run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BurnDevice {
    /// burn's pure-Rust CPU backend (always built).
    Flex,
    /// A Vulkan device through burn's `wgpu` backend (the `vulkan` cargo feature).
    Vulkan,
}

impl BurnDevice {
    /// The names `--device` accepts for burn's devices.
    pub const NAMES: &'static [&'static str] = &["flex", "vulkan"];

    /// The device of a name (`flex` or `vulkan`); `vulkan` in a build without the feature is
    /// refused with what to rebuild. The errors name `--device` and the value.
    pub fn parse(name: &str) -> Result<Self, GpuError> {
        match name {
            "flex" => Ok(BurnDevice::Flex),
            "vulkan" if cfg!(feature = "vulkan") => Ok(BurnDevice::Vulkan),
            "vulkan" => Err(GpuError::NotBuilt(NOT_BUILT.into())),
            other => Err(GpuError::NotBuilt(format!(
                "--device {other}: unknown device `{other}` (flex or vulkan)"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            BurnDevice::Flex => "flex",
            BurnDevice::Vulkan => "vulkan",
        }
    }

    /// burn's device (see [`BurnDevice::open`]).
    pub fn device(self) -> Result<Device, GpuError> {
        self.open().map(|(device, _)| device)
    }

    /// burn's device and what it is: `flex (CPU)`, or for Vulkan the adapter's own name, e.g.
    /// `vulkan (NVIDIA H100 80GB HBM3)` or `vulkan (llvmpipe (LLVM 19.1.7, 256 bits))`, so that
    /// a run can say which hardware it computes on. The Vulkan device is brought up once per
    /// process (burn keeps one runtime per adapter; the CAMs and stage three share it) and the
    /// outcome, device or error, is kept. A machine without a Vulkan driver gets an error that
    /// names `--device vulkan` and what to install (wgpu's adapter enumeration reports it,
    /// where a first tensor operation on a default device would panic).
    pub fn open(self) -> Result<(Device, String), GpuError> {
        match self {
            BurnDevice::Flex => Ok((Device::flex(), "flex (CPU)".into())),
            BurnDevice::Vulkan => vulkan::open().map_err(GpuError::NotBuilt),
        }
    }
}

#[cfg(feature = "vulkan")]
mod vulkan {
    use super::Device;
    use burn::tensor::wgpu::WgpuBackend;
    use std::sync::OnceLock;

    static VULKAN: OnceLock<Result<(Device, String), String>> = OnceLock::new();

    pub(super) fn open() -> Result<(Device, String), String> {
        VULKAN
            .get_or_init(|| {
                let (device, setup) = Device::wgpu_options()
                    .graphics_api(WgpuBackend::Vulkan)
                    .init_with_setup()
                    .map_err(|e| {
                        format!(
                            "--device vulkan: no Vulkan device could be opened ({e}): install a \
                             Vulkan driver (on an NVIDIA machine the NVIDIA driver with its \
                             Vulkan ICD; otherwise Mesa's mesa-vulkan-drivers, version 25 or \
                             later, and libvulkan1), or use another --device (docs/gpu.md)"
                        )
                    })?;
                let info = setup.adapter.get_info();
                Ok((device, format!("vulkan ({})", info.name)))
            })
            .clone()
    }
}

#[cfg(not(feature = "vulkan"))]
mod vulkan {
    use super::Device;

    pub(super) fn open() -> Result<(Device, String), String> {
        Err(super::NOT_BUILT.into())
    }
}

/// What `--device vulkan` says in a build without the `vulkan` feature.
pub const NOT_BUILT: &str = "--device vulkan: this build has no GPU support: build clip-es with \
    the `vulkan` feature (`cargo install --path crates/clip-es --features vulkan`, docs/gpu.md), \
    or use another --device";

/// What a failed device computation says to the user: one line out of burn's report (which
/// lists every skipped kernel), its root cause (the last `Caused by`), e.g. `can't allocate
/// buffer of size: N`, and the `remedy`. A GPU reports such failures (a buffer larger than it
/// allows, its memory exhausted) when a result is read (`try_into_data`).
pub fn device_failure(report: &str, remedy: &str) -> String {
    let cause = report
        .lines()
        .map(str::trim)
        .rfind(|l| {
            !l.is_empty()
                && !l.starts_with("skipped")
                && !l.starts_with("Caused by")
                && !l.starts_with('(')
                && !l.contains("backtrace")
                && !l.starts_with("Asked at")
        })
        .unwrap_or("unknown failure");
    let cause: String = cause.chars().take(200).collect();
    format!(
        "the device could not compute it ({cause}); it may need more device memory or larger \
         buffers than the device allows: {remedy}"
    )
}

/// Why a burn device could not be used.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("{0}")]
    NotBuilt(String),
    #[error(transparent)]
    Model(#[from] clip_es_model::ModelError),
}

#[cfg(test)]
mod tests {
    use super::device_failure;

    /// burn's report of a failed read: the skipped kernels are dropped, the root cause kept.
    #[test]
    fn device_failure_keeps_the_root_cause() {
        let report = "An error happened during execution\nCaused by:\n  Several failures at once\n\
            Caused by:\n  The bytes were never written (failure #159, still claiming 22 buffer(s))\n  \
            skipped `KernelBinop`: it needed memory ManagedMemoryId { value: 1006 }\n  \
            (443 older skip record(s) were dropped)\nCaused by:\n  An IO error happened\n\
            Caused by:\n  can't allocate buffer of size: 151093280\nNo backtrace available\n\
            Asked at:\nNo backtrace available";
        let m = device_failure(report, "lower --max-side");
        assert!(
            m.contains("(can't allocate buffer of size: 151093280)") && m.contains("--max-side"),
            "{m}"
        );
        assert!(!m.contains("skipped") && !m.contains('\n'), "{m}");
        assert!(device_failure("", "").contains("unknown failure"));
    }
}
