//! A pseudo mask of one image (docs/algorithm.md, "Pseudo masks"; reference
//! `eval_cam_with_crf.py`): CAMs plus background score -> dense CRF ([`super::crf`]) -> label
//! map; pixels whose CRF marginal is below the confidence threshold become the ignore label 255.

use super::crf::{
    dense_crf_until, probabilities_with_background, CrfImage, CrfParams, KernelCache,
};
use crate::argmax::argmax_with_background;
use crate::cam_files::{CamFile, CamIoError, CamKind};
use crate::classes::{BACKGROUND_LABEL, IGNORE_LABEL};
use clip_es_crf::unary_from_f16_probabilities;
use clip_es_image::Rgb8Image;
use std::path::{Path, PathBuf};

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
