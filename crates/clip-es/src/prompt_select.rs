//! Sharpness-based prompt selection (paper section 3.2; docs/segment.md "Choosing a prompt
//! template"). The reference repository does not ship this tool; the paper picked
//! "a clean origami {}." as the candidate template with the lowest sharpness.
//!
//! For a template, every image with at least two labels is classified by CLIP over the
//! dataset's classes (softmax of `logit_scale * cos(z, t_c)`, `z` the CAM stage's patch-mean
//! image embedding, `t_c` the template filled with the class's prompt text, as
//! [`crate::gradcam::TextClassifier`] builds it, without background words). With `s` the softmax
//! scores of the image's own labels, the image's sharpness is `var(s) / mean(s)` (population
//! variance); the template's sharpness is the mean over the images. Lower is better: the
//! labels of a multi-label image then share the probability more evenly.

use crate::gradcam::{CosineClassifier, TextClassifier};
use clip_es_model::{ModelError, VisionOptions, VisionTransformer};

/// The image embedding the sharpness uses: the CAM stage's patch-mean embedding of a CLIP
/// input (normalised CHW pixels, sides multiples of the patch size).
pub fn image_embedding(
    model: &VisionTransformer,
    pixels: &[f32],
    height: usize,
    width: usize,
    round_pos_embed_f16: bool,
) -> Result<Vec<f32>, ModelError> {
    let (gh, gw) = model.grid_for(height, width)?;
    let pos =
        round_pos_embed_f16.then(|| crate::gradcam::reference_positional_embedding(model, gh, gw));
    Ok(model
        .encode(
            pixels,
            height,
            width,
            VisionOptions {
                keep_attention_from: model.layers(),
                positional_embedding: pos.as_deref(),
                patch_embeddings: false,
            },
        )?
        .patch_mean_embedding)
}

/// The softmax scores (over all classes of `classifier`, background words left out) of the
/// classes `labels`: the cosine softmax of the CAM stage ([`CosineClassifier`]).
pub fn label_scores(z: &[f32], classifier: &TextClassifier, labels: &[usize]) -> Vec<f32> {
    let p = CosineClassifier::new(
        &classifier.classes,
        classifier.embed_dim,
        classifier.logit_scale,
    )
    .softmax(&clip_es_model::Cpu, z)
    .probabilities;
    labels.iter().map(|&l| p[l]).collect()
}

/// How large the image the ViT sees may be: `--max-side` and `--memory-limit` (bytes; `None`:
/// what the system has available when the image starts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputLimits {
    pub max_side: usize,
    pub memory_limit: Option<u64>,
}

impl Default for InputLimits {
    fn default() -> Self {
        InputLimits {
            max_side: crate::budget::DEFAULT_MAX_SIDE,
            memory_limit: None,
        }
    }
}

impl InputLimits {
    /// A memory limit of 0 would refuse every image (checked before the model loads).
    pub fn validate(&self) -> Result<(), String> {
        clip_es_train::memory::check_memory_limit(self.memory_limit)
    }
}

/// Why an image has no embedding.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error(transparent)]
    Size(#[from] clip_es_model::InputSizeError),
    #[error(transparent)]
    Image(#[from] clip_es_image::ImageError),
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// [`image_embedding`] of a decoded image at the ViT input of every stage
/// ([`clip_es_model::vit_input_size`]: a large photo downscaled to `max_side`, sides rounded
/// up to whole patches), refused before the ViT runs when its forward pass would need more
/// than the memory limit.
pub fn embed_image(
    model: &VisionTransformer,
    image: &clip_es_image::DecodedImage,
    limits: &InputLimits,
    round_pos_embed_f16: bool,
) -> Result<Vec<f32>, EmbedError> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let config = model.config();
    let threads = rayon::current_num_threads();
    let peak = |iw: usize, ih: usize| {
        clip_es_model::input_size::encode_peak_bytes(config, iw, ih, threads, false)
    };
    let limit = limits.memory_limit.or_else(crate::budget::available_bytes);
    let budget = limit.map(|limit| clip_es_model::MemoryBudget {
        limit,
        purpose: "image features",
        peak_bytes: &peak,
    });
    let (iw, ih) =
        clip_es_model::vit_input_size(w, h, config.patch_size, limits.max_side, budget.as_ref())?;
    let input = image.clip_input(ih, iw)?;
    Ok(image_embedding(
        model,
        &input.data,
        ih,
        iw,
        round_pos_embed_f16,
    )?)
}

/// `var(s) / mean(s)` of one image's label scores (population variance, in f64).
pub fn image_sharpness(scores: &[f32]) -> f64 {
    let n = scores.len() as f64;
    let mean = scores.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = scores
        .iter()
        .map(|&v| (v as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    var / mean
}

/// The template's sharpness: the mean of the images' values (NaN for no images).
pub fn mean_sharpness(per_image: &[f64]) -> f64 {
    per_image.iter().sum::<f64>() / per_image.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sharpness_is_variance_over_mean() {
        assert_eq!(image_sharpness(&[0.25, 0.25]), 0.0);
        // mean 0.4, variance ((0.2)^2 + (0.2)^2) / 2 = 0.04 -> 0.1
        assert!((image_sharpness(&[0.6, 0.2]) - 0.1).abs() < 1e-7);
        assert!((mean_sharpness(&[0.1, 0.3]) - 0.2).abs() < 1e-12);
    }

    #[test]
    fn probabilities_use_cosines() {
        let c = TextClassifier {
            embed_dim: 2,
            classes: vec![3.0, 0.0, 0.0, 5.0],
            background: vec![],
            logit_scale: 1.0,
        };
        let p = label_scores(&[2.0, 0.0], &c, &[0, 1]);
        let e = std::f32::consts::E;
        assert!((p[0] - e / (e + 1.0)).abs() < 1e-6);
    }
}
