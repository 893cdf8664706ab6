//! Pseudo masks with confidence (docs/algorithm.md, "Pseudo masks"; reference
//! `eval_cam_with_crf.py`): CAMs plus
//! background score -> dense CRF -> label map, pixels whose CRF marginal is below the
//! confidence threshold set to 255 (ignored by the segmentation loss: the paper's
//! confidence-guided loss). Also the label PNG format shared with the evaluator.
//!
//! Reference behaviour reproduced by default:
//! - the CAMs are float16 and numpy evaluates `bg = (1 - max_k cam_k) ** 1` and
//!   `unary_from_softmax` (`-log(clip(p, 1e-5, 1))`) in float16 (`clip_es_crf::unary`);
//! - the image given to the bilateral kernel is the BGR image minus the mean
//!   (104.008, 116.669, 122.675) cast to uint8: numpy's float32 -> uint8 cast on x86-64
//!   truncates toward zero and wraps modulo 256 (checked: -104.008 -> 152), channels in B, G, R
//!   order; `CrfImage::Rgb` gives the true colours instead;
//! - CRF: Potts Gaussian (sxy 1, weight 3) and bilateral (sxy 67, srgb 3, weight 4) kernels,
//!   10 mean-field iterations; label = first maximum of the marginals, mapped through `keys`;
//!   the threshold compares the float32 marginal with the float32 nearest the threshold (numpy
//!   casts the Python float to the array's dtype).

use crate::argmax::{argmax_with_background, background_score, first_max};
use crate::cam_io::{CamFile, CamIoError, CamKind};
use crate::classes::{BACKGROUND_LABEL, IGNORE_LABEL};
use crate::datasets::{image_path, read_split};
use crate::progress::{for_each_image, ExifNotice, Progress};
use clip_es_crf::{
    unary_from_f16_probabilities, Compatibility, CrfError, DenseCrf, PairwiseKernel,
};
use clip_es_image::{ExifOrientation, Rgb8Image};
use half::f16;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The reference's BGR mean, subtracted before the wrapping uint8 cast.
pub const MEAN_BGR: [f64; 3] = [104.008, 116.669, 122.675];

/// Which image the bilateral kernel sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CrfImage {
    /// The reference's: BGR minus the mean, wrapped to uint8.
    #[default]
    Reference,
    /// The true RGB colours.
    Rgb,
}

/// Dense CRF settings (the reference's `DenseCRF(iter_max=10, pos_w=3, pos_xy_std=1, bi_w=4,
/// bi_xy_std=67, bi_rgb_std=3)`).
#[derive(Clone, Debug, PartialEq)]
pub struct CrfParams {
    pub iterations: usize,
    pub gaussian_sxy: f32,
    pub gaussian_weight: f32,
    pub bilateral_sxy: f32,
    pub bilateral_srgb: f32,
    pub bilateral_weight: f32,
}

/// How the settings records name a CRF (`clip-es-masks.json`, `clip-es-predict.json`).
impl std::fmt::Display for CrfParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} iterations, gaussian sxy {} weight {}, bilateral sxy {} srgb {} weight {}",
            self.iterations,
            self.gaussian_sxy,
            self.gaussian_weight,
            self.bilateral_sxy,
            self.bilateral_srgb,
            self.bilateral_weight
        )
    }
}

impl Default for CrfParams {
    fn default() -> Self {
        CrfParams {
            iterations: 10,
            gaussian_sxy: 1.0,
            gaussian_weight: 3.0,
            bilateral_sxy: 67.0,
            bilateral_srgb: 3.0,
            bilateral_weight: 4.0,
        }
    }
}

/// The most CRF mean-field iterations [`CrfParams::validate`] accepts.
pub const MAX_CRF_ITERATIONS: usize = 1000;

