//! Pillow's `Image.resize(size, Image.BICUBIC)`, bit for bit: `PIL/Image.py:resize`,
//! `_imaging.c:_resize` and `libImaging/Resample.c` (Pillow 13).
//!
//! - Coefficients: for each output pixel, centre = (x + 0.5) * scale (scale = in / out); the
//!   filter support 2 is widened by the scale when shrinking (antialiasing); taps from
//!   `(int)(centre - support + 0.5)` to `(int)(centre + support + 0.5)` clipped to the image;
//!   weights `bicubic((i - centre + 0.5) / filterscale)` with a = -0.5, divided by their sum.
//! - 8-bit images: weights rounded to 22-bit fixed point (half away from zero), sums start at
//!   1 << 21 and are shifted right by 22 and clipped to 0..255 after each pass.
//! - 16-bit (`I;16`): weights and sums in double, rounded half away from zero, clipped to
//!   0..65535 after each pass.
//! - Horizontal pass first (only when the width changes), then vertical (only when the height
//!   changes). Extremely tall images shrunk in height (h > 100 w) go vertical first.
//! - `P` and `1` use nearest neighbour (`ImagingScaleAffine`); `RGBA`/`LA` are premultiplied
//!   by alpha around the resize.

use crate::pil_convert;
use crate::pixels::{DecodedImage, PilMode};

const PRECISION_BITS: u32 = 32 - 8 - 2;
const BICUBIC_SUPPORT: f64 = 2.0;

#[inline]
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = if x < 0.0 { -x } else { x };
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// `precompute_coeffs` for a box of [0, in_size): per output pixel the first tap and the tap
/// count, and `ksize` normalised weights (zero-padded).
struct Coeffs {
    ksize: usize,
    bounds: Vec<(usize, usize)>,
    weights: Vec<f64>,
}

fn precompute_coeffs(in_size: usize, out_size: usize) -> Coeffs {
    // Pillow's box is float[4]; (in1 - in0) is a float subtraction, exact for sizes < 2^24.
    let in0 = 0.0f32;
    let in1 = in_size as f32;
    let scale = (in1 - in0) as f64 / out_size as f64;
    let filterscale = if scale < 1.0 { 1.0 } else { scale };
    let support = BICUBIC_SUPPORT * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let inv_filterscale = 1.0 / filterscale;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0.0f64; out_size * ksize];
    for xx in 0..out_size {
        let center = in0 as f64 + (xx as f64 + 0.5) * scale;
        // C's (int) conversion truncates toward zero
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64)
            .min(in_size as i64)
            .max(xmin as i64) as usize;
        let count = xmax - xmin;
        let k = &mut weights[xx * ksize..xx * ksize + ksize];
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(count) {
            let w = bicubic(((x + xmin) as f64 - center + 0.5) * inv_filterscale);
            *kx = w;
            ww += w;
        }
        if ww != 0.0 {
            for kx in k.iter_mut().take(count) {
                *kx /= ww;
            }
        }
        bounds.push((xmin, count));
    }
    Coeffs {
        ksize,
        bounds,
        weights,
    }
}

/// `normalize_coeffs_8bpc`: weights to 22-bit fixed point, rounded half away from zero.
fn fixed_point(c: &Coeffs) -> Vec<i32> {
    let one = (1i64 << PRECISION_BITS) as f64;
    c.weights
        .iter()
        .map(|&k| {
            if k < 0.0 {
                (-0.5 + k * one) as i32
            } else {
                (0.5 + k * one) as i32
            }
        })
        .collect()
}

