//! The CLIP-ES method on one image (paper sections 3.2-3.3; docs/algorithm.md,
//! "Softmax-GradCAM" and "Class-aware attention affinity"; reference `generate_cams_voc12.py`
//! lines 146-197, `clip/model.py:400-420`, `pytorch_grad_cam/base_cam.py:62-154`):
//! Softmax-GradCAM over [the image's labels + background words] with the text classifier of
//! `zeroshot_classifier` (`generate_cams_voc12.py:48-60`), then class-aware attention affinity,
//! resized to the original image. The model crate supplies the forward pass with cached
//! activations and the backward pass from a gradient on the pooled embedding; the logits, the
//! softmax gradient, the targets and the float16 positional-embedding quirk are the method's.
//! On a [`Tower`] with a burn tower (`clip_es_gpu`, docs/gpu.md) the same GradCAM pass runs on
//! a burn device, gradients by autodiff; CAA and the resize stay here on the CPU.

use crate::affinity;
use clip_es_image::ClipInput;
use clip_es_model::{ModelError, VisionOptions, VisionTransformer};

/// How many of the last blocks' attention maps the affinity averages (the paper's 8;
/// docs/algorithm.md, "Class-aware attention affinity").
pub const ATTENTION_BLOCKS: usize = 8;

/// The prompt template of the paper (the one with the lowest "sharpness").
pub const DEFAULT_TEMPLATE: &str = "a clean origami {}.";
use std::time::Instant;

/// The image tower the CAMs run on: the CPU kernels of `clip_es_model`, or the same tower as
/// burn modules on a burn device (`clip_es_gpu`; docs/gpu.md, "CAMs on the GPU"). The CPU
/// tower is always there: its positional embedding, patch size and CPU backend serve the
/// method's host-side steps (the float16 positional embedding, CAA, the resize) on both.
#[derive(Clone, Copy, Debug)]
pub struct Tower<'a> {
    pub cpu: &'a VisionTransformer,
    /// When set, the GradCAM pass (forward, attention maps, gradients) runs here.
    pub burn: Option<&'a clip_es_gpu::VisionTower>,
}

impl<'a> From<&'a VisionTransformer> for Tower<'a> {
    fn from(cpu: &'a VisionTransformer) -> Self {
        Tower { cpu, burn: None }
    }
}

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

/// The Softmax-GradCAM ingredients for one image and several target classes.
#[derive(Clone, Debug)]
pub struct GradCamOutput {
    pub grid_h: usize,
    pub grid_w: usize,
    /// The last block's `ln_1` output at the patch tokens (patches x width): the activation A.
    pub activation: Vec<f32>,
    /// For each target: the gradient of its softmax probability with respect to A, averaged
    /// over the patch positions (width values): the GradCAM channel weights.
    pub channel_weights: Vec<Vec<f32>>,
    /// Softmax over all given classes.
    pub probabilities: Vec<f32>,
    /// Head-averaged attention of the kept blocks, the last one from the gradient pass
    /// (tokens x tokens each).
    pub attention: Vec<Vec<f32>>,
    /// Seconds spent in the forward pass and in the backward passes.
    pub forward_seconds: f64,
    pub backward_seconds: f64,
}

/// The positional embedding CLIP-ES adds: the pretrained one resized to the grid, then rounded
/// to float16 except at the class position, as the reference's `upsample_pos_emb` returns a
/// half parameter (docs/algorithm.md, "Image side", step 5; `clip/model.py:24`).
pub fn reference_positional_embedding(
    model: &VisionTransformer,
    grid_h: usize,
    grid_w: usize,
) -> Vec<f32> {
    let mut pos = model.positional_embedding_for(grid_h, grid_w);
    for v in &mut pos[model.width()..] {
        *v = half::f16::from_f32(*v).to_f32();
    }
    pos
}