impl CrfParams {
    /// Checks the ranges (the CRF's own rules, for every front end): standard deviations
    /// positive and finite (a zero or NaN one divides the features by zero), weights finite and
    /// not negative, 1 to [`MAX_CRF_ITERATIONS`] iterations.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_CRF_ITERATIONS).contains(&self.iterations) {
            return Err(format!(
                "CRF iterations must be in 1..={MAX_CRF_ITERATIONS}, got {}",
                self.iterations
            ));
        }
        for (name, v) in [
            ("gaussian_sxy", self.gaussian_sxy),
            ("bilateral_sxy", self.bilateral_sxy),
            ("bilateral_srgb", self.bilateral_srgb),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!(
                    "CRF {name} (a standard deviation) must be a positive number, got {v}"
                ));
            }
        }
        for (name, v) in [
            ("gaussian_weight", self.gaussian_weight),
            ("bilateral_weight", self.bilateral_weight),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!("CRF {name} must be a number >= 0, got {v}"));
            }
        }
        Ok(())
    }
}

/// How pseudo masks are made.
#[derive(Clone, Debug, PartialEq)]
pub struct MaskOptions {
    /// Pixels whose confidence is below this become 255 (0 keeps every pixel).
    pub confidence: f32,
    pub crf_image: CrfImage,
    /// Without the CRF the label is the argmax of [bg, CAMs] and the confidence that score.
    pub use_crf: bool,
    pub crf: CrfParams,
    pub cam_kind: CamKind,
    /// The number of foreground classes of the run, when known: a CAM key at or above it fails
    /// the image instead of becoming a label the evaluation rejects. `None`: only the 8-bit
    /// limit (keys up to 253).
    pub num_classes: Option<usize>,
}

impl Default for MaskOptions {
    fn default() -> Self {
        MaskOptions {
            confidence: 0.95,
            crf_image: CrfImage::Reference,
            use_crf: true,
            crf: CrfParams::default(),
            cam_kind: CamKind::AttnHighres,
            num_classes: None,
        }
    }
}

impl MaskOptions {
    /// Checks the ranges before any image is read, for every front end (`clip-es masks`,
    /// `segment`, `run`, Python's `pseudo_mask`): the confidence threshold in [0, 1] (NaN would
    /// keep every pixel, above 1 none), and the CRF settings when the CRF is used.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.confidence) {
            return Err(format!(
                "confidence must be in [0, 1], got {}",
                self.confidence
            ));
        }
        if self.use_crf {
            self.crf.validate()?;
        }
        Ok(())
    }
}

/// A pseudo mask: class per pixel (0 background, key + 1 for a CAM, 255 not confident) and the
/// confidence (the CRF marginal of the chosen label), row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct PseudoMask {
    pub width: usize,
    pub height: usize,
    pub labels: Vec<u8>,
    pub confidence: Vec<f32>,
}

