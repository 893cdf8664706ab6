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

/// Label compatibility `mu(l, l')` (densecrf's `LabelCompatibility`, `labelcompatibility.cpp`).
/// The message is subtracted from the energy, so note the signs: densecrf's Potts model negates
/// its weight, its diagonal and matrix models do not.
#[derive(Clone, Debug, PartialEq)]
pub enum Compatibility {
    /// Potts model with weight `w`: the message for label `l` is `-w * (filtered Q_l)`.
    Potts(f32),
    /// One weight per label (`DiagonalCompatibility`): the message for label `l` is
    /// `w[l] * (filtered Q_l)`.
    Diagonal(Vec<f32>),
    /// A full `n_labels` x `n_labels` matrix `m`, row-major (`MatrixCompatibility`): densecrf
    /// symmetrises it to `w = (m + m^T) / 2` and the message for label `l` is
    /// `sum_j w[l][j] * (filtered Q_j)`, summed in label order.
    Matrix { n_labels: usize, weights: Vec<f32> },
}

impl Compatibility {
    /// A matrix compatibility from a row-major `n_labels` x `n_labels` matrix, symmetrised as
    /// densecrf does.
    pub fn matrix(n_labels: usize, m: &[f32]) -> Result<Self, CrfError> {
        if m.len() != n_labels * n_labels {
            return Err(CrfError::Shape(format!(
                "compatibility matrix of {} values is not {n_labels} x {n_labels}",
                m.len()
            )));
        }
        check_finite(m, "compatibility matrix")?;
        let mut weights = vec![0f32; m.len()];
        for i in 0..n_labels {
            for j in 0..n_labels {
                weights[i * n_labels + j] = 0.5 * (m[i * n_labels + j] + m[j * n_labels + i]);
            }
        }
        Ok(Compatibility::Matrix { n_labels, weights })
    }

    /// The number of labels the compatibility is made for (`None` for Potts, which fits any).
    pub fn num_labels(&self) -> Option<usize> {
        match self {
            Compatibility::Potts(_) => None,
            Compatibility::Diagonal(w) => Some(w.len()),
            Compatibility::Matrix { n_labels, .. } => Some(*n_labels),
        }
    }

    /// The element-wise message of label `label` (Potts and diagonal models).
    #[inline]
    fn apply(&self, label: usize, filtered: f32) -> f32 {
        match self {
            Compatibility::Potts(w) => -*w * filtered,
            Compatibility::Diagonal(w) => w[label] * filtered,
            Compatibility::Matrix { .. } => unreachable!("matrix messages mix labels"),
        }
    }
}

fn check_finite(values: &[f32], what: &str) -> Result<(), CrfError> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(p) => Err(CrfError::NonFinite(format!(
            "{what} at index {p} is {}",
            values[p]
        ))),
        None => Ok(()),
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
        match &compatibility {
            Compatibility::Potts(w) => check_finite(&[*w], "Potts weight")?,
            Compatibility::Diagonal(w) => check_finite(w, "compatibility vector")?,
            Compatibility::Matrix { .. } => {}
        }
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

    /// The label compatibility of the term.
    pub fn compatibility(&self) -> &Compatibility {
        &self.compatibility
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
        if let Some(m) = self.compatibility.num_labels() {
            if m != n_labels {
                return Err(CrfError::Shape(format!(
                    "label compatibility for {m} labels used with {n_labels} labels"
                )));
            }
        }
        let post = self.post_scale();
        let compat = &self.compatibility;
        if let Compatibility::Matrix { weights, .. } = compat {
            // The message of each label mixes all filtered labels: filter first, then
            // `acc -= w * filtered` per point, summed in the order of Eigen 3.3's matrix product
            // (`matrix_message`).
            let mut filtered = std::mem::take(&mut scratch.filtered);
            filtered.resize(q.len(), 0.0);
            self.filter_with_scratch(q, n_labels, &mut filtered, scratch)?;
            let n = filtered.len() / n_labels;
            for (i, (a, f)) in acc
                .chunks_exact_mut(n_labels)
                .zip(filtered.chunks_exact(n_labels))
                .enumerate()
            {
                matrix_message(weights, f, i < n / 4 * 4, a);
            }
            scratch.filtered = filtered;
            return Ok(());
        }
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
                        .enumerate()
                        .for_each(|(k, (a, &x))| *a -= compat.apply(lane0 + k, x * s[i])),
                    None => a
                        .iter_mut()
                        .zip(v)
                        .enumerate()
                        .for_each(|(k, (a, &x))| *a -= compat.apply(lane0 + k, x)),
                }
            },
        )
    }
}

