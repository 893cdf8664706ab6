//! Pillow's mode conversions that the reference's `image.convert("RGB")` and `Image.resize`
//! use, from `libImaging/Convert.c`: `l2rgb`, `la2rgb`, `rgba2rgb`, `cmyk2rgb`, `I16_RGB`,
//! `p2rgb`, `bit2rgb`, and the alpha premultiplication around resizing (`rgbA2rgba`,
//! `rgba2rgbA`, `lA2la`, `la2lA`).

use crate::pixels::{DecodedImage, PilMode};

/// `MULDIV255(a, b)`: a * b / 255 rounded, with Pillow's shift trick.
#[inline]
pub(crate) fn muldiv255(a: u32, b: u32) -> u32 {
    let t = a * b + 128;
    ((t >> 8) + t) >> 8
}

/// `CLIP8((255 * v) / alpha)` for 0 < alpha < 255; Pillow leaves 0 and 255 alone.
#[inline]
fn unpremultiply(v: u8, alpha: u8) -> u8 {
    if alpha == 0 || alpha == 255 {
        v
    } else {
        ((255 * v as u32) / alpha as u32).min(255) as u8
    }
}

/// RGBA -> RGBa or LA -> La in place (`n` samples per pixel, alpha last).
pub(crate) fn premultiply(data: &mut [u8], n: usize) {
    for px in data.chunks_exact_mut(n) {
        let a = px[n - 1] as u32;
        for v in &mut px[..n - 1] {
            *v = muldiv255(*v as u32, a) as u8;
        }
    }
}

/// RGBa -> RGBA or La -> LA in place.
pub(crate) fn unpremultiply_all(data: &mut [u8], n: usize) {
    for px in data.chunks_exact_mut(n) {
        let a = px[n - 1];
        for v in &mut px[..n - 1] {
            *v = unpremultiply(*v, a);
        }
    }
}

/// `image.convert("RGB")`: interleaved RGB bytes.
pub(crate) fn to_rgb(img: &DecodedImage) -> Vec<u8> {
    let n = img.width as usize * img.height as usize;
    let mut out = Vec::with_capacity(n * 3);
    match img.mode {
        PilMode::L | PilMode::Bilevel => {
            for &v in &img.data {
                out.extend_from_slice(&[v, v, v]);
            }
        }
        PilMode::La => {
            for px in img.data.chunks_exact(2) {
                out.extend_from_slice(&[px[0], px[0], px[0]]);
            }
        }
        PilMode::Rgb => out.extend_from_slice(&img.data),
        PilMode::Rgba => {
            for px in img.data.chunks_exact(4) {
                out.extend_from_slice(&px[..3]);
            }
        }
        PilMode::Cmyk => {
            for px in img.data.chunks_exact(4) {
                let nk = 255 - px[3] as i32;
                for &c in &px[..3] {
                    let v = nk - muldiv255(c as u32, nk as u32) as i32;
                    out.push(v.clamp(0, 255) as u8);
                }
            }
        }
        PilMode::I16 => {
            // I16_RGB: values above 255 saturate to 255 (no scaling)
            for &v in &img.data16 {
                let b = v.min(255) as u8;
                out.extend_from_slice(&[b, b, b]);
            }
        }
        PilMode::P => {
            let pal = img.palette.as_deref().unwrap_or(&[]);
            for &i in &img.data {
                out.extend_from_slice(pal.get(i as usize).unwrap_or(&[0, 0, 0]));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn muldiv255_is_rounded_division() {
        for a in 0..=255u32 {
            for b in 0..=255u32 {
                let exact = (a * b) as f64 / 255.0;
                assert_eq!(muldiv255(a, b), exact.round() as u32, "{a} {b}");
            }
        }
    }

    #[test]
    fn cmyk_white_and_black() {
        let img = DecodedImage::from_raw(2, 1, PilMode::Cmyk, vec![0, 0, 0, 0, 0, 0, 0, 255], None)
            .unwrap();
        assert_eq!(to_rgb(&img), vec![255, 255, 255, 0, 0, 0]);
    }
}
