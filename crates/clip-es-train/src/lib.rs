//! Stage three of CLIP-ES (paper section 4.1 and docs/training.md): a segmentation network
//! trained on the pseudo masks with the unconfident pixels (255) ignored by the loss.
//!
//! Two networks: DeepLab-v2 (ResNet-101, ASPP, multi-scale inputs) exactly as
//! kazuto1011/deeplab-pytorch trains it, and a light decoder on frozen CLIP patch features.
//! Both run on burn 0.22 (`flex` CPU backend by default; `cuda` and `wgpu` features opt in).
//!
//! Modules: [`deeplab`] and [`decoder`] (networks, as burn modules), [`layers`] (their conv,
//! frozen batch norm and conv + BN unit), [`params`] (module parameters by checkpoint key,
//! PyTorch and safetensors I/O), [`torchvision`] (torchvision ResNet weights as DeepLab-v2's init),
//! [`loss`], [`memory`] (memory available to one image), [`sgd`] (optimizer, poly LR), [`data`] (pairs, checks, augmentation), [`features`]
//! (CLIP feature cache), [`train`] (the loop), [`predict`].

pub mod data;
pub mod decoder;
pub mod deeplab;
pub mod error;
pub mod features;
pub mod layers;
pub mod loss;
pub mod memory;
pub mod model;
pub mod params;
pub mod plot;
pub mod predict;
pub mod rng;
pub mod sgd;
pub mod torchvision;
pub mod train;

pub use burn::tensor::Device;
pub use error::{Result, TrainError};
pub use model::{Arch, Model};

/// The device of a backend name: `flex` (CPU, always built), `cuda` / `wgpu` when the crate was
/// built with those features.
pub fn device(name: &str) -> Result<Device> {
    match name {
        "flex" | "cpu" => Ok(Device::flex()),
        #[cfg(feature = "cuda")]
        "cuda" => Ok(Device::cuda(0)),
        #[cfg(feature = "wgpu")]
        "wgpu" => Ok(Device::wgpu(Default::default())),
        other => Err(TrainError::Config(format!(
            "device `{other}` is not available in this build (flex always; cuda/wgpu need the crate features of the same name)"
        ))),
    }
}
