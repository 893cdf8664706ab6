//! OpenAI CLIP (ViT image tower and text tower) for CLIP-ES (reference `clip/model.py`).
//!
//! Model code only: configuration, weights loading and model resolution, layers and the two
//! encoders, running on a [`Backend`] (the CPU kernels by default). The CLIP-ES method and the
//! pipeline stages (CAMs, affinity, CRF, evaluation) live in the `clip-es` crate.

pub mod backend;
pub mod bench;
pub mod clip;
pub mod config;
pub mod container;
mod error;
pub mod hub;
pub mod input_size;
pub mod kernels;
pub mod tensors;
pub mod text;
pub mod transformer;
pub mod vision;
pub mod weights;

pub use backend::{Backend, Cpu};
pub use clip::{Clip, ClipError};
pub use config::{ClipConfig, ConfigError, TextConfig, VisionConfig};
pub use container::{Checkpoint, StoredDType, StoredTensor, TensorStore};
pub use hub::{resolve_model, HubError, ModelFiles, Resolver, TokenizerFiles, DEFAULT_MODEL};
pub use input_size::{vit_input_size, InputSizeError, MemoryBudget};
pub use tensors::{ModelError, TakeTensors, Tensor, TensorSource};
pub use text::TextTransformer;
pub use vision::{CachedForward, VisionOptions, VisionOutput, VisionTransformer};
pub use weights::{ClipWeights, WeightsError, WeightsFormat, WeightsSource};
