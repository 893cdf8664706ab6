//! CLIP ViT for CLIP-ES: model sizes, weights loading and model resolution (clip/model.py).

pub mod config;
pub mod hub;
pub mod weights;

pub use config::{ClipConfig, ConfigError, TextConfig, VisionConfig};
pub use hub::{resolve_model, HubError, ModelFiles, Resolver, TokenizerFiles, DEFAULT_MODEL};
pub use weights::{ClipWeights, WeightsError, WeightsFormat, WeightsSource};
