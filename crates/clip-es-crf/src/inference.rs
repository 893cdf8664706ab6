//! Mean-field inference of the fully connected CRF (Kraehenbuehl and Koltun, NIPS 2011,
//! algorithm 1), mirroring densecrf's `DenseCRF::inference` and `expAndNormalize`
//! (`densecrf.cpp`) as compiled by pydensecrf: Eigen 3.3 with SSE2, whose `exp` runs the Cephes
//! polynomial (`pexp<Packet4f>`) on whole packets of four labels and the C library's `expf` on
//! the rest, and whose sums add packets of four before the remaining labels.

use crate::kernel::{KernelScratch, PairwiseKernel};
use crate::{zeroed, CrfError};
use std::sync::Arc;

/// A CRF over `n_points` variables taking `n_labels` labels: a unary energy and pairwise terms.
#[derive(Clone, Debug)]
pub struct DenseCrf {
    n_points: usize,
    n_labels: usize,
    /// Unary energies, point-major (`unary[i*n_labels + l]`); zero when not set.
    unary: Vec<f32>,
    /// Whether a unary energy was set (densecrf's `startInference` starts from zeros without).
    has_unary: bool,
    pairwise: Vec<Arc<PairwiseKernel>>,
}

/// Marginals `Q_i(l)` after inference, point-major (`values[i*n_labels + l]`), like the memory
/// of densecrf's column-major `MatrixXf`.
#[derive(Clone, Debug, PartialEq)]
pub struct Marginals {
    pub n_labels: usize,
    pub values: Vec<f32>,
}

impl Marginals {
    /// Per point: the label of the largest marginal (the first one on ties, like numpy's
    /// `argmax`) and that marginal.
    pub fn argmax(&self) -> Vec<(usize, f32)> {
        self.values
            .chunks_exact(self.n_labels)
            .map(|p| {
                let mut best = 0;
                for (l, &v) in p.iter().enumerate().skip(1) {
                    // As numpy: the first NaN wins, else the first maximum.
                    if p[best].is_nan() {
                        break;
                    }
                    if v.is_nan() || v > p[best] {
                        best = l;
                    }
                }
                (best, p[best])
            })
            .collect()
    }

    /// The marginals label-major (`[l*n + i]`), the layout of pydensecrf's
    /// `np.array(d.inference(n))`.
    pub fn label_major(&self) -> Vec<f32> {
        let n = self.values.len() / self.n_labels;
        let mut out = vec![0f32; self.values.len()];
        for (i, p) in self.values.chunks_exact(self.n_labels).enumerate() {
            for (l, &v) in p.iter().enumerate() {
                out[l * n + i] = v;
            }
        }
        out
    }
}

impl DenseCrf {
    pub fn new(n_points: usize, n_labels: usize) -> Result<Self, CrfError> {
        if n_points == 0 || n_labels == 0 {
            return Err(CrfError::Shape(format!(
                "CRF of {n_points} points and {n_labels} labels"
            )));
        }
        let len = n_points.checked_mul(n_labels).ok_or_else(|| {
            CrfError::Memory(format!(
                "a CRF of {n_points} points and {n_labels} labels has more values than memory \
                 can address"
            ))
        })?;
        Ok(DenseCrf {
            n_points,
            n_labels,
            unary: zeroed(len, "unary energies")?,
            has_unary: false,
            pairwise: Vec::new(),
        })
    }

    pub fn num_points(&self) -> usize {
        self.n_points
    }

    pub fn num_labels(&self) -> usize {
        self.n_labels
    }

    /// Sets the unary energies from a label-major buffer (`[l*n + i]`, pydensecrf's
    /// `setUnaryEnergy(U)` with `U` of shape (labels, points)).
    pub fn set_unary_label_major(&mut self, unary: &[f32]) -> Result<(), CrfError> {
        self.check_len(unary.len(), "unary")?;
        check_finite(unary, "unary energy")?;
        let n = self.n_points;
        for (i, p) in self.unary.chunks_exact_mut(self.n_labels).enumerate() {
            for (l, v) in p.iter_mut().enumerate() {
                *v = unary[l * n + i];
            }
        }
        self.has_unary = true;
        Ok(())
    }