/// Softmax-GradCAM at the last block's `ln_1` output (docs/algorithm.md, "Softmax-GradCAM";
/// reference `clip/model.py:400-420`, `pytorch_grad_cam/base_cam.py:62-154`).
///
/// The image embedding is the patch-mean pooling, L2-normalised; the logits are
/// `logit_scale * cos(image, class)` for the rows of `class_features` (classes x embed_dim,
/// each normalised here again as the reference does), and softmax runs over all of them.
/// For each index in `targets` the gradient of that class's softmax probability with
/// respect to A (the `ln_1` output) is averaged over the patch positions. The frozen blocks
/// run once; the last block runs once with its intermediates cached, and each target costs
/// one activation-only backward pass through it.
pub fn softmax_gradcam(
    model: &VisionTransformer,
    input: &ClipInput,
    class_features: &[f32],
    logit_scale: f32,
    targets: &[usize],
    opts: &CamOptions,
) -> Result<GradCamOutput, ModelError> {
    let (gh, gw) = model.grid_for(input.height, input.width)?;
    let (d, e) = (model.width(), model.embed_dim());
    if class_features.is_empty() || !class_features.len().is_multiple_of(e) {
        return Err(ModelError::Input(format!(
            "class features must be classes x {e} values"
        )));
    }
    let classes = class_features.len() / e;
    if let Some(&t) = targets.iter().find(|&&t| t >= classes) {
        return Err(ModelError::Input(format!(
            "target class {t} out of range for {classes} classes"
        )));
    }
    let patches = gh * gw;

    let start = Instant::now();
    let pos = opts
        .round_pos_embed_f16
        .then(|| reference_positional_embedding(model, gh, gw));
    let vopts = VisionOptions {
        keep_attention_from: model.layers().saturating_sub(opts.attention_blocks),
        positional_embedding: pos.as_deref(),
        patch_embeddings: false,
    };
    let fwd = model.forward_cached(&input.data, input.height, input.width, vopts)?;
    // Image embedding: mean of ln_post over the patch tokens, projected, normalised.
    let text = CosineClassifier::new(class_features, e, logit_scale);
    let CosineSoftmax {
        image: zn,
        image_norm: z_norm,
        probabilities,
    } = text.softmax(model.backend(), &fwd.patch_mean_embedding);
    let forward_seconds = start.elapsed().as_secs_f64();

    let start = Instant::now();
    let channel_weights = targets
        .iter()
        .map(|&k| {
            // d p_k / d logit_c = p_k (delta_kc - p_c)
            let pk = probabilities[k];
            let mut dzn = vec![0f32; e];
            for (c, t) in text.rows().enumerate() {
                let g = pk * (f32::from(c == k) - probabilities[c]) * logit_scale;
                for j in 0..e {
                    dzn[j] += g * t[j];
                }
            }
            // Through the normalisation z / |z|.
            let along = dot(&zn, &dzn);
            let dz: Vec<f32> = dzn
                .iter()
                .zip(&zn)
                .map(|(g, u)| (g - u * along) / z_norm)
                .collect();
            // Summed over the patch positions by the model; GradCAM wants the mean.
            let mut w = model.backward_patch_mean(&fwd, &dz);
            model.backend().scale(&mut w, 1.0 / patches as f32);
            w
        })
        .collect();
    let backward_seconds = start.elapsed().as_secs_f64();
    let activation = fwd.last_ln_1()[d..].to_vec();
    Ok(GradCamOutput {
        grid_h: gh,
        grid_w: gw,
        activation,
        channel_weights,
        probabilities,
        attention: fwd.attention,
        forward_seconds,
        backward_seconds,
    })
}

/// Class rows for a cosine softmax, each L2-normalised once here (the reference normalises
/// the text features again before the logits, even when they come
/// normalised from the classifier).
#[derive(Clone, Debug)]
pub struct CosineClassifier {
    embed_dim: usize,
    rows: Vec<f32>,
    logit_scale: f32,
}

/// One image's side of a cosine softmax.
#[derive(Clone, Debug)]
pub struct CosineSoftmax {
    /// The image embedding divided by its norm.
    pub image: Vec<f32>,
    /// That norm (the GradCAM backward divides by it).
    pub image_norm: f32,
    /// Softmax over the rows of `logit_scale * cos(image, row)`.
    pub probabilities: Vec<f32>,
}

impl CosineClassifier {
    /// `rows`: classes x `embed_dim` values.
    pub fn new(rows: &[f32], embed_dim: usize, logit_scale: f32) -> Self {
        let rows = rows
            .chunks_exact(embed_dim.max(1))
            .flat_map(|t| {
                let n = norm(t);
                t.iter().map(move |v| v / n)
            })
            .collect();
        CosineClassifier {
            embed_dim,
            rows,
            logit_scale,
        }
    }

