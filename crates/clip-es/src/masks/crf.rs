//! The dense CRF of the pseudo masks (docs/algorithm.md, "Pseudo masks"; reference
//! `eval_cam_with_crf.py`, `DenseCRF`), wired to `clip-es-crf`: its settings, the image the
//! bilateral kernel sees (the reference's BGR minus the mean, wrapped to uint8, or true RGB),
//! the background probability `1 - max_k cam_k` in float16, and the Gaussian kernels shared
//! between images of one size. Used by the mask stage and by `predict`'s `--crf`.

use crate::argmax::{background_score, first_max};
use clip_es_crf::{Compatibility, CrfError, DenseCrf, PairwiseKernel};
use clip_es_image::Rgb8Image;
use half::f16;
use std::sync::{Arc, Mutex};

/// The reference's BGR mean (the Caffe mean), subtracted before the wrapping uint8 cast.
pub use clip_es_data::CAFFE_MEAN_BGR as MEAN_BGR;

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
}