    /// Sets the unary energies from a point-major buffer (`[i*n_labels + l]`).
    pub fn set_unary(&mut self, unary: &[f32]) -> Result<(), CrfError> {
        self.check_len(unary.len(), "unary")?;
        check_finite(unary, "unary energy")?;
        self.unary.copy_from_slice(unary);
        self.has_unary = true;
        Ok(())
    }

    /// Adds a pairwise term; terms are applied in the order they are added. A kernel shared
    /// through an `Arc` can serve many CRFs (e.g. the position-only kernel of every image of one
    /// size).
    pub fn add_pairwise(&mut self, kernel: impl Into<Arc<PairwiseKernel>>) -> Result<(), CrfError> {
        let kernel = kernel.into();
        if kernel.num_points() != self.n_points {
            return Err(CrfError::Shape(format!(
                "pairwise kernel over {} points added to a CRF of {} points",
                kernel.num_points(),
                self.n_points
            )));
        }
        if let Some(m) = kernel.compatibility().num_labels() {
            if m != self.n_labels {
                return Err(CrfError::Shape(format!(
                    "label compatibility for {m} labels added to a CRF of {} labels",
                    self.n_labels
                )));
            }
        }
        self.pairwise.push(kernel);
        Ok(())
    }

    /// Runs `iterations` mean-field updates from `Q = softmax(-unary)`:
    /// `Q <- softmax(-unary - sum_k compat_k(filter_k(Q)))`.
    pub fn inference(&self, iterations: usize) -> Result<Marginals, CrfError> {
        self.inference_until(iterations, &|| false)
    }

    /// [`DenseCrf::inference`] that asks `stop` before each iteration and returns
    /// [`CrfError::Stopped`] once it says yes (how a front end lets the user interrupt a long
    /// inference).
    pub fn inference_until(
        &self,
        iterations: usize,
        stop: &dyn Fn() -> bool,
    ) -> Result<Marginals, CrfError> {
        let m = self.n_labels;
        let mut neg_unary = zeroed(self.unary.len(), "negated unary energies")?;
        for (d, &u) in neg_unary.iter_mut().zip(&self.unary) {
            *d = -u;
        }
        let mut q = zeroed(neg_unary.len(), "marginals")?;
        exp_and_normalize(&neg_unary, m, &mut q);
        let mut energy = zeroed(neg_unary.len(), "energies")?;
        let mut scratch = KernelScratch::default();
        for _ in 0..iterations {
            if stop() {
                return Err(CrfError::Stopped);
            }
            energy.copy_from_slice(&neg_unary);
            for k in &self.pairwise {
                k.subtract_message(&q, m, &mut energy, &mut scratch)?;
            }
            exp_and_normalize(&energy, m, &mut q);
        }
        Ok(Marginals {
            n_labels: m,
            values: q,
        })
    }

    /// The starting marginals of a step-by-step inference, point-major: `softmax(-unary)`, or
    /// all zeros when no unary energy was set (densecrf's `startInference`).
    pub fn start_inference(&self) -> Result<Vec<f32>, CrfError> {
        let mut q = zeroed(self.unary.len(), "marginals")?;
        if self.has_unary {
            let mut neg_unary = zeroed(self.unary.len(), "negated unary energies")?;
            for (d, &u) in neg_unary.iter_mut().zip(&self.unary) {
                *d = -u;
            }
            exp_and_normalize(&neg_unary, self.n_labels, &mut q);
        }
        Ok(q)
    }

