//! `cv2.resize(map, (dst_w, dst_h), interpolation=cv2.INTER_LINEAR)` for single-channel float32
//! maps (docs/algorithm.md, "Class-aware attention affinity", step 5: the refined CAM up-scaled to
//! `attn_highres`; reference `generate_cams_voc12.py:157` and `:196`).
//!
//! OpenCV's x86-64 builds (the pip wheels, OpenCV 5.0 here) hand float32 INTER_LINEAR to Intel
//! IPP whenever the source has at least 2 rows and 2 columns. Measured against OpenCV 5.0 + IPP
//! 2026.0 (tools/golden_image.py, and an exhaustive sweep of small sizes), IPP computes:
//!
//! - source coordinate `x = (d + 0.5) * (src / dst) - 0.5` in double, `s = floor(x)`,
//!   fraction `f = (float)(x - s)`; taps `s` and `s + 1` clamped to the image (edge replicate);
//! - each pass as `fma(S[s+1] - S[s], f, S[s])` in float32, horizontal pass first.
//!
//! With a 1-row or 1-column source OpenCV runs its own code (`resizeGeneric_` with
//! `HResizeLinear`/`VResizeLinear`): coordinate `(float)((d + 0.5) * scale - 0.5)` with
//! `scale = 1 / (dst / src)`, weights `(1 - f, f)` in float32, `S0 * w0 + S1 * w1` without
//! fusion, x taps clamped by moving the weight to the edge pixel, y taps by repeating the edge
//! row. [`resize_bilinear_f32_without_ipp`] is that code for every size (what an OpenCV without
//! IPP, e.g. on ARM, computes), including its switch to INTER_AREA for an exact 2x shrink.
//! Equal sizes are a plain copy in both.

/// `cv2.resize(src, (dst_w, dst_h), interpolation=cv2.INTER_LINEAR)` on a row-major
/// `src_h` x `src_w` float32 map, bit-exact with OpenCV 5.0's x86-64 (IPP) result.
///
/// # Panics
/// If `src.len() != src_w * src_h` or the source is empty while the destination is not.
pub fn resize_bilinear_f32(
    src: &[f32],
    src_w: usize,
    src_h: usize,
    dst_w: usize,
    dst_h: usize,
) -> Vec<f32> {
    check_args(src, src_w, src_h, dst_w, dst_h);
    if dst_w == 0 || dst_h == 0 {
        return Vec::new();
    }
    if (src_w, src_h) == (dst_w, dst_h) {
        return src.to_vec();
    }
    if src_w >= 2 && src_h >= 2 {
        ipp_linear(src, src_w, src_h, dst_w, dst_h)
    } else {
        opencv_linear(src, src_w, src_h, dst_w, dst_h)
    }
}

/// `cv2.resize(..., INTER_LINEAR)` as OpenCV computes it without IPP (`cv2.ipp.setUseIPP(False)`,
/// or builds without IPP such as ARM wheels).
///
/// # Panics
/// As [`resize_bilinear_f32`].
pub fn resize_bilinear_f32_without_ipp(
    src: &[f32],
    src_w: usize,
    src_h: usize,
    dst_w: usize,
    dst_h: usize,
) -> Vec<f32> {
    check_args(src, src_w, src_h, dst_w, dst_h);
    if dst_w == 0 || dst_h == 0 {
        return Vec::new();
    }
    if (src_w, src_h) == (dst_w, dst_h) {
        return src.to_vec();
    }
    // hal::resize: an exact 2x shrink in both directions becomes INTER_AREA (resizeAreaFast_)
    let scale_x = 1.0 / (dst_w as f64 / src_w as f64);
    let scale_y = 1.0 / (dst_h as f64 / src_h as f64);
    let exact2 = |s: f64| (s - 2.0).abs() < f64::EPSILON;
    if exact2(scale_x) && exact2(scale_y) {
        return area_fast_2x2(src, src_w, dst_w, dst_h);
    }
    opencv_linear(src, src_w, src_h, dst_w, dst_h)
}

