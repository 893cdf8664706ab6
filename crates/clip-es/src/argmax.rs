//! The label of a pixel from its CAMs: the first maximum over `[bg, cam_1, ..., cam_K]`,
//! compared as float16 values as the reference's numpy code does, so the background wins ties
//! (docs/algorithm.md, "Background score and argmax"; reference `eval_cam.py` lines 20-24 and
//! `eval_cam_with_crf.py` lines 21-24 at the pinned commit). One implementation for the
//! evaluator's CAM predictions and the masks stage without CRF.

use half::f16;

/// The background score for exponent `t` of a pixel whose largest CAM value is `max`:
/// `(1 - max) ** t` in float16 for `t >= 1`, the constant `t` for `t < 1` (the reference pads
/// with `constant_values = t`).
#[inline]
pub fn background_score(max: f16, t: f64) -> f16 {
    if t < 1.0 {
        f16::from_f64(t)
    } else {
        let x = f16::from_f32(1.0 - max.to_f32());
        if t == 1.0 {
            x
        } else {
            f16::from_f32(x.to_f32().powf(t as f32))
        }
    }
}

/// The first maximum of pixel `i` over the `K` CAMs (label-major, `n` pixels each): CAM index
/// and value (numpy's argmax, compared as float16 values).
#[inline]
pub fn first_max(cams: &[f16], n: usize, i: usize) -> (usize, f16) {
    let k = cams.len() / n.max(1);
    let mut best = 0;
    let mut max = cams[i];
    for c in 1..k {
        let v = cams[c * n + i];
        if v.to_f32() > max.to_f32() {
            best = c;
            max = v;
        }
    }
    (best, max)
}

/// The winner of pixel `i` among `[bg, cams...]` with background exponent `t`: `0` for the
/// background, `c + 1` for CAM `c`, and the winning score.
#[inline]
pub fn argmax_with_background(cams: &[f16], n: usize, i: usize, t: f64) -> (usize, f16) {
    let (best, max) = first_max(cams, n, i);
    let bg = background_score(max, t);
    // The background comes first, so it wins ties.
    if bg.to_f32() >= max.to_f32() {
        (0, bg)
    } else {
        (best + 1, max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn background_wins_ties_and_exponents_apply_in_f16() {
        let h = |v: f32| f16::from_f32(v);
        // 2 CAMs x 3 pixels.
        let cams = [h(0.2), h(0.5), h(0.9), h(0.7), h(0.5), h(0.1)];
        assert_eq!(argmax_with_background(&cams, 3, 0, 1.0), (2, h(0.7)));
        // Tie between the CAMs goes to the first; 1 - 0.5 = 0.5 ties again: background.
        assert_eq!(argmax_with_background(&cams, 3, 1, 1.0), (0, h(0.5)));
        assert_eq!(argmax_with_background(&cams, 3, 1, 2.0), (1, h(0.5)));
        assert_eq!(argmax_with_background(&cams, 3, 2, 1.0), (1, h(0.9)));
        assert_eq!(argmax_with_background(&cams, 3, 2, 0.95), (0, h(0.95)));
        assert_eq!(background_score(h(0.9), 1.0), h(1.0 - h(0.9).to_f32()));
    }
}
