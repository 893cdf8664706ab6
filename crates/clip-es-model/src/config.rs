//! PROVISIONAL (lead's branch): replaced by the weights helper's config.rs on merge.
#[derive(Clone, Debug, PartialEq)]
pub struct VisionConfig {
    pub width: usize,
    pub layers: usize,
    pub heads: usize,
    pub patch_size: usize,
    pub grid: usize,
    pub image_size: usize,
}
#[derive(Clone, Debug, PartialEq)]
pub struct TextConfig {
    pub width: usize,
    pub layers: usize,
    pub heads: usize,
    pub context_length: usize,
    pub vocab_size: usize,
}
#[derive(Clone, Debug, PartialEq)]
pub struct ClipConfig {
    pub vision: VisionConfig,
    pub text: TextConfig,
    pub embed_dim: usize,
    pub layer_norm_eps: f64,
}
