//! Pairwise potentials of the fully connected CRF (Kraehenbuehl and Koltun, NIPS 2011, eq. 3):
//! a Gaussian kernel over feature vectors (position only, or position and colour: the
//! "appearance" or bilateral kernel), its normalisation, and a label compatibility. Mirrors
//! densecrf's `pairwise.cpp` (`DenseKernel` with `DIAG_KERNEL`), `labelcompatibility.cpp` and
//! `DenseCRF2D::addPairwiseGaussian` / `addPairwiseBilateral` in `densecrf.cpp`.

use crate::lattice::{FilterScratch, Permutohedral};
use crate::CrfError;

/// How the filtered messages are normalised (densecrf's `NormalizationType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Normalization {
    /// `NO_NORMALIZATION`: the raw lattice filter. (densecrf computes a mean normaliser for
    /// it but only uses it for learning, never in the filter.)
    None,
    /// `NORMALIZE_BEFORE`: inputs divided by the point's kernel sum.
    Before,
    /// `NORMALIZE_AFTER`: outputs divided by the point's kernel sum.
    After,
    /// `NORMALIZE_SYMMETRIC` (pydensecrf's default): inputs and outputs both multiplied by
    /// 1 / sqrt(kernel sum).
    #[default]
    Symmetric,
}

/// Label compatibility `mu(l, l')` (densecrf's `LabelCompatibility`).
#[derive(Clone, Debug, PartialEq)]
pub enum Compatibility {
    /// Potts model with weight `w`: the message for label `l` is `-w * (filtered Q_l)`.
    Potts(f32),
}

impl Compatibility {
    #[inline]
    fn apply(&self, filtered: f32) -> f32 {
        match *self {
            Compatibility::Potts(w) => -w * filtered,
        }
    }
}

/// Features `(x / sx, y / sy)` of every pixel of a `width` x `height` image, row by row.
pub fn gaussian_features(width: usize, height: usize, sx: f32, sy: f32) -> Vec<f32> {
    let mut f = Vec::with_capacity(width * height * 2);
    for y in 0..height {
        for x in 0..width {
            f.push(x as f32 / sx);
            f.push(y as f32 / sy);
        }
    }
    f
}

/// Features `(x / sx, y / sy, c0 / s0, c1 / s1, c2 / s2)` of every pixel, `image` being 8-bit
/// with three interleaved channels, row by row. (pydensecrf calls the channels r, g, b but uses
/// them in whatever order the caller supplies.)
pub fn bilateral_features(
    width: usize,
    height: usize,
    sx: f32,
    sy: f32,
    s_channels: [f32; 3],
    image: &[u8],
) -> Result<Vec<f32>, CrfError> {
    if image.len() != width * height * 3 {
        return Err(CrfError::Shape(format!(
            "image buffer of {} bytes is not {width} x {height} x 3",
            image.len()
        )));
    }
    let mut f = Vec::with_capacity(width * height * 5);
    for y in 0..height {
        for x in 0..width {
            let p = &image[(y * width + x) * 3..(y * width + x) * 3 + 3];
            f.push(x as f32 / sx);
            f.push(y as f32 / sy);
            f.push(p[0] as f32 / s_channels[0]);
            f.push(p[1] as f32 / s_channels[1]);
            f.push(p[2] as f32 / s_channels[2]);
        }
    }
    Ok(f)
}

/// One pairwise term: a Gaussian kernel on a permutohedral lattice, its normalisation and a
/// label compatibility.
#[derive(Clone, Debug)]
pub struct PairwiseKernel {
    lattice: Permutohedral,
    /// Per-point normalisation factor (meaning depends on `normalization`).
    norm: Vec<f32>,
    normalization: Normalization,
    compatibility: Compatibility,
}

impl PairwiseKernel {
    /// A kernel over arbitrary features (point-major, `dim` per point, already divided by the
    /// standard deviations), like pydensecrf's `addPairwiseEnergy`.
    pub fn new(
        features: &[f32],
        dim: usize,
        compatibility: Compatibility,
        normalization: Normalization,
    ) -> Result<Self, CrfError> {
        let lattice = Permutohedral::new(features, dim)?;
        let n = lattice.num_points();
        let mut norm = vec![0f32; n];
        lattice.filter(&vec![1f32; n], 1, &mut norm)?;
        match normalization {
            Normalization::None => norm.fill(1.0),
            // densecrf computes these in double (`1.0 / sqrt(norm + 1e-20)`) and stores floats.
            Normalization::Symmetric => {
                for v in &mut norm {
                    *v = (1.0 / (*v as f64 + 1e-20).sqrt()) as f32;
                }
            }
            Normalization::Before | Normalization::After => {
                for v in &mut norm {
                    *v = (1.0 / (*v as f64 + 1e-20)) as f32;
                }
            }
        }
        Ok(PairwiseKernel {
            lattice,
            norm,
            normalization,
            compatibility,
        })
    }