/// Why an image's mask could not be made.
#[derive(Debug, thiserror::Error)]
pub enum MaskError {
    #[error(transparent)]
    Cam(#[from] CamIoError),
    #[error("{0}")]
    Image(#[from] clip_es_image::ImageError),
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl MaskError {
    pub fn invalid(path: &Path, message: impl Into<String>) -> Self {
        MaskError::Invalid {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

/// The 3-channel 8-bit image (interleaved) that the bilateral kernel is built from.
pub fn crf_input_image(image: &Rgb8Image, mode: CrfImage) -> Vec<u8> {
    match mode {
        CrfImage::Rgb => image.data.clone(),
        CrfImage::Reference => {
            // Channel c of the output is BGR channel c: B, G, R = RGB channels 2, 1, 0.
            let lut: Vec<[u8; 256]> = (0..3).map(|c| wrapped_mean_lut(MEAN_BGR[c])).collect();
            let mut out = Vec::with_capacity(image.data.len());
            for px in image.data.chunks_exact(3) {
                out.push(lut[0][px[2] as usize]);
                out.push(lut[1][px[1] as usize]);
                out.push(lut[2][px[0] as usize]);
            }
            out
        }
    }
}

/// `np.float32(v) - mean` (computed in float64 as numpy does for a float64 operand, stored as
/// float32), then numpy's x86-64 float32 -> uint8 cast: truncation toward zero, wrapped mod 256.
fn wrapped_mean_lut(mean: f64) -> [u8; 256] {
    let mut lut = [0u8; 256];
    for (v, out) in lut.iter_mut().enumerate() {
        let x = (v as f64 - mean) as f32;
        *out = (x.trunc() as i64).rem_euclid(256) as u8;
    }
    lut
}

/// `[bg, cam_1, ..., cam_K]` as the reference builds them in float16: `bg = 1 - max_k cam_k`
/// (raised to the power 1, a no-op), label-major (K+1) x N.
pub fn probabilities_with_background(cams: &[f16], n_pixels: usize) -> Vec<f16> {
    let mut out = Vec::with_capacity(cams.len() + n_pixels);
    out.extend((0..n_pixels).map(|i| background_score(first_max(cams, n_pixels, i).1, 1.0)));
    out.extend_from_slice(cams);
    out
}

/// The position-only (Gaussian) kernel depends on nothing but the image size and its two
/// parameters, so images of one size share it: a small most-recently-used cache. (Same lattice,
/// same numbers: a cached kernel changes no result.)
pub struct KernelCache {
    capacity: usize,
    entries: Mutex<Vec<(KernelKey, Arc<PairwiseKernel>)>>,
}

type KernelKey = (usize, usize, u32, u32);

impl KernelCache {
    /// A cache keeping up to `capacity` kernels (about 10 MB each for a 500 x 375 image).
    pub fn new(capacity: usize) -> Self {
        KernelCache {
            capacity,
            entries: Mutex::new(Vec::new()),
        }
    }

    /// The Gaussian kernel for a `width` x `height` image, built on first use.
    pub fn gaussian(
        &self,
        width: usize,
        height: usize,
        sxy: f32,
        weight: f32,
    ) -> Result<Arc<PairwiseKernel>, CrfError> {
        let key = (width, height, sxy.to_bits(), weight.to_bits());
        {
            let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(i) = e.iter().position(|(k, _)| *k == key) {
                let hit = e.remove(i);
                let kernel = hit.1.clone();
                e.insert(0, hit);
                return Ok(kernel);
            }
        }
        // Built outside the lock; two threads may build the same kernel once each.
        let kernel = Arc::new(PairwiseKernel::gaussian(
            width,
            height,
            sxy,
            Compatibility::Potts(weight),
        )?);
        if self.capacity > 0 {
            let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            if !e.iter().any(|(k, _)| *k == key) {
                e.insert(0, (key, kernel.clone()));
                e.truncate(self.capacity);
            }
        }
        Ok(kernel)
    }
}

impl Default for KernelCache {
    fn default() -> Self {
        KernelCache::new(4)
    }
}

/// Mean-field inference of the dense CRF of the reference (and of deeplab-pytorch's
/// `libs/utils/crf.py`): the label-major unary of `n_labels` labels, a Potts Gaussian kernel
/// (shared through `cache`) and a Potts bilateral kernel on `crf_image(image, mode)`.
pub fn dense_crf(
    image: &Rgb8Image,
    unary: &[f32],
    n_labels: usize,
    params: &CrfParams,
    mode: CrfImage,
    cache: &KernelCache,
) -> Result<clip_es_crf::Marginals, CrfError> {
    dense_crf_until(image, unary, n_labels, params, mode, cache, &|| false)
}

/// [`dense_crf`] that asks `stop` before each mean-field iteration and fails with
/// [`CrfError::Stopped`] once it says yes (a front end's interrupt).
pub fn dense_crf_until(
    image: &Rgb8Image,
    unary: &[f32],
    n_labels: usize,
    params: &CrfParams,
    mode: CrfImage,
    cache: &KernelCache,
    stop: &dyn Fn() -> bool,
) -> Result<clip_es_crf::Marginals, CrfError> {
    let (w, h) = (image.width as usize, image.height as usize);
    let p = params;
    let mut crf = DenseCrf::new(w * h, n_labels)?;
    crf.set_unary_label_major(unary)?;
    crf.add_pairwise(cache.gaussian(w, h, p.gaussian_sxy, p.gaussian_weight)?)?;
    crf.add_pairwise(PairwiseKernel::bilateral(
        w,
        h,
        p.bilateral_sxy,
        p.bilateral_srgb,
        &crf_input_image(image, mode),
        Compatibility::Potts(p.bilateral_weight),
    )?)?;
    crf.inference_until(p.iterations, stop)
}

/// Makes the pseudo mask of one image from its CAMs (`cache`: shared Gaussian kernels). The
/// CAMs are checked by [`CamFile::validate`] and must have the image's size; errors are
/// messages without a path (see [`pseudo_mask_file`]).
pub fn pseudo_mask(
    cam: &CamFile,
    image: &Rgb8Image,
    options: &MaskOptions,
    cache: &KernelCache,
) -> Result<PseudoMask, String> {
    pseudo_mask_until(cam, image, options, cache, &|| false)
}

/// [`pseudo_mask`] that asks `stop` between the CRF's iterations and fails once it says yes.
pub fn pseudo_mask_until(
    cam: &CamFile,
    image: &Rgb8Image,
    options: &MaskOptions,
    cache: &KernelCache,
    stop: &dyn Fn() -> bool,
) -> Result<PseudoMask, String> {
    options.validate()?;
    let (w, h) = (image.width as usize, image.height as usize);
    let cams = cam.validate(options.cam_kind, options.num_classes)?;
    if (cam.width, cam.height) != (w, h) {
        return Err(format!(
            "CAMs are {}x{} but the image is {w}x{h}",
            cam.width, cam.height
        ));
    }
    let n = w * h;
    let probs = probabilities_with_background(cams, n);
    let m = cam.keys.len() + 1;
    let (best, confidence): (Vec<usize>, Vec<f32>) = if options.use_crf {
        dense_crf_until(
            image,
            &unary_from_f16_probabilities(&probs),
            m,
            &options.crf,
            options.crf_image,
            cache,
            stop,
        )
        .map_err(|e| format!("CRF: {e}"))?
        .argmax()
        .into_iter()
        .unzip()
    } else {
        // Power 1: the background score is the `1 - max` of `probs`.
        (0..n)
            .map(|i| {
                let (best, score) = argmax_with_background(cams, n, i, 1.0);
                (best, score.to_f32())
            })
            .unzip()
    };
    let labels = best
        .iter()
        .zip(&confidence)
        .map(|(&l, &c)| {
            if c < options.confidence {
                IGNORE_LABEL
            } else if l == 0 {
                BACKGROUND_LABEL
            } else {
                (cam.keys[l - 1] + 1) as u8
            }
        })
        .collect();
    Ok(PseudoMask {
        width: w,
        height: h,
        labels,
        confidence,
    })
}

/// [`pseudo_mask`] of the CAM file at `cam_path`, errors naming that file.
pub fn pseudo_mask_file(
    cam: &CamFile,
    cam_path: &Path,
    image: &Rgb8Image,
    options: &MaskOptions,
    cache: &KernelCache,
) -> Result<PseudoMask, MaskError> {
    pseudo_mask(cam, image, options, cache).map_err(|m| MaskError::invalid(cam_path, m))
}

/// The masks stage's settings.
#[derive(Clone, Debug)]
pub struct MasksConfig {
    /// Directory of CAM files: `<id>.npz` (clip-es) or `<id>.npy` (the reference's dicts).
    pub cams: PathBuf,
    /// Directory of the images.
    pub images: PathBuf,
    /// Split file: the image ids (first token per line).
    pub split: PathBuf,
    /// Output directory for `<id>.png`.
    pub out: PathBuf,
    pub options: MaskOptions,
    /// Indexed PNGs with the VOC palette instead of grayscale.
    pub palette: bool,
    /// Also write the confidence maps (float32 `<id>.npy`) into this directory.
    pub save_confidence: Option<PathBuf>,
    /// Recompute masks that exist (by default they are skipped).
    pub overwrite: bool,
    /// Worker threads (all cores when `None`).
    pub threads: Option<usize>,
    /// Also write an overlay picture per image (`<dir>/<id>.png`): VOC-palette colours by
    /// label value, legend names from the class set (label value `c` is class `c - 1`).
    pub overlays: Option<(PathBuf, crate::classes::ClassSet)>,
    /// EXIF orientation tags: ignored (the stored grid, as the CAM stage reads by default) or
    /// applied (give the same to the CAM stage).
    pub exif: ExifOrientation,
    /// Bytes the stage may use for the images in flight together (`None`: what the system
    /// reports available at the start); see [`crate::budget::mask_peak_bytes`].
    pub memory_limit: Option<u64>,
}

impl MasksConfig {
    /// The reference's settings (see [`MaskOptions::default`]).
    pub fn new(cams: PathBuf, images: PathBuf, split: PathBuf, out: PathBuf) -> Self {
        MasksConfig {
            cams,
            images,
            split,
            out,
            options: MaskOptions::default(),
            palette: false,
            save_confidence: None,
            overwrite: false,
            threads: None,
            overlays: None,
            exif: ExifOrientation::Ignore,
            memory_limit: None,
        }
    }
}

/// The outcome of [`run`].
#[derive(Clone, Debug, Default)]
pub struct MasksReport {
    /// Ids in the split.
    pub images: usize,
    pub written: usize,
    /// Masks already present (not recomputed).
    pub skipped: usize,
    /// Images that failed, with the reason.
    pub failures: Vec<(String, String)>,
}

/// What [`run`] did with one image.
enum Outcome {
    Written,
    Skipped,
}

/// Could not make masks at all (one bad image is a failure in the report instead).
#[derive(Debug, thiserror::Error)]
pub enum MasksRunError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Split(#[from] crate::datasets::DatasetError),
}

/// One image of [`run`]: CAMs + image -> mask (and confidence), written atomically.
fn mask_image(
    config: &MasksConfig,
    gate: &crate::budget::MemoryGate,
    kernels: &KernelCache,
    exif: &ExifNotice,
    progress: &dyn Progress,
    id: &str,
) -> Result<Outcome, MaskError> {
    let mask_path = config.out.join(format!("{id}.png"));
    let conf_path = config
        .save_confidence
        .as_ref()
        .map(|d| d.join(format!("{id}.npy")));
    let overlay_path = config
        .overlays
        .as_ref()
        .map(|(d, _)| d.join(format!("{id}.png")));
    if !config.overwrite
        && mask_path.is_file()
        && conf_path.as_ref().is_none_or(|p| p.is_file())
        && overlay_path.as_ref().is_none_or(|p| p.is_file())
    {
        return Ok(Outcome::Skipped);
    }
    let cam_path = CamFile::locate(&config.cams, id)?;
    let image_file =
        image_path(&config.images, id).map_err(|m| MaskError::invalid(&config.images, m))?;
    let (image, orientation) = clip_es_image::load_rgb_with(&image_file, config.exif)?;
    exif.note(id, orientation, progress);
    // The image's size bounds what the CAM file may inflate to.
    let cam = CamFile::read_for_image(&cam_path, image.height as usize, image.width as usize)?;
    // The CRF's lattices and marginals are the large allocations: reserved first.
    let (w, h) = (image.width as usize, image.height as usize);
    let (labels, crf) = (cam.keys.len() + 1, config.options.use_crf);
    let _held = gate
        .reserve(crate::budget::mask_peak_bytes(w * h, labels, crf))
        .map_err(|limit| {
            MaskError::invalid(
                &image_file,
                crate::budget::mask_over_limit(w, h, labels, crf, limit),
            )
        })?;
    let mask = pseudo_mask_file(&cam, &cam_path, &image, &config.options, kernels)?;
    let png = encode_label_png(&mask.labels, mask.width, mask.height, config.palette)
        .map_err(|e| MaskError::invalid(&mask_path, format!("PNG encoding: {e}")))?;
    if let (Some(p), Some((_, classes))) = (&overlay_path, &config.overlays) {
        let png = overlay_png(&image, &mask.labels, classes)
            .map_err(|e| MaskError::invalid(p, format!("PNG encoding: {e}")))?;
        crate::atomic::write_bytes_atomic(p, &png).map_err(|source| MaskError::Io {
            path: p.clone(),
            source,
        })?;
    }
    // The mask is written last: its presence marks the image as done.
    if let Some(p) = &conf_path {
        let arr = clip_es_pickle::NdArray {
            dtype: clip_es_pickle::DType::F32,
            shape: vec![mask.height, mask.width],
            data: mask
                .confidence
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        };
        let bytes =
            clip_es_pickle::encode_npy(&arr).map_err(|e| MaskError::invalid(p, e.to_string()))?;
        crate::atomic::write_bytes_atomic(p, &bytes).map_err(|source| MaskError::Io {
            path: p.clone(),
            source,
        })?;
    }
    if let Err(source) = crate::atomic::write_bytes_atomic(&mask_path, &png) {
        if let Some(p) = &conf_path {
            let _ = std::fs::remove_file(p);
        }
        return Err(MaskError::Io {
            path: mask_path,
            source,
        });
    }
    Ok(Outcome::Written)
}

/// The overlay picture of a label map: VOC-palette colours by label value, a legend naming the
/// classes present (label value `c` is `classes.names[c - 1]`) and "not confident".
pub fn overlay_png(
    image: &Rgb8Image,
    labels: &[u8],
    classes: &crate::classes::ClassSet,
) -> Result<Vec<u8>, png::EncodingError> {
    use crate::viz::{self, LegendEntry, OverlayStyle};
    let mut present = [false; 256];
    labels.iter().for_each(|&l| present[l as usize] = true);
    let mut legend: Vec<LegendEntry> = (1..255u8)
        .filter(|&l| present[l as usize])
        .map(|l| LegendEntry {
            name: classes
                .names
                .get(l as usize - 1)
                .cloned()
                .unwrap_or_else(|| format!("class {l}")),
            colour: viz::voc_colour(l),
        })
        .collect();
    if present[255] {
        legend.push(LegendEntry {
            name: "not confident".into(),
            colour: [200, 200, 200],
        });
    }
    viz::overlay(
        image,
        labels,
        &|l| Some(viz::voc_colour(l)),
        &legend,
        &OverlayStyle::default(),
    )
    .encode_png()
}

/// The name of the masks stage in its manifest.
pub const STAGE: &str = "masks";

/// The settings that make the pseudo masks, as recorded in the stage manifest of the output
/// folder (the memory limit and the threads change nothing in them and are left out).
pub fn manifest(config: &MasksConfig) -> clip_es_data::manifest::Manifest {
    let o = &config.options;
    let mut m = clip_es_data::manifest::Manifest::new(STAGE);
    m.set("confidence", o.confidence);
    m.set("crf", o.use_crf);
    if o.use_crf {
        m.set("crf_image", format!("{:?}", o.crf_image));
        m.set("crf_params", &o.crf);
    }
    m.set("cam_key", format!("{:?}", o.cam_kind));
    m.set("palette", config.palette);
    m.set("exif", format!("{:?}", config.exif));
    m
}

/// The masks stage: a pseudo mask for every id of the split (in parallel), resumable (finished
/// masks are skipped), atomic writes; an image that fails is reported and skipped.
pub fn run(config: &MasksConfig, progress: &dyn Progress) -> Result<MasksReport, MasksRunError> {
    config.options.validate().map_err(MasksRunError::Config)?;
    let ids = read_split(&config.split)?;
    for (what, dir) in [("CAMs", &config.cams), ("images", &config.images)] {
        if !dir.is_dir() {
            return Err(MasksRunError::Config(format!(
                "{} ({what}): not a directory",
                dir.display()
            )));
        }
    }
    // Outputs that cannot be written are found now, not after the work.
    for dir in std::iter::once(&config.out)
        .chain(config.save_confidence.as_ref())
        .chain(config.overlays.as_ref().map(|(d, _)| d))
    {
        crate::atomic::probe_dir(dir).map_err(MasksRunError::Config)?;
    }
    // Masks made with other settings are never kept as if they were this run's.
    let has_outputs = clip_es_data::manifest::holds_files(&config.out, &["png"]);
    manifest(config)
        .claim(&config.out, config.overwrite, has_outputs)
        .map_err(MasksRunError::Config)?;
    let kernels = KernelCache::default();
    let exif = ExifNotice::new(config.exif);
    let gate = crate::budget::MemoryGate::new(
        config
            .memory_limit
            .or_else(crate::budget::available_bytes)
            .unwrap_or(u64::MAX),
    );
    let results = for_each_image(&ids, config.threads, "masks", progress, |id| {
        mask_image(config, &gate, &kernels, &exif, progress, id)
    })
    .map_err(MasksRunError::Config)?;
    let mut report = MasksReport {
        images: ids.len(),
        ..MasksReport::default()
    };
    for (id, r) in results {
        match r {
            Ok(Outcome::Written) => report.written += 1,
            Ok(Outcome::Skipped) => report.skipped += 1,
            Err(e) => report.failures.push((id, e.to_string())),
        }
    }
    Ok(report)
}

/// The PASCAL VOC colour map (`bitget` construction), 256 RGB entries: 0 black, 255 cream.
pub fn voc_palette() -> Vec<u8> {
    let mut pal = Vec::with_capacity(768);
    for i in 0..256u32 {
        let (mut r, mut g, mut b) = (0u8, 0u8, 0u8);
        let mut c = i;
        for j in 0..8 {
            r |= ((c & 1) as u8) << (7 - j);
            g |= (((c >> 1) & 1) as u8) << (7 - j);
            b |= (((c >> 2) & 1) as u8) << (7 - j);
            c >>= 3;
        }
        pal.extend_from_slice(&[r, g, b]);
    }
    pal
}

/// Encodes an 8-bit label map as a PNG: grayscale (what `cv2.imwrite` writes for the
/// reference's masks) or indexed with the VOC palette.
pub fn encode_label_png(
    labels: &[u8],
    width: usize,
    height: usize,
    palette: bool,
) -> Result<Vec<u8>, png::EncodingError> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, width as u32, height as u32);
        enc.set_depth(png::BitDepth::Eight);
        if palette {
            enc.set_color(png::ColorType::Indexed);
            enc.set_palette(voc_palette());
        } else {
            enc.set_color(png::ColorType::Grayscale);
        }
        let mut writer = enc.write_header()?;
        writer.write_image_data(labels)?;
        writer.finish()?;
    }
    Ok(out)
}

/// An 8-bit label map read from a PNG.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelMap {
    pub width: usize,
    pub height: usize,
    pub labels: Vec<u8>,
}

/// Reads a label PNG as PIL's `np.array(Image.open(path))` does for VOC files: the palette
/// indices of an indexed PNG (any bit depth) or the values of a grayscale PNG of at most 8 bits.
/// Colour, 16-bit and alpha PNGs are errors.
pub fn read_label_png(path: &Path) -> Result<LabelMap, MaskError> {
    let file = std::fs::File::open(path).map_err(|source| MaskError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::IDENTITY);
    let bad = |e: png::DecodingError| MaskError::invalid(path, format!("not a readable PNG: {e}"));
    let mut reader = decoder.read_info().map_err(bad)?;
    let (color, depth) = reader.output_color_type();
    match color {
        png::ColorType::Indexed | png::ColorType::Grayscale => {}
        other => {
            return Err(MaskError::invalid(
                path,
                format!(
                "{other:?} PNG ({} channels); a label map must be a palette or single-channel PNG",
                other.samples()
            ),
            ))
        }
    }
    let bits = match depth {
        png::BitDepth::One => 1,
        png::BitDepth::Two => 2,
        png::BitDepth::Four => 4,
        png::BitDepth::Eight => 8,
        png::BitDepth::Sixteen => {
            return Err(MaskError::invalid(path, "16-bit PNG; label maps are 8-bit"))
        }
    };
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| MaskError::invalid(path, "PNG too large"))?;
    let mut buf = vec![0u8; size];
    let info = reader.next_frame(&mut buf).map_err(bad)?;
    let (w, h) = (info.width as usize, info.height as usize);
    let mut labels = Vec::with_capacity(w * h);
    for row in buf.chunks(info.line_size).take(h) {
        if bits == 8 {
            labels.extend_from_slice(&row[..w]);
        } else {
            let per_byte = 8 / bits;
            let mask = (1u8 << bits) - 1;
            for x in 0..w {
                let byte = row[x / per_byte];
                let shift = 8 - bits * (x % per_byte + 1);
                let v = (byte >> shift) & mask;
                // PIL reads 2- and 4-bit grayscale as "L", scaled to 0..255; 1-bit as "1", whose
                // array is boolean (0 / 1); palette indices stay as they are.
                let scaled = color == png::ColorType::Grayscale && bits > 1;
                labels.push(if scaled { v * (255 / mask) } else { v });
            }
        }
    }
    Ok(LabelMap {
        width: w,
        height: h,
        labels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_subtraction_wraps_like_numpy() {
        // Values checked against numpy 2.4 on x86-64: (v - mean).astype(float32).astype(uint8).
        let b = wrapped_mean_lut(MEAN_BGR[0]);
        assert_eq!((b[0], b[1], b[104], b[105], b[255]), (152, 153, 0, 0, 150));
        let r = wrapped_mean_lut(MEAN_BGR[2]);
        assert_eq!((r[0], r[122], r[123], r[255]), (134, 0, 0, 132));
        let img = Rgb8Image {
            width: 1,
            height: 1,
            data: vec![0, 0, 255],
        };
        assert_eq!(
            crf_input_image(&img, CrfImage::Reference),
            vec![b[255], 140, 134]
        );
        assert_eq!(crf_input_image(&img, CrfImage::Rgb), vec![0, 0, 255]);
    }

    #[test]
    fn background_is_one_minus_max_in_f16() {
        let cams: Vec<f16> = [0.25f32, 0.9, 0.5, 0.1]
            .iter()
            .map(|&v| f16::from_f32(v))
            .collect();
        let p = probabilities_with_background(&cams, 2);
        assert_eq!(p[0], f16::from_f32(0.5));
        assert_eq!(p[1], f16::from_f32(1.0 - f16::from_f32(0.9).to_f32()));
        assert_eq!(&p[2..], &cams[..]);
    }

    #[test]
    fn kernel_cache_shares_kernels_per_size() {
        let cache = KernelCache::new(2);
        let a = cache.gaussian(10, 8, 1.0, 3.0).unwrap();
        assert!(Arc::ptr_eq(&a, &cache.gaussian(10, 8, 1.0, 3.0).unwrap()));
        let b = cache.gaussian(8, 10, 1.0, 3.0).unwrap();
        assert!(!Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &cache.gaussian(10, 8, 2.0, 3.0).unwrap()));
        // Capacity 2: the 10 x 8, sxy 1 kernel was evicted and is rebuilt.
        assert!(!Arc::ptr_eq(&a, &cache.gaussian(10, 8, 1.0, 3.0).unwrap()));
        assert_eq!(a.num_points(), 80);
    }

    #[test]
    fn palette_matches_voc() {
        let p = voc_palette();
        assert_eq!(&p[0..3], &[0, 0, 0]);
        assert_eq!(&p[3..6], &[128, 0, 0]);
        assert_eq!(&p[15 * 3..15 * 3 + 3], &[192, 128, 128]);
        assert_eq!(&p[255 * 3..], &[224, 224, 192]);
    }

    #[test]
    fn label_png_round_trip() {
        let dir = std::env::temp_dir().join(format!("clip-es-masks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let labels: Vec<u8> = (0..35)
            .map(|i| if i % 7 == 0 { 255 } else { (i % 21) as u8 })
            .collect();
        for palette in [false, true] {
            let f = dir.join(format!("m{palette}.png"));
            std::fs::write(&f, encode_label_png(&labels, 7, 5, palette).unwrap()).unwrap();
            let got = read_label_png(&f).unwrap();
            assert_eq!((got.width, got.height), (7, 5));
            assert_eq!(got.labels, labels);
        }
        std::fs::write(dir.join("bad.png"), b"\x89PNG\r\n\x1a\nxxxx").unwrap();
        assert!(read_label_png(&dir.join("bad.png"))
            .unwrap_err()
            .to_string()
            .contains("bad.png"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