    /// The normalised rows, in order.
    pub fn rows(&self) -> std::slice::ChunksExact<'_, f32> {
        self.rows.chunks_exact(self.embed_dim.max(1))
    }

    /// The softmax of `logit_scale * cos(z, row)` over the rows: the image embedding `z`
    /// divided by its norm, dot products with the normalised rows, scaled, softmax on
    /// `backend` (the CAM stage's arithmetic, which every user of the cosine softmax shares:
    /// CAMs, tags, prompt sharpness). A zero embedding (a patch token of a blank image can
    /// project to one) is divided by the smallest positive norm instead of zero: its logits are
    /// all zero and its probabilities uniform, where 0/0 would spread NaN; every other norm is
    /// used as it is.
    pub fn softmax(&self, backend: &dyn clip_es_model::Backend, z: &[f32]) -> CosineSoftmax {
        let z_norm = norm(z).max(f32::MIN_POSITIVE);
        let zn: Vec<f32> = z.iter().map(|v| v / z_norm).collect();
        let mut probabilities: Vec<f32> = self
            .rows()
            .map(|t| self.logit_scale * dot(&zn, t))
            .collect();
        backend.softmax(&mut probabilities);
        CosineSoftmax {
            image: zn,
            image_norm: z_norm,
            probabilities,
        }
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm(a: &[f32]) -> f32 {
    dot(a, a).sqrt()
}

/// [`softmax_gradcam`] on a [`Tower`]: on the CPU kernels, or with the tensors on a burn
/// device (the same method: `clip_es_gpu::VisionTower::softmax_gradcam`), the positional
/// embedding prepared on the host as for the CPU tower.
pub fn softmax_gradcam_on(
    tower: Tower,
    input: &ClipInput,
    class_features: &[f32],
    logit_scale: f32,
    targets: &[usize],
    opts: &CamOptions,
) -> Result<GradCamOutput, ModelError> {
    let Some(burn) = tower.burn else {
        return softmax_gradcam(tower.cpu, input, class_features, logit_scale, targets, opts);
    };
    let model = tower.cpu;
    let (gh, gw) = model.grid_for(input.height, input.width)?;
    let pos = opts
        .round_pos_embed_f16
        .then(|| reference_positional_embedding(model, gh, gw));
    let g = burn.softmax_gradcam(&clip_es_gpu::GradCamRequest {
        pixels: &input.data,
        height: input.height,
        width: input.width,
        positional_embedding: pos.as_deref(),
        keep_attention_from: model.layers().saturating_sub(opts.attention_blocks),
        class_features,
        logit_scale,
        targets,
    })?;
    Ok(GradCamOutput {
        grid_h: g.grid_h,
        grid_w: g.grid_w,
        activation: g.activation,
        channel_weights: g.channel_weights,
        probabilities: g.probabilities,
        attention: g.attention,
        forward_seconds: g.forward_seconds,
        backward_seconds: g.backward_seconds,
    })
}

/// Computes the CAMs of one image from its CLIP input (sides multiples of the patch size) for
/// its `labels` (rows of the classifier); the maps are resized to `original` = (height, width).
/// `model` is a `&VisionTransformer` (the CPU kernels) or a [`Tower`].
pub fn image_cams<'a>(
    model: impl Into<Tower<'a>>,
    classifier: &TextClassifier,
    input: &ClipInput,
    original: (usize, usize),
    labels: &[usize],
    opts: &CamOptions,
) -> Result<(ImageCams, StageTimes), ModelError> {
    let tower = model.into();
    let model = tower.cpu;
    let (orig_h, orig_w) = original;
    let mut times = StageTimes::default();
    let rows = classifier.rows_for(labels);
    let targets: Vec<usize> = (0..labels.len()).collect();
    let g = softmax_gradcam_on(tower, input, &rows, classifier.logit_scale, &targets, opts)?;
    times.forward = g.forward_seconds;
    times.backward = g.backward_seconds;
    // A NaN or infinity anywhere upstream (weights, an overflow) would come out as all-zero
    // maps after the min-max normalisation: fail the image loudly instead.
    if let Some(p) = g.probabilities.iter().find(|p| !p.is_finite()) {
        return Err(clip_es_model::ModelError::Input(format!(
            "the model's class probabilities are not finite ({p}): check the weights"
        )));
    }
    if g.channel_weights.iter().flatten().any(|v| !v.is_finite())
        || g.activation.iter().any(|v| !v.is_finite())
    {
        return Err(clip_es_model::ModelError::Input(
            "the GradCAM activations or gradients are not finite: check the weights".into(),
        ));
    }

    let t = Instant::now();
    let (gh, gw) = (g.grid_h, g.grid_w);
    let tokens = gh * gw + 1;
    let affinity = affinity::affinity_from_attention(
        model.backend(),
        &affinity::mean_patch_attention(&g.attention, tokens),
    );
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
    if refined_grid.iter().flatten().any(|v| !v.is_finite()) {
        return Err(clip_es_model::ModelError::Input(
            "the refined CAMs are not finite (attention or affinity overflow): check the weights"
                .into(),
        ));
    }
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
        let e = clip.config().embed_dim;
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
            logit_scale: clip.logit_scale(),
        })
    }
}