fn check_args(src: &[f32], src_w: usize, src_h: usize, dst_w: usize, dst_h: usize) {
    assert_eq!(
        src.len(),
        src_w * src_h,
        "resize_bilinear_f32: source length does not match {src_w}x{src_h}"
    );
    assert!(
        (src_w > 0 && src_h > 0) || dst_w == 0 || dst_h == 0,
        "resize_bilinear_f32: empty source {src_w}x{src_h} for a {dst_w}x{dst_h} destination"
    );
}

/// IPP's taps for one axis: (left/top index, right/bottom index, fraction).
fn ipp_taps(src: usize, dst: usize) -> Vec<(usize, usize, f32)> {
    let ratio = src as f64 / dst as f64;
    let last = src as i64 - 1;
    (0..dst)
        .map(|d| {
            let x = (d as f64 + 0.5) * ratio - 0.5;
            let s = x.floor();
            let frac = (x - s) as f32;
            let s = s as i64;
            (
                s.clamp(0, last) as usize,
                (s + 1).clamp(0, last) as usize,
                frac,
            )
        })
        .collect()
}

#[inline(always)]
fn ipp_passes(src: &[f32], src_w: usize, src_h: usize, dst_w: usize, dst_h: usize) -> Vec<f32> {
    let xt = ipp_taps(src_w, dst_w);
    let yt = ipp_taps(src_h, dst_h);
    let mut rows = vec![0.0f32; src_h * dst_w];
    for (srow, drow) in src.chunks_exact(src_w).zip(rows.chunks_exact_mut(dst_w)) {
        for (d, &(a, b, f)) in drow.iter_mut().zip(&xt) {
            let (sa, sb) = (srow[a], srow[b]);
            *d = (sb - sa).mul_add(f, sa);
        }
    }
    let mut out = vec![0.0f32; dst_h * dst_w];
    for (drow, &(a, b, f)) in out.chunks_exact_mut(dst_w).zip(&yt) {
        let ra = &rows[a * dst_w..(a + 1) * dst_w];
        let rb = &rows[b * dst_w..(b + 1) * dst_w];
        for ((d, &va), &vb) in drow.iter_mut().zip(ra).zip(rb) {
            *d = (vb - va).mul_add(f, va);
        }
    }
    out
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn ipp_passes_fma(
    src: &[f32],
    src_w: usize,
    src_h: usize,
    dst_w: usize,
    dst_h: usize,
) -> Vec<f32> {
    ipp_passes(src, src_w, src_h, dst_w, dst_h)
}

fn ipp_linear(src: &[f32], src_w: usize, src_h: usize, dst_w: usize, dst_h: usize) -> Vec<f32> {
    // mul_add is a correctly rounded fused multiply-add either way; with the FMA instruction
    // available it is one instruction instead of a call into libm.
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports FMA, checked just above.
        return unsafe { ipp_passes_fma(src, src_w, src_h, dst_w, dst_h) };
    }
    ipp_passes(src, src_w, src_h, dst_w, dst_h)
}