/// `acc[l] -= sum_j w[l][j] * f[j]` for one point, in the summation order of Eigen 3.3's
/// general matrix product (pydensecrf at commit 2723c7fa bundles Eigen 3.3.9:
/// `Eigen/src/Core/products/GeneralBlockPanelKernel.h` lines 1521-1590; SSE2, no FMA) computing densecrf's
/// `w * Q` with the labels as rows and the points as columns: rows in whole packets of four
/// labels accumulate over `j` in order; each remaining row, at points that fall in a group of
/// four columns (`in_column_packet`), accumulates `j` modulo 4 in four partial sums, adds them
/// as `(s0 + s1) + (s2 + s3)`, then the remaining `j` in order.
fn matrix_message(w: &[f32], f: &[f32], in_column_packet: bool, acc: &mut [f32]) {
    let m = f.len();
    let packed_rows = m / 4 * 4;
    for (l, a) in acc.iter_mut().enumerate() {
        let row = &w[l * m..(l + 1) * m];
        let s = if l < packed_rows || !in_column_packet {
            let mut s = 0f32;
            for (&wj, &fj) in row.iter().zip(f) {
                s += wj * fj;
            }
            s
        } else {
            let end4 = m / 4 * 4;
            let mut p = [0f32; 4];
            for k in (0..end4).step_by(4) {
                for r in 0..4 {
                    p[r] += row[k + r] * f[k + r];
                }
            }
            let mut s = (p[0] + p[1]) + (p[2] + p[3]);
            for k in end4..m {
                s += row[k] * f[k];
            }
            s
        };
        *a -= s;
    }
}

/// Reusable buffers for `PairwiseKernel::subtract_message`.
#[derive(Clone, Debug, Default)]
pub struct KernelScratch {
    lattice: FilterScratch,
    /// Filtered marginals, for the matrix compatibility.
    filtered: Vec<f32>,
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
        assert_eq!(Compatibility::Potts(3.0).apply(0, 2.0), -6.0);
        assert_eq!(Compatibility::Diagonal(vec![1.0, 3.0]).apply(1, 2.0), 6.0);
    }

    #[test]
    fn matrix_compatibility_is_symmetrised_and_checked() {
        let c = Compatibility::matrix(2, &[1.0, 2.0, 4.0, 3.0]).unwrap();
        assert_eq!(
            c,
            Compatibility::Matrix {
                n_labels: 2,
                weights: vec![1.0, 3.0, 3.0, 3.0]
            }
        );
        assert!(Compatibility::matrix(2, &[1.0; 3]).is_err());
        assert!(Compatibility::matrix(1, &[f32::NAN]).is_err());
        // A matrix compatibility equal to -w * identity gives the Potts messages.
        let (w, h) = (9, 7);
        let f = gaussian_features(w, h, 2.0, 2.0);
        let q: Vec<f32> = (0..w * h * 3).map(|i| (i % 5) as f32 * 0.2).collect();
        let run = |c: Compatibility| {
            let k = PairwiseKernel::new(&f, 2, c, Normalization::Symmetric).unwrap();
            let mut acc = vec![0.5f32; q.len()];
            k.subtract_message(&q, 3, &mut acc, &mut KernelScratch::default())
                .unwrap();
            acc
        };
        let eye = [-2.0, 0.0, 0.0, 0.0, -2.0, 0.0, 0.0, 0.0, -2.0];
        assert_eq!(
            run(Compatibility::matrix(3, &eye).unwrap()),
            run(Compatibility::Potts(2.0))
        );
        assert_eq!(
            run(Compatibility::Diagonal(vec![-2.0; 3])),
            run(Compatibility::Potts(2.0))
        );
        let k = PairwiseKernel::new(
            &f,
            2,
            Compatibility::Diagonal(vec![1.0; 2]),
            Normalization::None,
        )
        .unwrap();
        let mut acc = vec![0f32; q.len()];
        assert!(k
            .subtract_message(&q, 3, &mut acc, &mut KernelScratch::default())
            .is_err());
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