/// Test-time augmentation of the CAM stage: the image is also seen at other scales and mirrored,
/// and the refined CAMs of every view, resized to the image's size (and mirrored back), are
/// averaged. The reference holds this as a disabled code path (`img_ms_and_flip`,
/// linyq2117/CLIP-ES@3893f817 `generate_cams_voc12.py:82-91`, makes each scale's input
/// `ceil(scale * side / patch) * patch` pixels and its mirror; lines 125-126 keep only the
/// unflipped scale-1.0 view, and lines 205-207 only the first scale's maps) and runs scale 1.0
/// only; that is the default here. docs/segment.md describes the averaging.
#[derive(Clone, Debug, PartialEq)]
pub struct Augment {
    pub scales: Vec<f64>,
    pub flip: bool,
}

impl Default for Augment {
    fn default() -> Self {
        Augment {
            scales: vec![1.0],
            flip: false,
        }
    }
}

impl Augment {
    /// One view at scale 1, not mirrored: the reference's single pass.
    pub fn is_identity(&self) -> bool {
        self.scales == [1.0] && !self.flip
    }

    /// The CLIP input size of the view at scale `s` of a `base` input (both multiples of
    /// `patch`): each side scaled and rounded up to the patch size.
    pub fn view(base: (usize, usize), s: f64, patch: usize) -> (usize, usize) {
        let side = |v: usize| ((s * v as f64 / patch as f64).ceil() as usize).max(1) * patch;
        (side(base.0), side(base.1))
    }

    /// The largest view of a `base` input (what the memory estimate must allow for).
    pub fn largest_view(&self, base: (usize, usize), patch: usize) -> (usize, usize) {
        self.scales
            .iter()
            .map(|&s| Self::view(base, s, patch))
            .max_by_key(|&(h, w)| h * w)
            .unwrap_or(base)
    }

    /// Parses `--scales 1.0,0.75,1.25`: positive, finite, distinct.
    pub fn parse_scales(s: &str) -> Result<Vec<f64>, String> {
        let mut out: Vec<f64> = Vec::new();
        for part in s.split(',') {
            let v: f64 = part
                .trim()
                .parse()
                .map_err(|e| format!("scale {part:?}: {e}"))?;
            if !(v.is_finite() && v > 0.0 && v <= 8.0) {
                return Err(format!("scale {v} must be in (0, 8]"));
            }
            if out.contains(&v) {
                return Err(format!("scale {v} given twice"));
            }
            out.push(v);
        }
        Ok(out)
    }
}