#[inline]
fn clip8(ss: i32) -> u8 {
    (ss >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Horizontal 8-bit pass over rows `row0 .. row0 + rows` of `src`.
fn horizontal_u8<const CH: usize>(
    src: &[u8],
    width: usize,
    row0: usize,
    rows: usize,
    out_w: usize,
    c: &Coeffs,
) -> Vec<u8> {
    let k = fixed_point(c);
    let mut out = vec![0u8; out_w * rows * CH];
    for y in 0..rows {
        let line = &src[(row0 + y) * width * CH..(row0 + y + 1) * width * CH];
        let dst = &mut out[y * out_w * CH..(y + 1) * out_w * CH];
        for (xx, &(xmin, count)) in c.bounds.iter().enumerate() {
            let kk = &k[xx * c.ksize..xx * c.ksize + count];
            let taps = &line[xmin * CH..(xmin + count) * CH];
            let mut ss = [1i32 << (PRECISION_BITS - 1); CH];
            for (px, &w) in taps.chunks_exact(CH).zip(kk) {
                for ch in 0..CH {
                    ss[ch] += px[ch] as i32 * w;
                }
            }
            for ch in 0..CH {
                dst[xx * CH + ch] = clip8(ss[ch]);
            }
        }
    }
    out
}

/// Vertical 8-bit pass; `row_shift` is subtracted from the tap rows (the horizontal pass only
/// produced the rows the vertical one reads, starting at that row).
fn vertical_u8<const CH: usize>(
    src: &[u8],
    width: usize,
    out_h: usize,
    c: &Coeffs,
    row_shift: usize,
) -> Vec<u8> {
    let k = fixed_point(c);
    let stride = width * CH;
    let mut out = vec![0u8; out_h * stride];
    let mut ss = vec![0i32; stride];
    for (yy, &(ymin, count)) in c.bounds.iter().enumerate() {
        let kk = &k[yy * c.ksize..yy * c.ksize + count];
        ss.fill(1i32 << (PRECISION_BITS - 1));
        for (y, &w) in kk.iter().enumerate() {
            let line = &src[(ymin - row_shift + y) * stride..(ymin - row_shift + y + 1) * stride];
            for (s, &v) in ss.iter_mut().zip(line) {
                *s += v as i32 * w;
            }
        }
        for (o, &s) in out[yy * stride..(yy + 1) * stride].iter_mut().zip(&ss) {
            *o = clip8(s);
        }
    }
    out
}

fn round_up_clip16(ss: f64) -> u16 {
    let v = if ss >= 0.0 {
        (ss + 0.5) as i64
    } else {
        (ss - 0.5) as i64
    };
    v.clamp(0, 65535) as u16
}

fn horizontal_u16(
    src: &[u16],
    width: usize,
    row0: usize,
    rows: usize,
    out_w: usize,
    c: &Coeffs,
) -> Vec<u16> {
    let mut out = vec![0u16; out_w * rows];
    for y in 0..rows {
        let line = &src[(row0 + y) * width..(row0 + y + 1) * width];
        for (xx, &(xmin, count)) in c.bounds.iter().enumerate() {
            let kk = &c.weights[xx * c.ksize..xx * c.ksize + count];
            let mut ss = 0.0f64;
            for (&v, &w) in line[xmin..xmin + count].iter().zip(kk) {
                ss += v as f64 * w;
            }
            out[y * out_w + xx] = round_up_clip16(ss);
        }
    }
    out
}

fn vertical_u16(src: &[u16], width: usize, out_h: usize, c: &Coeffs, row_shift: usize) -> Vec<u16> {
    let mut out = vec![0u16; out_h * width];
    for (yy, &(ymin, count)) in c.bounds.iter().enumerate() {
        let kk = &c.weights[yy * c.ksize..yy * c.ksize + count];
        for xx in 0..width {
            let mut ss = 0.0f64;
            for (y, &w) in kk.iter().enumerate() {
                ss += src[(ymin - row_shift + y) * width + xx] as f64 * w;
            }
            out[yy * width + xx] = round_up_clip16(ss);
        }
    }
    out
}

/// `ImagingResampleInner` for one sample type: `h` and `v` are the passes.
fn resample_inner<T: Clone>(
    src: &[T],
    width: usize,
    height: usize,
    out_w: usize,
    out_h: usize,
    horizontal: impl Fn(&[T], usize, usize, usize, usize, &Coeffs) -> Vec<T>,
    vertical: impl Fn(&[T], usize, usize, &Coeffs, usize) -> Vec<T>,
) -> Vec<T> {
    let need_h = out_w != width;
    let need_v = out_h != height;
    let cv = precompute_coeffs(height, out_h);
    // rows of the source that the vertical pass reads
    let first = cv.bounds[0].0;
    let (lmin, lcount) = cv.bounds[out_h - 1];
    let last = lmin + lcount;
    let (img, w, shift) = if need_h {
        let ch = precompute_coeffs(width, out_w);
        (
            horizontal(src, width, first, last - first, out_w, &ch),
            out_w,
            first,
        )
    } else {
        (src.to_vec(), width, 0)
    };
    if need_v {
        vertical(&img, w, out_h, &cv, shift)
    } else {
        img
    }
}

/// `Image.resize` for a sample type, with Pillow's order of passes (vertical first for images
/// more than 100 times taller than wide that shrink in height).
fn resample<T: Clone>(
    src: &[T],
    width: usize,
    height: usize,
    out_w: usize,
    out_h: usize,
    horizontal: impl Fn(&[T], usize, usize, usize, usize, &Coeffs) -> Vec<T> + Copy,
    vertical: impl Fn(&[T], usize, usize, &Coeffs, usize) -> Vec<T> + Copy,
) -> Vec<T> {
    if height > width * 100 && out_h < height {
        let tall = resample_inner(src, width, height, width, out_h, horizontal, vertical);
        resample_inner(&tall, width, out_h, out_w, out_h, horizontal, vertical)
    } else {
        resample_inner(src, width, height, out_w, out_h, horizontal, vertical)
    }
}

fn resample_u8(
    src: &[u8],
    ch: usize,
    width: usize,
    height: usize,
    out_w: usize,
    out_h: usize,
) -> Vec<u8> {
    match ch {
        1 => resample(
            src,
            width,
            height,
            out_w,
            out_h,
            horizontal_u8::<1>,
            vertical_u8::<1>,
        ),
        2 => resample(
            src,
            width,
            height,
            out_w,
            out_h,
            horizontal_u8::<2>,
            vertical_u8::<2>,
        ),
        3 => resample(
            src,
            width,
            height,
            out_w,
            out_h,
            horizontal_u8::<3>,
            vertical_u8::<3>,
        ),
        4 => resample(
            src,
            width,
            height,
            out_w,
            out_h,
            horizontal_u8::<4>,
            vertical_u8::<4>,
        ),
        _ => unreachable!("Pillow images have 1 to 4 bands"),
    }
}

/// `ImagingScaleAffine`: nearest neighbour with Pillow's accumulated source coordinates.
fn nearest(src: &[u8], width: usize, height: usize, out_w: usize, out_h: usize) -> Vec<u8> {
    // a[0] = (box[2] - box[0]) / xsize with a float box
    let ax = (width as f32 - 0.0f32) as f64 / out_w as f64;
    let ay = (height as f32 - 0.0f32) as f64 / out_h as f64;
    let coord = |v: f64| if v < 0.0 { -1i64 } else { v as i64 };
    let mut xin = Vec::with_capacity(out_w);
    let mut xo = ax * 0.5;
    for _ in 0..out_w {
        xin.push(coord(xo));
        xo += ax;
    }
    let mut out = vec![0u8; out_w * out_h];
    let mut yo = ay * 0.5;
    for y in 0..out_h {
        let yi = coord(yo);
        if yi >= 0 && (yi as usize) < height {
            let line = &src[yi as usize * width..(yi as usize + 1) * width];
            for (o, &xi) in out[y * out_w..(y + 1) * out_w].iter_mut().zip(&xin) {
                if xi >= 0 && (xi as usize) < width {
                    *o = line[xi as usize];
                }
            }
        }
        yo += ay;
    }
    out
}

/// `img.resize((out_w, out_h), Image.BICUBIC)`; sizes must be positive.
pub(crate) fn resize(img: &DecodedImage, out_w: u32, out_h: u32) -> DecodedImage {
    let (w, h) = (img.width as usize, img.height as usize);
    let (ow, oh) = (out_w as usize, out_h as usize);
    let mut out = DecodedImage {
        width: out_w,
        height: out_h,
        mode: img.mode,
        data: Vec::new(),
        data16: Vec::new(),
        palette: img.palette.clone(),
    };
    if (w, h) == (ow, oh) {
        return img.clone();
    }
    match img.mode {
        PilMode::P | PilMode::Bilevel => out.data = nearest(&img.data, w, h, ow, oh),
        PilMode::Rgba | PilMode::La => {
            let n = img.mode.channels();
            let mut pre = img.data.clone();
            pil_convert::premultiply(&mut pre, n);
            let mut data = resample_u8(&pre, n, w, h, ow, oh);
            pil_convert::unpremultiply_all(&mut data, n);
            out.data = data;
        }
        PilMode::L | PilMode::Rgb | PilMode::Cmyk => {
            out.data = resample_u8(&img.data, img.mode.channels(), w, h, ow, oh);
        }
        PilMode::I16 => {
            out.data16 = resample(&img.data16, w, h, ow, oh, horizontal_u16, vertical_u16);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upscale_coefficients_sum_to_one_and_stay_in_range() {
        for (i, o) in [(37, 48), (45, 48), (5, 64), (100, 31), (3, 1)] {
            let c = precompute_coeffs(i, o);
            for (xx, &(xmin, n)) in c.bounds.iter().enumerate() {
                assert!(n >= 1 && xmin + n <= i, "{i}->{o} pixel {xx}");
                let s: f64 = c.weights[xx * c.ksize..xx * c.ksize + n].iter().sum();
                assert!((s - 1.0).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn constant_image_stays_constant() {
        let img = DecodedImage::from_raw(7, 5, PilMode::Rgb, vec![77; 7 * 5 * 3], None).unwrap();
        for (ow, oh) in [(16, 16), (3, 2), (7, 9), (1, 1)] {
            let r = resize(&img, ow, oh);
            assert!(r.data.iter().all(|&v| v == 77), "{ow}x{oh}");
        }
    }

    #[test]
    fn nearest_picks_pixel_centres() {
        let img = DecodedImage::from_raw(4, 1, PilMode::L, vec![0, 10, 20, 30], None).unwrap();
        assert_eq!(nearest(&img.data, 4, 1, 2, 1), vec![10, 30]);
        assert_eq!(
            nearest(&img.data, 4, 1, 8, 1),
            vec![0, 0, 10, 10, 20, 20, 30, 30]
        );
    }
}