/// OpenCV's own INTER_LINEAR for float32 (`resizeGeneric_`, `HResizeLinear`, `VResizeLinear`).
fn opencv_linear(src: &[f32], src_w: usize, src_h: usize, dst_w: usize, dst_h: usize) -> Vec<f32> {
    let scale_x = 1.0 / (dst_w as f64 / src_w as f64);
    let scale_y = 1.0 / (dst_h as f64 / src_h as f64);
    let sw = src_w as i64;

    // x: offsets and weights; from `xmax` on, the left tap alone is used (weight 1)
    let mut xmax = dst_w;
    let mut xtaps = Vec::with_capacity(dst_w);
    for dx in 0..dst_w {
        let mut fx = ((dx as f64 + 0.5) * scale_x - 0.5) as f32;
        let mut sx = fx.floor() as i64;
        fx -= sx as f32;
        if sx < 0 {
            fx = 0.0;
            sx = 0;
        }
        if sx + 1 >= sw {
            xmax = xmax.min(dx);
            if sx >= sw - 1 {
                fx = 0.0;
                sx = sw - 1;
            }
        }
        xtaps.push((sx as usize, 1.0f32 - fx, fx));
    }
    let hrow = |row: &[f32], out: &mut [f32]| {
        for (dx, (o, &(sx, a0, a1))) in out.iter_mut().zip(&xtaps).enumerate() {
            *o = if dx < xmax {
                row[sx] * a0 + row[sx + 1] * a1
            } else {
                row[sx]
            };
        }
    };
    let mut rows = vec![0.0f32; src_h * dst_w];
    for (srow, drow) in src.chunks_exact(src_w).zip(rows.chunks_exact_mut(dst_w)) {
        hrow(srow, drow);
    }

    // y: rows clipped to the image, weights left as computed
    let last = src_h as i64 - 1;
    let mut out = vec![0.0f32; dst_h * dst_w];
    for (dy, drow) in out.chunks_exact_mut(dst_w).enumerate() {
        let mut fy = ((dy as f64 + 0.5) * scale_y - 0.5) as f32;
        let sy = fy.floor() as i64;
        fy -= sy as f32;
        let (b0, b1) = (1.0f32 - fy, fy);
        let r0 = sy.clamp(0, last) as usize;
        let r1 = (sy + 1).clamp(0, last) as usize;
        let ra = &rows[r0 * dst_w..(r0 + 1) * dst_w];
        let rb = &rows[r1 * dst_w..(r1 + 1) * dst_w];
        for ((d, &va), &vb) in drow.iter_mut().zip(ra).zip(rb) {
            *d = va * b0 + vb * b1;
        }
    }
    out
}

/// SIMD width of OpenCV's `ResizeAreaFastVec_SIMD_32f` in the measured build (SSE: 4 lanes).
const AREA_FAST_LANES: usize = 4;

/// `resizeAreaFast_` for a 2x2 shrink: vectorised columns sum `(a + b) + (c + d)`, the rest
/// `((a + b) + c) + d`; both times 0.25.
fn area_fast_2x2(src: &[f32], src_w: usize, dst_w: usize, dst_h: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; dst_w * dst_h];
    let vec_end = dst_w / AREA_FAST_LANES * AREA_FAST_LANES;
    for (dy, drow) in out.chunks_exact_mut(dst_w).enumerate() {
        let s0 = &src[2 * dy * src_w..(2 * dy + 1) * src_w];
        let s1 = &src[(2 * dy + 1) * src_w..(2 * dy + 2) * src_w];
        for (dx, d) in drow.iter_mut().enumerate() {
            let (a, b, c, e) = (s0[2 * dx], s0[2 * dx + 1], s1[2 * dx], s1[2 * dx + 1]);
            let sum = if dx < vec_end {
                (a + b) + (c + e)
            } else {
                ((a + b) + c) + e
            };
            *d = sum * 0.25f32;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_map_stays_constant() {
        let src = vec![0.37f32; 5 * 7];
        for (w, h) in [(13, 11), (3, 2), (100, 1), (1, 1)] {
            assert!(resize_bilinear_f32(&src, 7, 5, w, h)
                .iter()
                .all(|&v| v == 0.37f32));
            // OpenCV's own weights (1 - f, f) need not sum to exactly one in float32
            let plain = resize_bilinear_f32_without_ipp(&src, 7, 5, w, h);
            assert!(plain.iter().all(|&v| (v - 0.37f32).abs() <= 1e-7));
        }
    }

    #[test]
    fn upscale_interpolates_between_pixels() {
        // 2 pixels -> 4: centres at -0.25, 0.25, 0.75, 1.25 of the source grid
        let out = resize_bilinear_f32(&[0.0, 1.0, 0.0, 1.0], 2, 2, 4, 2);
        assert_eq!(out, vec![0.0, 0.25, 0.75, 1.0, 0.0, 0.25, 0.75, 1.0]);
    }

    #[test]
    fn same_size_is_a_copy_and_empty_destination_is_empty() {
        let src: Vec<f32> = (0..6).map(|v| v as f32 * 0.1).collect();
        assert_eq!(resize_bilinear_f32(&src, 3, 2, 3, 2), src);
        assert!(resize_bilinear_f32(&src, 3, 2, 0, 5).is_empty());
    }
}