    /// Smoothness kernel on pixel positions (pydensecrf `addPairwiseGaussian(sxy, compat)`).
    pub fn gaussian(
        width: usize,
        height: usize,
        sxy: f32,
        compatibility: Compatibility,
    ) -> Result<Self, CrfError> {
        let f = gaussian_features(width, height, sxy, sxy);
        Self::new(&f, 2, compatibility, Normalization::Symmetric)
    }

    /// Appearance kernel on position and colour (pydensecrf
    /// `addPairwiseBilateral(sxy, srgb, rgbim, compat)`), `image` 8-bit interleaved 3-channel.
    pub fn bilateral(
        width: usize,
        height: usize,
        sxy: f32,
        srgb: f32,
        image: &[u8],
        compatibility: Compatibility,
    ) -> Result<Self, CrfError> {
        let f = bilateral_features(width, height, sxy, sxy, [srgb; 3], image)?;
        Self::new(&f, 5, compatibility, Normalization::Symmetric)
    }

    /// Number of points (pixels).
    pub fn num_points(&self) -> usize {
        self.lattice.num_points()
    }

    /// The lattice the kernel filters on.
    pub fn lattice(&self) -> &Permutohedral {
        &self.lattice
    }

    /// The normalised kernel applied to `q` (point-major, `n_labels` per point), without the
    /// compatibility: densecrf's `DenseKernel::apply`.
    pub fn filter(&self, q: &[f32], n_labels: usize, out: &mut [f32]) -> Result<(), CrfError> {
        self.filter_with_scratch(q, n_labels, out, &mut KernelScratch::default())
    }

    fn filter_with_scratch(
        &self,
        q: &[f32],
        n_labels: usize,
        out: &mut [f32],
        scratch: &mut KernelScratch,
    ) -> Result<(), CrfError> {
        let n = self.num_points();
        if q.len() != n * n_labels || out.len() != n * n_labels {
            return Err(CrfError::Shape(format!(
                "kernel over {n} points got {} and {} values for {n_labels} labels",
                q.len(),
                out.len()
            )));
        }
        let post = self.post_scale();
        self.lattice.filter_map(
            q,
            n_labels,
            self.pre_scale(),
            false,
            &mut scratch.lattice,
            |i, lane0, v| {
                let o = &mut out[i * n_labels + lane0..][..v.len()];
                match post {
                    Some(s) => o.iter_mut().zip(v).for_each(|(o, &x)| *o = x * s[i]),
                    None => o.copy_from_slice(v),
                }
            },
        )
    }

    /// densecrf multiplies the input by the norm for NORMALIZE_SYMMETRIC and NORMALIZE_BEFORE.
    fn pre_scale(&self) -> Option<&[f32]> {
        matches!(
            self.normalization,
            Normalization::Symmetric | Normalization::Before
        )
        .then_some(&self.norm[..])
    }

    /// ... and the output for NORMALIZE_SYMMETRIC and NORMALIZE_AFTER.
    fn post_scale(&self) -> Option<&[f32]> {
        matches!(
            self.normalization,
            Normalization::Symmetric | Normalization::After
        )
        .then_some(&self.norm[..])
    }