/// Why the CAMs of an image could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum CamError {
    #[error("the image is {width}x{height}, smaller than the model's {patch}-pixel patch")]
    TooSmall {
        width: usize,
        height: usize,
        patch: usize,
    },
    #[error(transparent)]
    Image(#[from] clip_es_image::ImageError),
    #[error(transparent)]
    Model(#[from] clip_es_model::ModelError),
}

/// The CAMs of a decoded image at its own size, for `labels` (rows of `classifier`): the
/// CLIP input of size `base` (height, width: multiples of the patch size; the image's size
/// rounded up, or smaller for a large image, see [`crate::budget`]), [`image_cams`], and with
/// `augment` other than the identity the average over all views (each scale applied to
/// `base`). With the identity this is exactly the reference's single pass. `model` is a
/// `&VisionTransformer` (the CPU kernels) or a [`Tower`].
pub fn cams_for_image<'a>(
    model: impl Into<Tower<'a>>,
    classifier: &TextClassifier,
    image: &clip_es_image::DecodedImage,
    base: (usize, usize),
    labels: &[usize],
    opts: &CamOptions,
    augment: &Augment,
) -> Result<(ImageCams, StageTimes), CamError> {
    let model: Tower = model.into();
    let (w, h) = (image.width() as usize, image.height() as usize);
    let patch = model.cpu.patch_size();
    if w < patch || h < patch {
        return Err(CamError::TooSmall {
            width: w,
            height: h,
            patch,
        });
    }
    let mut times = StageTimes::default();
    let mut add = |t: &StageTimes| {
        times.forward += t.forward;
        times.backward += t.backward;
        times.affinity += t.affinity;
        times.resize += t.resize;
    };
    if augment.is_identity() {
        let (ih, iw) = base;
        let start = Instant::now();
        let input = image.clip_input(ih, iw)?;
        let prepare = start.elapsed().as_secs_f64();
        let (cams, t) = image_cams(model, classifier, &input, (h, w), labels, opts)?;
        add(&t);
        times.input = prepare;
        return Ok((cams, times));
    }
    // Each scale's view and its mirror are added first, then the scales in order: a mirrored
    // image then gives exactly the mirrored sum (addition commutes).
    let mut sum: Option<ImageCams> = None;
    let mut views = 0usize;
    for &s in &augment.scales {
        let (ih, iw) = Augment::view(base, s, patch);
        let input = image.clip_input(ih, iw)?;
        let (mut pair, t) = image_cams(model, classifier, &input, (h, w), labels, opts)?;
        add(&t);
        views += 1;
        if augment.flip {
            let flipped = input.flipped_horizontally();
            let (mut c, t) = image_cams(model, classifier, &flipped, (h, w), labels, opts)?;
            add(&t);
            views += 1;
            mirror_rows(&mut c.refined, w);
            if let Some(u) = c.unrefined.as_mut() {
                mirror_rows(u, w);
            }
            accumulate(&mut pair, &c);
        }
        match sum.as_mut() {
            None => sum = Some(pair),
            Some(acc) => accumulate(acc, &pair),
        }
    }
    let mut out =
        sum.ok_or_else(|| clip_es_model::ModelError::Input("no scales given for the CAMs".into()))?;
    let k = 1.0 / views as f32;
    out.refined.iter_mut().for_each(|v| *v *= k);
    if let Some(u) = out.unrefined.as_mut() {
        u.iter_mut().for_each(|v| *v *= k);
    }
    out.probabilities.iter_mut().for_each(|v| *v *= k);
    Ok((out, times))
}

/// Mirrors every row of maps `w` wide.
pub fn mirror_rows(maps: &mut [f32], w: usize) {
    for row in maps.chunks_exact_mut(w.max(1)) {
        row.reverse();
    }
}

fn accumulate(acc: &mut ImageCams, c: &ImageCams) {
    acc.refined
        .iter_mut()
        .zip(&c.refined)
        .for_each(|(a, b)| *a += b);
    if let (Some(a), Some(b)) = (acc.unrefined.as_mut(), c.unrefined.as_ref()) {
        a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
    }
    acc.probabilities
        .iter_mut()
        .zip(&c.probabilities)
        .for_each(|(a, b)| *a += b);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cosine softmax depends on the directions only: scaling the image embedding or a row
    /// changes nothing, and the probabilities are those of `logit_scale * cos`.
    #[test]
    fn cosine_softmax_is_a_softmax_of_scaled_cosines() {
        let rows = [2.0, 0.0, 0.0, 3.0, 1.0, 1.0];
        let c = CosineClassifier::new(&rows, 2, 10.0);
        let s = c.softmax(&clip_es_model::Cpu, &[4.0, 0.0]);
        assert_eq!(s.image, vec![1.0, 0.0]);
        assert_eq!(s.image_norm, 4.0);
        let cos = [1.0f32, 0.0, std::f32::consts::FRAC_1_SQRT_2];
        let exp: Vec<f32> = cos.iter().map(|c| (10.0 * c).exp()).collect();
        let sum: f32 = exp.iter().sum();
        for (p, e) in s.probabilities.iter().zip(&exp) {
            assert!((p - e / sum).abs() < 1e-5, "{:?}", s.probabilities);
        }
        let scaled = CosineClassifier::new(&[20.0, 0.0, 0.0, 0.5, 7.0, 7.0], 2, 10.0)
            .softmax(&clip_es_model::Cpu, &[0.25, 0.0]);
        for (a, b) in scaled.probabilities.iter().zip(&s.probabilities) {
            assert!((a - b).abs() < 1e-6);
        }
    }
}
