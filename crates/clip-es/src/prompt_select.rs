//! Sharpness-based prompt selection (paper section 3.2; docs/segment.md "Choosing a prompt
//! template"). The reference repository does not ship this tool; the paper picked
//! "a clean origami {}." as the candidate template with the lowest sharpness.
//!
//! For a template, every image with at least two labels is classified by CLIP over the
//! dataset's classes (softmax of `logit_scale * cos(z, t_c)`, `z` the CAM stage's patch-mean
//! image embedding, `t_c` the template filled with the class's prompt text, as
//! [`crate::cam::TextClassifier`] builds it, without background words). With `s` the softmax
//! scores of the image's own labels, the image's sharpness is `var(s) / mean(s)` (population
//! variance); the template's sharpness is the mean over the images. Lower is better: the
//! labels of a multi-label image then share the probability more evenly.

use crate::cam::TextClassifier;
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
        round_pos_embed_f16.then(|| crate::cam::reference_positional_embedding(model, gh, gw));
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
/// classes `labels`.
pub fn label_scores(z: &[f32], classifier: &TextClassifier, labels: &[usize]) -> Vec<f32> {
    let p = class_probabilities(
        z,
        &classifier.classes,
        classifier.embed_dim,
        classifier.logit_scale,
    );
    labels.iter().map(|&l| p[l]).collect()
}

/// Softmax of `logit_scale * cos(z, row)` over the rows (each of `e` values).
pub fn class_probabilities(z: &[f32], rows: &[f32], e: usize, logit_scale: f32) -> Vec<f32> {
    let zn = z.iter().map(|v| v * v).sum::<f32>().sqrt();
    let mut p: Vec<f32> = rows
        .chunks_exact(e)
        .map(|t| {
            let tn = t.iter().map(|v| v * v).sum::<f32>().sqrt();
            logit_scale * t.iter().zip(z).map(|(a, b)| a * b).sum::<f32>() / (zn * tn)
        })
        .collect();
    let mx = p.iter().cloned().fold(f32::MIN, f32::max);
    let mut sum = 0f32;
    for v in p.iter_mut() {
        *v = (*v - mx).exp();
        sum += *v;
    }
    p.iter_mut().for_each(|v| *v /= sum);
    p
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
        let p = class_probabilities(&[2.0, 0.0], &[3.0, 0.0, 0.0, 5.0], 2, 1.0);
        let e = std::f32::consts::E;
        assert!((p[0] - e / (e + 1.0)).abs() < 1e-6);
    }
}
