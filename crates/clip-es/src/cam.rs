//! Per-image CAMs of CLIP-ES (paper sections 3.2-3.3; reference `generate_cams_voc12.py`
//! `perform`, `pytorch_grad_cam/base_cam.py`): Softmax-GradCAM over [the image's labels +
//! background words], then class-aware attention affinity, resized to the original image.

use crate::affinity;
use clip_es_image::ClipInput;
use clip_es_model::{VisionOptions, VisionTransformer};

/// How many of the last blocks' attention maps the affinity averages (the paper's 8;
/// docs/algorithm.md, "Class-aware attention affinity").
pub const ATTENTION_BLOCKS: usize = 8;

/// The prompt template of the paper (the one with the lowest "sharpness").
pub const DEFAULT_TEMPLATE: &str = "a clean origami {}.";
use std::time::Instant;

/// The text classifier: normalised embeddings of every class and background word.
#[derive(Clone, Debug)]
pub struct TextClassifier {
    pub embed_dim: usize,
    /// classes x embed_dim.
    pub classes: Vec<f32>,
    /// background words x embed_dim.
    pub background: Vec<f32>,
    /// `exp(logit_scale)` of the model.
    pub logit_scale: f32,
}

impl TextClassifier {
    /// The rows the softmax runs over for an image: its labels' rows, then the background.
    pub fn rows_for(&self, labels: &[usize]) -> Vec<f32> {
        let e = self.embed_dim;
        let mut rows = Vec::with_capacity((labels.len() * e) + self.background.len());
        for &l in labels {
            rows.extend_from_slice(&self.classes[l * e..(l + 1) * e]);
        }
        rows.extend_from_slice(&self.background);
        rows
    }
}

/// CAM settings.
#[derive(Clone, Copy, Debug)]
pub struct CamOptions {
    /// CAA box threshold (0.4 VOC, 0.7 COCO).
    pub box_threshold: f64,
    /// How many of the last blocks' attention CAA averages ([`ATTENTION_BLOCKS`]).
    pub attention_blocks: usize,
    /// Round the resized positional embedding to float16 as the reference does.
    pub round_pos_embed_f16: bool,
    /// Also return the unrefined GradCAM maps at the original size (`highres`).
    pub unrefined: bool,
}

impl Default for CamOptions {
    fn default() -> Self {
        CamOptions {
            box_threshold: 0.4,
            attention_blocks: ATTENTION_BLOCKS,
            round_pos_embed_f16: true,
            unrefined: false,
        }
    }
}

/// The CAMs of one image at its original size.
#[derive(Clone, Debug)]
pub struct ImageCams {
    pub height: usize,
    pub width: usize,
    /// CAA-refined maps, labels x height x width, each in [0, 1].
    pub refined: Vec<f32>,
    /// Unrefined GradCAM maps (if asked), labels x height x width.
    pub unrefined: Option<Vec<f32>>,
    /// Softmax probabilities of [labels + background words].
    pub probabilities: Vec<f32>,
}

/// Seconds spent in each stage of one image.
#[derive(Clone, Copy, Debug, Default)]
pub struct StageTimes {
    /// Resizing the image to the CLIP input (filled in by `Cams::image`).
    pub input: f64,
    /// The image tower up to the softmax.
    pub forward: f64,
    /// The GradCAM backward passes through the last block.
    pub backward: f64,
    pub affinity: f64,
    pub resize: f64,
}

/// The GradCAM map of one target from the activation A (patches x width) and the channel
/// weights: `ReLU(A w)`, min-max normalised twice as the reference does.
pub fn gradcam_map(activation: &[f32], weights: &[f32]) -> Vec<f32> {
    let d = weights.len();
    let mut cam: Vec<f32> = activation
        .chunks_exact(d)
        .map(|a| {
            a.iter()
                .zip(weights)
                .map(|(x, w)| x * w)
                .sum::<f32>()
                .max(0.0)
        })
        .collect();
    affinity::min_max_normalize(&mut cam);
    affinity::min_max_normalize(&mut cam);
    cam
}