    /// One mean-field update of the point-major marginals `q` in place (densecrf's
    /// `stepInference`); `inference(n)` is `start_inference` then `n` of these.
    pub fn step_inference(&self, q: &mut [f32]) -> Result<(), CrfError> {
        self.check_len(q.len(), "marginals")?;
        let mut energy = zeroed(q.len(), "energies")?;
        for (e, &u) in energy.iter_mut().zip(&self.unary) {
            *e = -u;
        }
        let mut scratch = KernelScratch::default();
        for k in &self.pairwise {
            k.subtract_message(q, self.n_labels, &mut energy, &mut scratch)?;
        }
        exp_and_normalize(&energy, self.n_labels, q);
        Ok(())
    }

    /// The KL divergence between the point-major marginals `q` and the CRF's distribution, up
    /// to the constant log partition function (densecrf's `klDivergence`): the negative
    /// entropy `sum q log max(q, 1e-20)`, plus `sum unary * q`, plus per pairwise term
    /// `sum q * message(q)`. As densecrf: the first two summed in double precision point by
    /// point, each pairwise sum in single precision in Eigen's order.
    pub fn kl_divergence(&self, q: &[f32]) -> Result<f64, CrfError> {
        self.check_len(q.len(), "marginals")?;
        let mut kl = 0f64;
        for &v in q {
            kl += v as f64 * (v.max(1e-20) as f64).ln();
        }
        if self.has_unary {
            for (&u, &v) in self.unary.iter().zip(q) {
                kl += (u * v) as f64;
            }
        }
        let mut message = zeroed(q.len(), "messages")?;
        let mut products = zeroed(q.len(), "messages")?;
        let mut scratch = KernelScratch::default();
        for k in &self.pairwise {
            // `subtract_message` from zero leaves the negated message; negation is exact.
            message.fill(0.0);
            k.subtract_message(q, self.n_labels, &mut message, &mut scratch)?;
            for ((p, &a), &b) in products.iter_mut().zip(q).zip(&message) {
                *p = a * -b;
            }
            kl += eigen_sum(&products) as f64;
        }
        Ok(kl)
    }

