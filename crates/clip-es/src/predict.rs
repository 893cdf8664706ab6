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
//!
//! Memory: before its network runs, each image's peak is estimated (the network's forward pass
//! at its input size and scales, the scores at the image size, and with the CRF the estimate of
//! `budget::predict_crf_peak_bytes`) and reserved from a [`MemoryGate`] holding the
//! limit (`memory_limit`, by default what the system has available once the network is
//! loaded). An image over the limit fails alone, naming the options that would let it fit;
//! the others are written. The clip-decoder's ViT sees at most a `max_side` input, as the CAM
//! stage's does.

use crate::atomic::{probe_dir, write_bytes_atomic};
use crate::budget::{available_bytes, human_bytes, predict_crf_peak_bytes, MemoryGate};
use crate::classes::ClassSet;
use crate::datasets::{image_path, read_split};
use crate::masks::{dense_crf, encode_label_png, overlay_png, CrfImage, CrfParams, KernelCache};
use crate::progress::{thread_pool, ExifNotice, Progress};
use clip_es_image::ExifOrientation;
use clip_es_train::predict::{check_scales, ClassScores, Predictor};
use std::path::PathBuf;

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
    /// clip-decoder: images whose longer side exceeds this are scaled down for the ViT (0:
    /// never); their label maps are still written at the image's size.
    pub max_side: usize,
    /// Bytes one image may take (estimated before its network runs); `None`: what the system
    /// has available once the network is loaded.
    pub memory_limit: Option<u64>,
    /// Indexed PNGs with the VOC palette instead of grayscale.
    pub palette: bool,
    /// Also write an overlay picture per image into this directory, legend names from the
    /// class set (label value `c` is class `c - 1`).
    pub overlays: Option<(PathBuf, ClassSet)>,
    /// Recompute outputs that exist.
    pub overwrite: bool,
    /// `flex` (CPU), or `vulkan` in builds with that feature (`clip_es_train::open_device`).
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
            max_side: crate::budget::DEFAULT_MAX_SIDE,
            memory_limit: None,
            palette: true,
            overlays: None,
            overwrite: false,
            device: "flex".into(),
            threads: None,
            exif: ExifOrientation::Ignore,
        }
    }

    /// Checks the settings before any file is read or the network loaded, for every front end
    /// (`clip-es predict`, `run --train`, Python): the CRF's ranges, the thread count, the input
    /// scales, the memory limit and the device.
    pub fn validate(&self) -> Result<(), PredictRunError> {
        if let Some(crf) = &self.crf {
            crf.validate().map_err(PredictRunError::Config)?;
        }
        if let Some(t) = self.threads {
            crate::progress::check_threads(t).map_err(PredictRunError::Config)?;
        }
        if let Some(s) = &self.scales {
            check_scales("--scales", s).map_err(|e| PredictRunError::Config(e.to_string()))?;
        }
        clip_es_train::memory::check_memory_limit(self.memory_limit)
            .map_err(PredictRunError::Config)?;
        // Brings the GPU up once: a missing driver is a bad option, found before any work.
        clip_es_train::check_device(&self.device)
            .map(drop)
            .map_err(|e| PredictRunError::Config(e.to_string()))
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

/// The name of the prediction stage in its manifest.
pub const STAGE: &str = "predict";

/// The settings that make the label maps, as recorded in the stage manifest of the output
/// folder: the checkpoint (by fingerprint), the scales, the flips, the CRF, the CLIP model, the
/// PNG format and the EXIF handling.
pub fn manifest(config: &PredictConfig) -> Result<clip_es_data::manifest::Manifest, String> {
    let c = config;
    let mut m = clip_es_data::manifest::Manifest::new(STAGE);
    m.set(
        "checkpoint",
        clip_es_data::manifest::fingerprint(&c.checkpoint)?,
    );
    let scales = match &c.scales {
        Some(s) => s.iter().map(f64::to_string).collect::<Vec<_>>().join(","),
        None => "1".into(),
    };
    m.set("scales", scales);
    m.set("flip", c.flip);
    match &c.crf {
        None => m.set("crf", "off"),
        Some(p) => m.set("crf", p),
    };
    let model = match &c.clip_model {
        Some(spec) => clip_es_data::manifest::model_identity(spec)?,
        None => "the checkpoint's".into(),
    };
    m.set("model", model);
    m.set("palette", c.palette);
    m.set("exif", format!("{:?}", c.exif));
    Ok(m)
}

/// Opens the network of `config` (its scales set by `clip_es_train::predict::Predictor`),
/// checks the legend against its classes, then loads the clip-decoder's CLIP.
fn open_predictor(config: &PredictConfig) -> Result<Predictor, PredictRunError> {
    let mut predictor =
        Predictor::open(&config.checkpoint, &config.device, config.scales.as_deref())?;
    let n_classes = predictor.n_classes();
    if let Some((_, classes)) = &config.overlays {
        // Label value c is class c - 1: a legend shorter than the network's classes would
        // leave labels without a name.
        if classes.len() + 1 < n_classes {
            return Err(PredictRunError::Config(format!(
                "{}: the network has {} classes (background and {} more), but the legend names only {}: give a class list of {} names (--classes)",
                config.checkpoint.display(),
                n_classes,
                n_classes - 1,
                classes.len(),
                n_classes - 1
            )));
        }
    }
    predictor.load_vision(config.clip_model.as_deref())?;
    Ok(predictor)
}

/// Bytes one `width` x `height` image takes at its peak (an upper estimate): the decoded
/// image and its RGB copy, the network and its scores, with the CRF its probabilities,
/// unary, lattices and marginals ([`predict_crf_peak_bytes`]); the label map and its PNG.
fn image_peak_bytes(
    predictor: &Predictor,
    width: usize,
    height: usize,
    config: &PredictConfig,
) -> u64 {
    let pixels = (width * height) as u64;
    let classes = predictor.n_classes();
    let network = predictor.peak_bytes(height, width, config.max_side);
    let crf = if config.crf.is_some() {
        predict_crf_peak_bytes(width * height, classes)
    } else {
        0
    };
    let image = 3 * pixels * 3;
    let outputs = pixels * if config.overlays.is_some() { 8 } else { 2 };
    network + crf + image + outputs
}

/// Why an image does not fit under `limit`, and what would let it.
fn over_limit(
    predictor: &Predictor,
    width: usize,
    height: usize,
    config: &PredictConfig,
    limit: u64,
) -> String {
    let need = image_peak_bytes(predictor, width, height, config);
    let mut ways = vec!["raise --memory-limit".to_string()];
    if predictor.needs_vision() && (config.max_side == 0 || width.max(height) > config.max_side) {
        ways.push("lower --max-side".into());
    }
    if predictor.enlarges_inputs() {
        ways.push("use smaller --scales".into());
    }
    if config.crf.is_some() {
        let without = PredictConfig {
            crf: None,
            ..config.clone()
        };
        ways.push(format!(
            "leave out --crf (about {})",
            human_bytes(image_peak_bytes(predictor, width, height, &without))
        ));
    }
    format!(
        "the image is {width}x{height}: its label map needs about {} of memory, over the limit of {}; {}",
        human_bytes(need),
        human_bytes(limit),
        ways.join(", or ")
    )
}

/// The label map of one image from its scores: the argmax, or with `crf` the argmax of the CRF
/// marginals of the softmax probabilities.
pub fn labels_from_scores(
    scores: &ClassScores,
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
    gate: &MemoryGate,
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
    // The network, its scores and the CRF are the large allocations: reserved first.
    let (w, h) = (decoded.width() as usize, decoded.height() as usize);
    let _held = gate
        .reserve(image_peak_bytes(predictor, w, h, config))
        .map_err(|limit| {
            format!(
                "{}: {}",
                path.display(),
                over_limit(predictor, w, h, config, limit)
            )
        })?;
    let rgb = decoded.to_rgb8();
    let scores = predictor
        .scores(&decoded, &rgb, &path, config.flip, config.max_side)
        .map_err(|e| match e {
            clip_es_train::TrainError::Config(m) => format!("{}: {m}", path.display()),
            e => e.to_string(),
        })?;
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
    // Label maps made with another checkpoint or other settings are never kept as if they
    // were this run's.
    manifest(config)
        .and_then(|m| {
            let has_outputs = clip_es_data::manifest::holds_files(&config.out, &["png"]);
            m.claim(&config.out, config.overwrite, has_outputs)
        })
        .map_err(PredictRunError::Config)?;
    let pool = thread_pool(config.threads).map_err(PredictRunError::Config)?;
    pool.install(|| {
        let predictor = open_predictor(config)?;
        // Measured once the network is loaded: what is left for the images.
        let gate = MemoryGate::new(
            config
                .memory_limit
                .or_else(available_bytes)
                .unwrap_or(u64::MAX),
        );
        let kernels = KernelCache::default();
        let exif = ExifNotice::new(config.exif);
        let mut report = PredictReport {
            images: ids.len(),
            ..PredictReport::default()
        };
        progress.start("predict", ids.len());
        for id in &ids {
            match predict_image(config, &predictor, &gate, &kernels, &exif, progress, id) {
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
