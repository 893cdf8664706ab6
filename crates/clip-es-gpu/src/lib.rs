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
    /// refused with what to rebuild.
    pub fn parse(name: &str) -> Result<Self, GpuError> {
        match name {
            "flex" => Ok(BurnDevice::Flex),
            "vulkan" if cfg!(feature = "vulkan") => Ok(BurnDevice::Vulkan),
            "vulkan" => Err(GpuError::NotBuilt(
                "this build has no Vulkan support: build clip-es with `--features vulkan`".into(),
            )),
            other => Err(GpuError::NotBuilt(format!(
                "unknown device `{other}` (flex or vulkan)"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            BurnDevice::Flex => "flex",
            BurnDevice::Vulkan => "vulkan",
        }
    }

    /// burn's device. Vulkan opens burn's default wgpu adapter (on Linux, the Vulkan driver:
    /// a GPU's or Mesa's lavapipe).
    pub fn device(self) -> Result<Device, GpuError> {
        match self {
            BurnDevice::Flex => Ok(Device::flex()),
            #[cfg(feature = "vulkan")]
            BurnDevice::Vulkan => Ok(Device::wgpu(Default::default())),
            #[cfg(not(feature = "vulkan"))]
            BurnDevice::Vulkan => Err(GpuError::NotBuilt(
                "this build has no Vulkan support: build clip-es with `--features vulkan`".into(),
            )),
        }
    }
}

/// Why a burn device could not be used.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("{0}")]
    NotBuilt(String),
    #[error(transparent)]
    Model(#[from] clip_es_model::ModelError),
}
