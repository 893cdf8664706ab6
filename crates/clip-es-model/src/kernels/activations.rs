//! Elementwise kernels: `exp`, QuickGELU and its backward pass, row softmax, in-place sums and
//! scaling.

use super::isa::{simd_level, SimdLevel};

/// `exp(x)` for f32, branch-free so that it vectorises: Cody-Waite range reduction and the
/// Cephes `expf` polynomial (max relative error about 2 ulp over the normal range).
#[inline(always)]
pub fn fast_exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Below -87.3 the result is subnormal or zero; clamp so the exponent bits stay valid and
    // flush to zero after.
    let xc = x.clamp(-87.3, 88.7);
    // Round to nearest with the 1.5 * 2^23 trick (vectorises, unlike f32::round).
    let kf = (xc * LOG2E + 12_582_912.0) - 12_582_912.0;
    let r = xc - kf * LN2_HI - kf * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5e-1;
    let poly = p * r * r + r + 1.0;
    // SAFETY: kf is an integer in [-126, 128] after the clamp: no overflow, no NaN.
    let k = unsafe { kf.to_int_unchecked::<i32>() };
    let scale = f32::from_bits(((k + 127) as u32) << 23);
    let y = poly * scale;
    if x < -87.3 {
        0.0
    } else {
        y
    }
}

multiversion! {
    /// QuickGELU in place: `x * sigmoid(1.702 x)` (CLIP's activation).
    pub fn quick_gelu_inplace(x: &mut [f32]) {
        for v in x.iter_mut() {
            let s = 1.0 / (1.0 + fast_exp(-1.702 * *v));
            *v *= s;
        }
    }
}

multiversion! {
    /// `dy * d/dx QuickGELU(x)`, written over `dy`; `x` is the pre-activation.
    pub fn quick_gelu_backward_inplace(dy: &mut [f32], x: &[f32]) {
        for (g, &v) in dy.iter_mut().zip(x) {
            let s = 1.0 / (1.0 + fast_exp(-1.702 * v));
            *g *= s + 1.702 * v * s * (1.0 - s);
        }
    }
}

multiversion! {
    /// Softmax of one row in place (max-subtracted, like PyTorch).
    pub fn softmax_inplace(x: &mut [f32]) {
        // Comparison-select (not f32::max, whose NaN rules block vectorisation).
        let mut lanes = [f32::NEG_INFINITY; 16];
        let chunks = x.chunks_exact(16);
        let rest = chunks.remainder();
        for c in chunks {
            for i in 0..16 {
                if c[i] > lanes[i] {
                    lanes[i] = c[i];
                }
            }
        }
        let mut m = f32::NEG_INFINITY;
        for &v in lanes.iter().chain(rest) {
            if v > m {
                m = v;
            }
        }
        let mut acc = [0f32; 16];
        let mut chunks = x.chunks_exact_mut(16);
        for c in &mut chunks {
            for i in 0..16 {
                c[i] = fast_exp(c[i] - m);
                acc[i] += c[i];
            }
        }
        let mut sum: f32 = acc.iter().sum();
        for v in chunks.into_remainder() {
            *v = fast_exp(*v - m);
            sum += *v;
        }
        let inv = 1.0 / sum;
        for v in x.iter_mut() {
            *v *= inv;
        }
    }
}

multiversion! {
    /// `acc += x` elementwise.
    pub fn add_assign(acc: &mut [f32], x: &[f32]) {
        for (a, &v) in acc.iter_mut().zip(x) {
            *a += v;
        }
    }
}

multiversion! {
    /// `acc *= s` elementwise.
    pub fn scale_inplace(acc: &mut [f32], s: f32) {
        for a in acc.iter_mut() {
            *a *= s;
        }
    }
}