/// Computes the CAMs of one image from its CLIP input (sides multiples of the patch size) for
/// its `labels` (rows of the classifier); the maps are resized to `original` = (height, width).
pub fn image_cams(
    model: &VisionTransformer,
    classifier: &TextClassifier,
    input: &ClipInput,
    original: (usize, usize),
    labels: &[usize],
    opts: &CamOptions,
) -> Result<(ImageCams, StageTimes), clip_es_model::ModelError> {
    let (orig_h, orig_w) = original;
    let mut times = StageTimes::default();
    let layers = model.config.layers;
    let vopts = VisionOptions {
        keep_attention_from: layers.saturating_sub(opts.attention_blocks),
        round_pos_embed_f16: opts.round_pos_embed_f16,
    };
    let rows = classifier.rows_for(labels);
    let targets: Vec<usize> = (0..labels.len()).collect();
    let g = model.softmax_gradcam(
        &input.data,
        input.height,
        input.width,
        &rows,
        classifier.logit_scale,
        &targets,
        vopts,
    )?;
    times.forward = g.forward_seconds;
    times.backward = g.backward_seconds;

    let t = Instant::now();
    let (gh, gw) = (g.grid_h, g.grid_w);
    let tokens = gh * gw + 1;
    let affinity =
        affinity::affinity_from_attention(&affinity::mean_patch_attention(&g.attention, tokens));
    let cams: Vec<Vec<f32>> = g
        .channel_weights
        .iter()
        .map(|w| gradcam_map(&g.activation, w))
        .collect();
    let refined_grid: Vec<Vec<f32>> = cams
        .iter()
        .map(|cam| {
            let mask = affinity::box_mask(cam, gh, gw, opts.box_threshold);
            affinity::refine(&affinity, cam, &mask)
        })
        .collect();
    times.affinity = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let upsample = |maps: &[Vec<f32>]| -> Vec<f32> {
        let mut out = Vec::with_capacity(maps.len() * orig_h * orig_w);
        for m in maps {
            out.extend(clip_es_image::resize_bilinear_f32(
                m, gw, gh, orig_w, orig_h,
            ));
        }
        out
    };
    let refined = upsample(&refined_grid);
    let unrefined = opts.unrefined.then(|| upsample(&cams));
    times.resize = t.elapsed().as_secs_f64();
    Ok((
        ImageCams {
            height: orig_h,
            width: orig_w,
            refined,
            unrefined,
            probabilities: g.probabilities,
        },
        times,
    ))
}

impl TextClassifier {
    /// Builds the classifier as the reference's `zeroshot_classifier`: for each name, every
    /// template filled in, encoded, L2-normalised, averaged over templates, normalised again.
    pub fn build(
        clip: &clip_es_model::Clip,
        class_names: &[String],
        background: &[String],
        templates: &[String],
    ) -> Result<Self, clip_es_model::ClipError> {
        let e = clip.config.embed_dim;
        let embed = |names: &[String]| -> Result<Vec<f32>, clip_es_model::ClipError> {
            let texts: Vec<String> = names
                .iter()
                .flat_map(|n| templates.iter().map(move |t| t.replace("{}", n)))
                .collect();
            let feats = if texts.is_empty() {
                vec![]
            } else {
                clip.encode_texts(&texts)?
            };
            let mut out = Vec::with_capacity(names.len() * e);
            for group in feats.chunks(templates.len()) {
                let mut mean = vec![0f32; e];
                for f in group {
                    let n = f.iter().map(|v| v * v).sum::<f32>().sqrt();
                    for (m, v) in mean.iter_mut().zip(f) {
                        *m += v / n;
                    }
                }
                let k = group.len() as f32;
                mean.iter_mut().for_each(|m| *m /= k);
                let n = mean.iter().map(|v| v * v).sum::<f32>().sqrt();
                out.extend(mean.iter().map(|v| v / n));
            }
            Ok(out)
        };
        Ok(TextClassifier {
            embed_dim: e,
            classes: embed(class_names)?,
            background: embed(background)?,
            logit_scale: clip.logit_scale,
        })
    }
}
