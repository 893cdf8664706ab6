//! The prediction stage (library entry point of `clip-es predict` and of the last stage of
//! `clip-es run --train`): label maps of a network trained by stage three (`clip-es-train`)
//! for the images of a split, as kazuto1011/deeplab-pytorch at 4219467f tests it (`main.py`
//! lines 282-368: logits upsampled bilinearly to the image, argmax) and, with the CRF, post-
//! processes it (`main.py` lines 371-447 and `libs/utils/crf.py`: softmax probabilities, the
//! same dense CRF as the pseudo masks, on the mean-subtracted BGR image wrapped to uint8, argmax
//! of the marginals). See docs/training.md, "Prediction".
//!
//! Images run one after another, each on all the pool's threads inside the network; a failing
//! image is reported and left out; finished files are skipped on a rerun.

use crate::atomic::{probe_dir, write_bytes_atomic};
use crate::classes::ClassSet;
use crate::datasets::{image_path, read_split};
use crate::masks::{dense_crf, encode_label_png, overlay_png, CrfImage, CrfParams, KernelCache};
use crate::progress::{thread_pool, ExifNotice, Progress};
use clip_es_image::ExifOrientation;
use clip_es_train::model::Net;
use clip_es_train::predict::{scores_decoder, scores_deeplab, Scores};
use clip_es_train::{Arch, Model};
use std::path::{Path, PathBuf};

/// The prediction stage's settings.
#[derive(Clone, Debug)]
pub struct PredictConfig {
    /// A checkpoint written by `clip-es train`.
    pub checkpoint: PathBuf,
    pub images: PathBuf,
    /// Split file: the image ids (first token per line).
    pub split: PathBuf,
    /// Output directory for `<id>.png`.
    pub out: PathBuf,
    /// Input scales. DeepLab-v2: the multi-scale inputs whose logits are max-pooled (1.0 is
    /// always one of them; `None`: the checkpoint's, 1.0, 0.75, 0.5 by default). clip-decoder:
    /// the views whose logits are averaged (`None`: 1.0 only).
    pub scales: Option<Vec<f64>>,
    /// clip-decoder: also the mirror image of each view.
    pub flip: bool,
    /// Refine with the dense CRF (deeplab-pytorch's `crf` step).
    pub crf: Option<CrfParams>,
    /// clip-decoder: the CLIP model (`None`: the one the checkpoint was trained with).
    pub clip_model: Option<String>,
    /// Indexed PNGs with the VOC palette instead of grayscale.
    pub palette: bool,
    /// Also write an overlay picture per image into this directory, legend names from the
    /// class set (label value `c` is class `c - 1`).
    pub overlays: Option<(PathBuf, ClassSet)>,
    /// Recompute outputs that exist.
    pub overwrite: bool,
    /// `flex` (CPU), or `cuda` / `wgpu` in builds with those features.
    pub device: String,
    pub threads: Option<usize>,
    pub exif: ExifOrientation,
}

impl PredictConfig {
    pub fn new(checkpoint: PathBuf, images: PathBuf, split: PathBuf, out: PathBuf) -> Self {
        PredictConfig {
            checkpoint,
            images,
            split,
            out,
            scales: None,
            flip: true,
            crf: None,
            clip_model: None,
            palette: true,
            overlays: None,
            overwrite: false,
            device: "flex".into(),
            threads: None,
            exif: ExifOrientation::Ignore,
        }
    }
}

impl PredictConfig {
    /// Checks the settings before any file is read or the network loaded, for every front end
    /// (`clip-es predict`, `run --train`, Python): scales positive and finite, the CRF's
    /// ranges, the thread count.
    pub fn validate(&self) -> Result<(), PredictRunError> {
        let bad = |m: String| Err(PredictRunError::Config(m));
        if let Some(s) = &self.scales {
            if s.is_empty() || s.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
                return bad(format!("--scales must be positive numbers, got {s:?}"));
            }
        }
        if let Some(crf) = &self.crf {
            crf.validate().map_err(PredictRunError::Config)?;
        }
        if let Some(t) = self.threads {
            crate::progress::check_threads(t).map_err(PredictRunError::Config)?;
        }
        Ok(())
    }
}

/// The outcome of [`run`].
#[derive(Clone, Debug, Default)]
pub struct PredictReport {
    pub images: usize,
    pub written: usize,
    pub skipped: usize,
    pub failures: Vec<(String, String)>,
}