    /// Subtracts this term's message from `acc` (densecrf: `pairwise.apply(tmp2, Q);
    /// tmp1 -= tmp2`), i.e. `acc -= compat(filter(q))`, with `scratch` as working memory. The
    /// scalings, compatibility and subtraction happen inside the lattice passes, in densecrf's
    /// order for every element.
    pub fn subtract_message(
        &self,
        q: &[f32],
        n_labels: usize,
        acc: &mut [f32],
        scratch: &mut KernelScratch,
    ) -> Result<(), CrfError> {
        if acc.len() != q.len() {
            return Err(CrfError::Shape(format!(
                "message of {} values for {} marginals",
                acc.len(),
                q.len()
            )));
        }
        let post = self.post_scale();
        let compat = &self.compatibility;
        self.lattice.filter_map(
            q,
            n_labels,
            self.pre_scale(),
            false,
            &mut scratch.lattice,
            |i, lane0, v| {
                let a = &mut acc[i * n_labels + lane0..][..v.len()];
                match post {
                    Some(s) => a
                        .iter_mut()
                        .zip(v)
                        .for_each(|(a, &x)| *a -= compat.apply(x * s[i])),
                    None => a
                        .iter_mut()
                        .zip(v)
                        .for_each(|(a, &x)| *a -= compat.apply(x)),
                }
            },
        )
    }
}

/// Reusable buffers for `PairwiseKernel::subtract_message`.
#[derive(Clone, Debug, Default)]
pub struct KernelScratch {
    lattice: FilterScratch,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_are_divided_by_the_deviations() {
        let f = gaussian_features(3, 2, 2.0, 4.0);
        assert_eq!(
            f,
            vec![0.0, 0.0, 0.5, 0.0, 1.0, 0.0, 0.0, 0.25, 0.5, 0.25, 1.0, 0.25]
        );
        let img = [0u8, 3, 6, 9, 12, 15];
        let b = bilateral_features(2, 1, 1.0, 1.0, [3.0, 3.0, 1.5], &img).unwrap();
        assert_eq!(b, vec![0.0, 0.0, 0.0, 1.0, 4.0, 1.0, 0.0, 3.0, 4.0, 10.0]);
        assert!(bilateral_features(2, 2, 1.0, 1.0, [1.0; 3], &img).is_err());
    }

    #[test]
    fn potts_message_is_minus_weight_times_filtered() {
        assert_eq!(Compatibility::Potts(3.0).apply(2.0), -6.0);
    }

    #[test]
    fn symmetric_normalisation_makes_a_constant_field_nearly_constant() {
        // With symmetric normalisation a constant field maps to about the constant everywhere
        // away from the border (the kernel rows sum to ~1 there).
        let k = PairwiseKernel::gaussian(40, 30, 3.0, Compatibility::Potts(1.0)).unwrap();
        let q = vec![1.0f32; 40 * 30];
        let mut out = vec![0.0; q.len()];
        k.filter(&q, 1, &mut out).unwrap();
        for y in 10..20 {
            for x in 10..30 {
                let v = out[y * 40 + x];
                assert!((v - 1.0).abs() < 0.05, "({x},{y}) {v}");
            }
        }
    }

    #[test]
    fn gaussian_kernel_decays_with_distance() {
        let k = PairwiseKernel::gaussian(31, 31, 3.0, Compatibility::Potts(1.0)).unwrap();
        let mut q = vec![0.0f32; 31 * 31];
        q[15 * 31 + 15] = 1.0;
        let mut out = vec![0.0; q.len()];
        k.filter(&q, 1, &mut out).unwrap();
        let at = |dx: usize| out[15 * 31 + 15 + dx];
        assert!(at(0) > at(2) && at(2) > at(4) && at(4) > at(8) && at(8) >= 0.0);
        // The lattice kernel is a Gaussian of deviation about 1 in feature units (here 3 px):
        // the ratio at 3 px should be near exp(-1/2).
        let ratio = at(3) / at(0);
        assert!((ratio - (-0.5f32).exp()).abs() < 0.2, "{ratio}");
    }

    #[test]
    fn bilateral_kernel_does_not_cross_strong_edges() {
        // Two halves of very different colour: a message from the left half barely reaches
        // the right half, while it spreads within the left one.
        let (w, h) = (20, 10);
        let mut img = vec![0u8; w * h * 3];
        for y in 0..h {
            for x in w / 2..w {
                img[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&[250, 250, 250]);
            }
        }
        let k =
            PairwiseKernel::bilateral(w, h, 10.0, 3.0, &img, Compatibility::Potts(1.0)).unwrap();
        let mut q = vec![0.0f32; w * h];
        q[5 * w + 8] = 1.0;
        let mut out = vec![0.0; q.len()];
        k.filter(&q, 1, &mut out).unwrap();
        assert!(out[5 * w + 6] > 0.01, "{}", out[5 * w + 6]);
        assert!(out[5 * w + 11] < 1e-6, "{}", out[5 * w + 11]);
    }
}
