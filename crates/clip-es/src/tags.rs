//! Label-free tagging for `clip-es segment` without `--classes`: which classes of a vocabulary
//! are in a photo, from CLIP alone. Not in CLIP-ES; a simplified take on the idea of TagCLIP
//! (Lin et al., AAAI 2024: classify every patch locally, refine, re-check classes globally).
//! The rule is described in docs/segment.md ("Label-free tags"):
//!
//! 1. the text classifier is the CAM stage's ([`crate::gradcam::TextClassifier`]: prompt template,
//!    synonyms) over the vocabulary followed by the background words;
//! 2. global score `g_c`: softmax of `logit_scale * cos(z, t_c)` over vocabulary + background,
//!    `z` the patch-mean image embedding the CAM stage uses;
//! 3. local score `l_c`: every patch token's own embedding (`ln_post(x_i) @ proj`) is classified
//!    the same way; `l_c` is the share of patches whose best row is class `c`;
//! 4. score `s_c = (g_c + l_c) / 2`; the tags are the classes with `s_c >= threshold`, best
//!    first, at most `max_tags`; when none passes, the single best class (a photo shows
//!    something). Background words are never tags.

use crate::gradcam::{CosineClassifier, TextClassifier};
use clip_es_model::{ModelError, VisionOptions, VisionTransformer};

/// Tagging settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TagOptions {
    pub threshold: f32,
    pub max_tags: usize,
    /// Round the resized positional embedding to float16 (as the CAM stage does).
    pub round_pos_embed_f16: bool,
}

impl TagOptions {
    /// Checks the ranges: a threshold in [0, 1] (scores are means of probabilities; NaN would
    /// pass no class) and at least one tag.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.threshold) {
            return Err(format!(
                "--tag-threshold must be in [0, 1], got {}",
                self.threshold
            ));
        }
        if self.max_tags == 0 {
            return Err("--max-tags must be at least 1".into());
        }
        Ok(())
    }
}

impl Default for TagOptions {
    fn default() -> Self {
        TagOptions {
            threshold: 0.15,
            max_tags: 5,
            round_pos_embed_f16: true,
        }
    }
}

/// A vocabulary class's scores for one image.
#[derive(Clone, Debug, PartialEq)]
pub struct TagScore {
    /// Row of the classifier (index into the vocabulary).
    pub class: usize,
    pub global: f32,
    pub local: f32,
    pub score: f32,
}

/// Scores of every vocabulary class (in vocabulary order) and the chosen tags (best first).
#[derive(Clone, Debug, PartialEq)]
pub struct Tags {
    pub scores: Vec<TagScore>,
    pub chosen: Vec<usize>,
}

/// The rule of the module header applied to scores already computed.
pub fn choose(global: &[f32], local: &[f32], opts: &TagOptions) -> Tags {
    let scores: Vec<TagScore> = global
        .iter()
        .zip(local)
        .enumerate()
        .map(|(c, (&g, &l))| TagScore {
            class: c,
            global: g,
            local: l,
            score: (g + l) / 2.0,
        })
        .collect();
    let mut order: Vec<usize> = (0..scores.len()).collect();
    // Best first; ties keep vocabulary order.
    order.sort_by(|&a, &b| scores[b].score.total_cmp(&scores[a].score).then(a.cmp(&b)));
    let mut chosen: Vec<usize> = order
        .iter()
        .copied()
        .filter(|&c| scores[c].score >= opts.threshold)
        .take(opts.max_tags.max(1))
        .collect();
    if chosen.is_empty() {
        chosen.extend(order.first());
    }
    Tags { scores, chosen }
}

/// Tags one image (normalised CHW pixels, sides multiples of the patch size) with the
/// vocabulary of `classifier` (its `classes` rows; its `background` rows compete but are never
/// tags).
pub fn tag_image(
    model: &VisionTransformer,
    classifier: &TextClassifier,
    pixels: &[f32],
    height: usize,
    width: usize,
    opts: &TagOptions,
) -> Result<Tags, ModelError> {
    let e = classifier.embed_dim;
    let k = classifier.classes.len() / e;
    let (gh, gw) = model.grid_for(height, width)?;
    let pos = opts
        .round_pos_embed_f16
        .then(|| crate::gradcam::reference_positional_embedding(model, gh, gw));
    let out = model.encode(
        pixels,
        height,
        width,
        VisionOptions {
            keep_attention_from: model.layers(),
            positional_embedding: pos.as_deref(),
            patch_embeddings: true,
        },
    )?;
    let mut rows = classifier.classes.clone();
    rows.extend_from_slice(&classifier.background);
    let cosine = CosineClassifier::new(&rows, e, classifier.logit_scale);
    let backend = model.backend();
    let global = cosine
        .softmax(backend, &out.patch_mean_embedding)
        .probabilities;
    let patches = out.patch_embeddings.len() / e;
    let mut votes = vec![0usize; rows.len() / e];
    for z in out.patch_embeddings.chunks_exact(e) {
        let p = cosine.softmax(backend, z).probabilities;
        let best = (0..p.len())
            .max_by(|&a, &b| p[a].total_cmp(&p[b]).then(b.cmp(&a)))
            .unwrap_or(0);
        votes[best] += 1;
    }
    let local: Vec<f32> = votes[..k]
        .iter()
        .map(|&v| v as f32 / patches.max(1) as f32)
        .collect();
    Ok(choose(&global[..k], &local, opts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_keeps_passing_classes_best_first_and_never_nothing() {
        let opts = TagOptions {
            threshold: 0.2,
            max_tags: 2,
            ..TagOptions::default()
        };
        let t = choose(&[0.5, 0.1, 0.3, 0.05], &[0.1, 0.5, 0.2, 0.0], &opts);
        // scores 0.3, 0.3, 0.25, 0.025: the tie keeps vocabulary order, max 2 tags.
        assert_eq!(t.chosen, vec![0, 1]);
        assert!((t.scores[2].score - 0.25).abs() < 1e-6);
        let t = choose(&[0.1, 0.12], &[0.0, 0.05], &opts);
        assert_eq!(t.chosen, vec![1]);
        let all = choose(
            &[0.4, 0.4, 0.4],
            &[0.4, 0.4, 0.4],
            &TagOptions {
                max_tags: 10,
                ..opts
            },
        );
        assert_eq!(all.chosen, vec![0, 1, 2]);
    }

    #[test]
    fn a_blank_patch_gets_uniform_scores_not_nan() {
        let rows = CosineClassifier::new(&[1.0, 0.0, 0.0, 1.0, 1.0, 1.0], 2, 100.0);
        let p = rows.softmax(&clip_es_model::Cpu, &[0.0, 0.0]).probabilities;
        assert!(p.iter().all(|v| (v - 1.0 / 3.0).abs() < 1e-6), "{p:?}");
    }
}