/// The stage could not run at all (one bad image is a failure in the report instead).
#[derive(Debug, thiserror::Error)]
pub enum PredictRunError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Split(#[from] crate::datasets::DatasetError),
    #[error(transparent)]
    Train(#[from] clip_es_train::TrainError),
}

/// A loaded network and what it needs.
struct Predictor {
    model: Model,
    vision: Option<clip_es_model::VisionTransformer>,
    scales: Vec<f64>,
}

impl Predictor {
    fn open(config: &PredictConfig) -> Result<Self, PredictRunError> {
        let dev = clip_es_train::device(&config.device)?;
        let (mut model, _, meta) = Model::open(&config.checkpoint, &dev)?;
        let mut scales = vec![1.0];
        if let Some(s) = &config.scales {
            // Ranges checked by `PredictConfig::validate`.
            scales = s.clone();
        }
        if let (Some(s), Net::DeepLab(n)) = (&config.scales, &mut model.net) {
            // Scale 1.0 is the network's own input; the others are its extra MSC inputs.
            n.config.msc_scales = s.iter().filter(|&&v| v != 1.0).map(|&v| v as f32).collect();
        }
        let vision = if model.arch() == Arch::ClipDecoder {
            let spec = config
                .clip_model
                .clone()
                .or_else(|| meta["clip_model"].as_str().map(String::from))
                .unwrap_or_else(|| "ViT-B/16".into());
            let clip = clip_es_model::Clip::load(&spec)
                .map_err(|e| PredictRunError::Config(format!("loading CLIP `{spec}`: {e}")))?;
            let vision = clip.into_vision();
            if let Net::Decoder(d) = &model.net {
                if d.config.in_dim != vision.width() {
                    return Err(PredictRunError::Config(format!(
                        "{}: the decoder takes {}-d features, `{spec}` gives {}",
                        config.checkpoint.display(),
                        d.config.in_dim,
                        vision.width()
                    )));
                }
            }
            Some(vision)
        } else {
            None
        };
        Ok(Predictor {
            model,
            vision,
            scales,
        })
    }

    fn scores(
        &self,
        image: &clip_es_image::DecodedImage,
        rgb: &clip_es_image::Rgb8Image,
        path: &Path,
        flip: bool,
    ) -> clip_es_train::Result<Scores> {
        match &self.vision {
            Some(v) => scores_decoder(&self.model, v, image, path, &self.scales, flip),
            None => scores_deeplab(&self.model, rgb),
        }
    }
}

/// The label map of one image from its scores: the argmax, or with `crf` the argmax of the CRF
/// marginals of the softmax probabilities.
pub fn labels_from_scores(
    scores: &Scores,
    image: &clip_es_image::Rgb8Image,
    crf: Option<&CrfParams>,
    cache: &KernelCache,
) -> Result<Vec<u8>, String> {
    if (scores.width, scores.height) != (image.width as usize, image.height as usize) {
        return Err(format!(
            "scores are {}x{} but the image is {}x{}",
            scores.width, scores.height, image.width, image.height
        ));
    }
    match crf {
        None => Ok(scores.argmax()),
        Some(p) => {
            let unary = clip_es_crf::unary_from_probabilities(&scores.softmax());
            let m = dense_crf(image, &unary, scores.classes, p, CrfImage::Reference, cache)
                .map_err(|e| format!("CRF: {e}"))?;
            Ok(m.argmax().into_iter().map(|(l, _)| l as u8).collect())
        }
    }
}

enum Outcome {
    Written,
    Skipped,
}

fn predict_image(
    config: &PredictConfig,
    predictor: &Predictor,
    kernels: &KernelCache,
    exif: &ExifNotice,
    progress: &dyn Progress,
    id: &str,
) -> Result<Outcome, String> {
    let out = config.out.join(format!("{id}.png"));
    let overlay = config
        .overlays
        .as_ref()
        .map(|(d, c)| (d.join(format!("{id}.png")), c));
    if !config.overwrite && out.is_file() && overlay.as_ref().is_none_or(|(p, _)| p.is_file()) {
        return Ok(Outcome::Skipped);
    }
    let path = image_path(&config.images, id)?;
    let (decoded, orientation) =
        clip_es_image::DecodedImage::open_with(&path, config.exif).map_err(|e| e.to_string())?;
    exif.note(id, orientation, progress);
    let rgb = decoded.to_rgb8();
    let scores = predictor
        .scores(&decoded, &rgb, &path, config.flip)
        .map_err(|e| e.to_string())?;
    if scores.data.iter().any(|v| !v.is_finite()) {
        return Err(format!(
            "{}: the network gave non-finite scores",
            path.display()
        ));
    }
    let labels = labels_from_scores(&scores, &rgb, config.crf.as_ref(), kernels)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let (w, h) = (rgb.width as usize, rgb.height as usize);
    if let Some((p, classes)) = &overlay {
        let png = overlay_png(&rgb, &labels, classes)
            .map_err(|e| format!("{}: PNG encoding: {e}", p.display()))?;
        write_bytes_atomic(p, &png).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    // The label map is written last: its presence marks the image as done.
    let png = encode_label_png(&labels, w, h, config.palette)
        .map_err(|e| format!("{}: PNG encoding: {e}", out.display()))?;
    write_bytes_atomic(&out, &png).map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(Outcome::Written)
}

/// The prediction stage: a label map for every id of the split, resumable, atomic writes; an
/// image that fails is reported and skipped.
pub fn run(
    config: &PredictConfig,
    progress: &dyn Progress,
) -> Result<PredictReport, PredictRunError> {
    config.validate()?;
    let ids = read_split(&config.split)?;
    if !config.images.is_dir() {
        return Err(PredictRunError::Config(format!(
            "{} (images): not a directory",
            config.images.display()
        )));
    }
    for dir in std::iter::once(&config.out).chain(config.overlays.as_ref().map(|(d, _)| d)) {
        probe_dir(dir).map_err(PredictRunError::Config)?;
    }
    let pool = thread_pool(config.threads).map_err(PredictRunError::Config)?;
    pool.install(|| {
        let predictor = Predictor::open(config)?;
        let kernels = KernelCache::default();
        let exif = ExifNotice::new(config.exif);
        let mut report = PredictReport {
            images: ids.len(),
            ..PredictReport::default()
        };
        progress.start("predict", ids.len());
        for id in &ids {
            match predict_image(config, &predictor, &kernels, &exif, progress, id) {
                Ok(Outcome::Written) => report.written += 1,
                Ok(Outcome::Skipped) => report.skipped += 1,
                Err(e) => {
                    progress.failed(id, &e);
                    report.failures.push((id.clone(), e));
                }
            }
            progress.advance();
        }
        progress.finish();
        Ok(report)
    })
}
