//! OpenAI CLIP (ViT image tower and text tower) for CLIP-ES.
//!
//! Model code only: configuration, weights, layers and the two encoders. The pipeline stages
//! (CAMs, affinity, CRF, evaluation) live in the `clip-es` crate.

pub mod bench;
pub mod config;
pub mod kernels;
pub mod tensors;
pub mod text;
pub mod transformer;
pub mod vision;

pub use config::{ClipConfig, TextConfig, VisionConfig};
pub use tensors::{ModelError, TensorSource};
pub use text::TextTransformer;
pub use vision::{GradCamOutput, VisionOptions, VisionOutput, VisionTransformer};