    fn check_len(&self, len: usize, what: &str) -> Result<(), CrfError> {
        if len != self.n_points * self.n_labels {
            return Err(CrfError::Shape(format!(
                "{what} of {len} values for {} points x {} labels",
                self.n_points, self.n_labels
            )));
        }
        Ok(())
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

/// Per point: `out = exp(x - max x) / sum exp(x - max x)`, with Eigen's order of operations.
pub fn exp_and_normalize(input: &[f32], n_labels: usize, out: &mut [f32]) {
    // Fixed label counts let the compiler unroll and vectorise the per-point work.
    match n_labels {
        2 => exp_and_normalize_n::<2>(input, out),
        3 => exp_and_normalize_n::<3>(input, out),
        4 => exp_and_normalize_n::<4>(input, out),
        5 => exp_and_normalize_n::<5>(input, out),
        6 => exp_and_normalize_n::<6>(input, out),
        7 => exp_and_normalize_n::<7>(input, out),
        8 => exp_and_normalize_n::<8>(input, out),
        _ => exp_and_normalize_dyn(input, n_labels, out),
    }
}

fn exp_and_normalize_n<const M: usize>(input: &[f32], out: &mut [f32]) {
    let packed = M / 4 * 4;
    for (src, dst) in input.chunks_exact(M).zip(out.chunks_exact_mut(M)) {
        let src: &[f32; M] = src.try_into().expect("chunk of M");
        let dst: &mut [f32; M] = dst.try_into().expect("chunk of M");
        let mut mx = src[0];
        for &v in &src[1..] {
            if v > mx {
                mx = v;
            }
        }
        let mut b = [0f32; M];
        for k in 0..M {
            b[k] = src[k] - mx;
        }
        for p in (0..packed).step_by(4) {
            let e = eigen_pexp4([b[p], b[p + 1], b[p + 2], b[p + 3]]);
            b[p..p + 4].copy_from_slice(&e);
        }
        for v in &mut b[packed..] {
            *v = v.exp();
        }
        let sum = eigen_sum(&b);
        for k in 0..M {
            dst[k] = b[k] / sum;
        }
    }
}

fn exp_and_normalize_dyn(input: &[f32], n_labels: usize, out: &mut [f32]) {
    let packed = n_labels / 4 * 4;
    for (src, dst) in input
        .chunks_exact(n_labels)
        .zip(out.chunks_exact_mut(n_labels))
    {
        let mut mx = src[0];
        for &v in &src[1..] {
            if v > mx {
                mx = v;
            }
        }
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = s - mx;
        }
        for p in (0..packed).step_by(4) {
            let e = eigen_pexp4([dst[p], dst[p + 1], dst[p + 2], dst[p + 3]]);
            dst[p..p + 4].copy_from_slice(&e);
        }
        for d in &mut dst[packed..] {
            *d = d.exp();
        }
        let sum = eigen_sum(dst);
        for d in dst.iter_mut() {
            *d /= sum;
        }
    }
}

/// Eigen 3.3's linear-vectorised sum of a 16-byte aligned float vector (SSE2): packets of four
/// (two interleaved accumulators from eight on), reduced as (a0 + a2) + (a1 + a3), then the
/// remaining elements one by one.
#[inline]
pub fn eigen_sum(b: &[f32]) -> f32 {
    let size = b.len();
    let aligned = size / 4 * 4;
    if aligned == 0 {
        let mut r = b[0];
        for &v in &b[1..] {
            r += v;
        }
        return r;
    }
    let aligned2 = size / 8 * 8;
    let add = |a: [f32; 4], c: &[f32]| [a[0] + c[0], a[1] + c[1], a[2] + c[2], a[3] + c[3]];
    let mut p0 = [b[0], b[1], b[2], b[3]];
    if aligned > 4 {
        let mut p1 = [b[4], b[5], b[6], b[7]];
        let mut i = 8;
        while i < aligned2 {
            p0 = add(p0, &b[i..i + 4]);
            p1 = add(p1, &b[i + 4..i + 8]);
            i += 8;
        }
        p0 = add(p0, &p1);
        if aligned > aligned2 {
            p0 = add(p0, &b[aligned2..aligned2 + 4]);
        }
    }
    let mut r = (p0[0] + p0[2]) + (p0[1] + p0[3]);
    for &v in &b[aligned..] {
        r += v;
    }
    r
}

/// Eigen 3.3's `pexp<Packet4f>` for SSE2 (Cephes `expf`), one lane. No fused multiply-add:
/// SSE2 `pmadd` is a multiply then an add.
#[inline]
#[allow(clippy::excessive_precision, clippy::approx_constant)]
pub fn eigen_pexp(x_in: f32) -> f32 {
    // Eigen's literals, verbatim.
    const EXP_HI: f32 = 88.3762626647950;
    const EXP_LO: f32 = -88.3762626647949;
    const LOG2EF: f32 = 1.44269504088896341;
    const C1: f32 = 0.693359375;
    const C2: f32 = -2.12194440e-4;
    const P0: f32 = 1.9875691500E-4;
    const P1: f32 = 1.3981999507E-3;
    const P2: f32 = 8.3334519073E-3;
    const P3: f32 = 4.1665795894E-2;
    const P4: f32 = 1.6666665459E-1;
    const P5: f32 = 5.0000001201E-1;
    // _mm_min_ps / _mm_max_ps return the second operand unless the first compares smaller /
    // larger.
    let mut x = if x_in < EXP_HI { x_in } else { EXP_HI };
    x = if x > EXP_LO { x } else { EXP_LO };
    let mut fx = x * LOG2EF + 0.5;
    // floor by truncation, minus one where truncation rounded up.
    let t = (fx as i32) as f32;
    fx = if t > fx { t - 1.0 } else { t };
    let tmp = fx * C1;
    let z = fx * C2;
    x -= tmp;
    x -= z;
    let z = x * x;
    let mut y = P0;
    y = y * x + P1;
    y = y * x + P2;
    y = y * x + P3;
    y = y * x + P4;
    y = y * x + P5;
    y = y * z + x;
    y += 1.0;
    let n = (fx as i32).wrapping_add(0x7f) << 23;
    let r = y * f32::from_bits(n as u32);
    if r > x_in {
        r
    } else {
        x_in
    }
}

/// `eigen_pexp` on a packet of four lanes, written lane-wise so that it compiles to SSE.
#[inline]
pub fn eigen_pexp4(x: [f32; 4]) -> [f32; 4] {
    [
        eigen_pexp(x[0]),
        eigen_pexp(x[1]),
        eigen_pexp(x[2]),
        eigen_pexp(x[3]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pexp_is_close_to_exp() {
        let mut x = -30.0f32;
        while x <= 0.0 {
            let (a, b) = (eigen_pexp(x), x.exp());
            assert!((a - b).abs() <= 2e-7 * b, "{x}: {a} {b}");
            x += 0.0137;
        }
        assert_eq!(eigen_pexp(0.0), 1.0);
    }

    #[test]
    fn packet_exp_equals_the_scalar_one() {
        let mut x = -40.0f32;
        while x <= 0.0 {
            let p = eigen_pexp4([x, x * 0.5, x * 0.25, -x * 0.01]);
            assert_eq!(
                p.map(f32::to_bits),
                [x, x * 0.5, x * 0.25, -x * 0.01].map(|v| eigen_pexp(v).to_bits())
            );
            x += 0.173;
        }
    }

    #[test]
    fn eigen_sum_orders() {
        let v = [1e8f32, 1.0, -1e8, 1.0, 0.5];
        // (1e8 + -1e8) + (1 + 1) + 0.5
        assert_eq!(eigen_sum(&v), 2.5);
        let s: Vec<f32> = (0..13).map(|i| i as f32 * 0.1).collect();
        let seq: f32 = s.iter().sum();
        assert!((eigen_sum(&s) - seq).abs() < 1e-5);
        assert_eq!(eigen_sum(&[1.0, 2.0, 3.0]), 6.0);
    }

    #[test]
    fn softmax_rows_sum_to_one() {
        for m in 1..12 {
            let x: Vec<f32> = (0..m * 5).map(|i| ((i * 31 % 13) as f32) * -0.7).collect();
            let mut q = vec![0f32; x.len()];
            exp_and_normalize(&x, m, &mut q);
            for p in q.chunks(m) {
                let s: f32 = p.iter().sum();
                assert!((s - 1.0).abs() < 1e-6, "{m} {p:?}");
            }
        }
    }

    #[test]
    fn argmax_takes_the_first_maximum() {
        let q = Marginals {
            n_labels: 3,
            values: vec![0.2, 0.4, 0.4, 0.5, 0.25, 0.25],
        };
        assert_eq!(q.argmax(), vec![(1, 0.4), (0, 0.5)]);
        assert_eq!(q.label_major(), vec![0.2, 0.5, 0.4, 0.25, 0.4, 0.25]);
    }

    #[test]
    fn without_pairwise_terms_inference_is_the_softmax_of_the_unary() {
        let mut crf = DenseCrf::new(2, 2).unwrap();
        crf.set_unary_label_major(&[1.0, 0.0, 0.0, 1.0]).unwrap();
        let q = crf.inference(3).unwrap();
        let e = (-1.0f32).exp();
        let a = e / (e + 1.0);
        assert!(
            (q.values[0] - a).abs() < 1e-7 && (q.values[3] - a).abs() < 1e-7,
            "{:?}",
            q.values
        );
        assert!(crf.set_unary(&[1.0, f32::NAN, 0.0, 0.0]).is_err());
        assert!(crf.set_unary(&[1.0]).is_err());
    }
}
