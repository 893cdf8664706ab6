//! Stage three of CLIP-ES (paper section 4.1 and docs/training.md): a segmentation network
//! trained on the pseudo masks with the unconfident pixels (255) ignored by the loss.
//!
//! Two networks: DeepLab-v2 (ResNet-101, ASPP, multi-scale inputs) exactly as
//! kazuto1011/deeplab-pytorch trains it, and a light decoder on frozen CLIP patch features.
//! Both run on burn 0.22: the `flex` CPU backend by default, Vulkan (burn's wgpu backend) with
//! the `vulkan` feature ([`open_device`], docs/gpu.md).
//!
//! Modules: [`deeplab`] and [`decoder`] (networks, as burn modules), [`layers`] (their conv,
//! frozen batch norm and conv + BN unit), [`params`] (module parameters by checkpoint key,
//! PyTorch and safetensors I/O), [`torchvision`] (torchvision ResNet weights as DeepLab-v2's init),
//! [`loss`], [`resize`] (bilinear resize with its gradient on every backend), [`memory`] (memory available to one image), [`sgd`] (optimizer, poly LR), [`data`] (pairs, checks, augmentation), [`features`]
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
pub mod resize;
pub mod rng;
pub mod sgd;
pub mod torchvision;
pub mod train;

pub use burn::tensor::Device;
pub use error::{Result, TrainError};
pub use model::{Arch, Network};

/// The compute devices `--device` names: `flex` (burn's CPU backend; `cpu` is the same) and
/// `vulkan` (burn's wgpu backend pinned to Vulkan, in builds with the `vulkan` feature).
pub const DEVICE_NAMES: &str = "flex (CPU) or vulkan";

/// The device of a `--device` name (see [`open_device`]).
pub fn device(name: &str) -> Result<Device> {
    open_device(name).map(|(device, _)| device)
}

/// The device of a `--device` name and what it is, e.g. `flex (CPU)` or
/// `vulkan (llvmpipe (LLVM 19.1.7, 256 bits))`: the adapter's own name, so that a run says
/// which hardware it computed on. The Vulkan device is `clip_es_gpu`'s, brought up once per
/// process and shared with the CAM stage ([`clip_es_gpu::BurnDevice::open`]).
///
/// Errors name `--device` and what to build or install: an unknown name, `vulkan` in a build
/// without the `vulkan` feature, and a machine without a Vulkan driver (checked through
/// wgpu's adapter enumeration, which reports no adapter instead of panicking as a first tensor
/// operation would).
pub fn open_device(name: &str) -> Result<(Device, String)> {
    match name {
        "flex" | "cpu" => Ok((Device::flex(), "flex (CPU)".into())),
        "vulkan" => clip_es_gpu::BurnDevice::Vulkan
            .open()
            .map_err(|e| TrainError::Config(e.to_string())),
        other => Err(TrainError::Config(format!(
            "--device `{other}` is not a device: give {DEVICE_NAMES}"
        ))),
    }
}

/// Checks that `--device` names a device this build and machine have, bringing it up (see
/// [`open_device`]), and says what it is.
pub fn check_device(name: &str) -> Result<String> {
    open_device(name).map(|(_, what)| what)
}
