//! Unary energies from class probabilities: `-log(clip(p, 1e-5, 1))`, pydensecrf's
//! `utils.unary_from_softmax` (with its default `clip=1e-5`, no `scale`).

use half::f16;

/// `-ln(clip(p, 1e-5, 1))` in single precision, same layout as the input. The logarithm is
/// evaluated in double precision and rounded once; numpy's float32 `log` (a SIMD
/// approximation on some CPUs) can differ from it by one unit in the last place.
pub fn unary_from_probabilities(probs: &[f32]) -> Vec<f32> {
    let lo = 1e-5f32;
    probs
        .iter()
        .map(|&p| {
            let c = clip(p, lo, 1.0);
            -((c as f64).ln() as f32)
        })
        .collect()
}

/// `unary_from_softmax` applied to a float16 array, as numpy evaluates it: the clip bounds
/// become float16 (1e-5 is the subnormal 168 * 2^-24), `log` is computed through float32 and
/// rounded to float16, negated, then cast to float32. This is what CLIP-ES's
/// `eval_cam_with_crf.py` does with its float16 CAMs.
pub fn unary_from_f16_probabilities(probs: &[f16]) -> Vec<f32> {
    let lo = f16::from_f64(1e-5).to_f32();
    probs
        .iter()
        .map(|&p| {
            let c = clip(p.to_f32(), lo, 1.0);
            let log32 = (c as f64).ln() as f32;
            -f16::from_f32(log32).to_f32()
        })
        .collect()
}

/// numpy's `clip`: `minimum(maximum(p, lo), hi)`, NaN propagating.
#[inline]
fn clip(p: f32, lo: f32, hi: f32) -> f32 {
    if p.is_nan() {
        p
    } else {
        p.max(lo).min(hi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipped_negative_log() {
        let u = unary_from_probabilities(&[1.0, 0.5, 0.0, 2.0, -1.0]);
        assert_eq!(u[0], 0.0);
        assert!((u[1] - std::f32::consts::LN_2).abs() < 1e-7);
        assert!((u[2] - 11.512925).abs() < 1e-5);
        assert_eq!(u[3], 0.0);
        assert_eq!(u[4], u[2]);
    }

    #[test]
    fn f16_lower_bound_is_the_f16_of_1e5() {
        let u = unary_from_f16_probabilities(&[f16::from_f32(0.0), f16::ONE]);
        // -log(168 * 2^-24) = 11.5116..., rounded to float16 = 11.5078125; numpy gives -0.0
        // for p = 1.
        assert_eq!(u[0], 11.507_812_5);
        assert_eq!(u[1].to_bits(), (-0.0f32).to_bits());
    }
}
