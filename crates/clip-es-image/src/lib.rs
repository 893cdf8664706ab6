//! Image input for CLIP-ES. PLACEHOLDER: the decoder here is the `image` crate's; it is to be
//! replaced by libjpeg-turbo-exact decoding (mozjpeg) and PIL-exact resampling.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}: {message}")]
    Decode { path: PathBuf, message: String },
}

/// An 8-bit RGB image, row-major, interleaved (HWC).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rgb8Image {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

/// Loads any supported file as 8-bit RGB (grayscale replicated, alpha dropped, palette expanded).
pub fn load_rgb(path: &Path) -> Result<Rgb8Image, ImageError> {
    let img = image::open(path).map_err(|e| ImageError::Decode { path: path.to_path_buf(), message: e.to_string() })?;
    let rgb = img.to_rgb8();
    Ok(Rgb8Image { width: rgb.width(), height: rgb.height(), data: rgb.into_raw() })
}

/// TEMPORARY (lead's branch, replaced by the image helper's OpenCV-exact version on merge).
pub fn resize_bilinear_f32(src: &[f32], sw: usize, sh: usize, dw: usize, dh: usize) -> Vec<f32> {
    let tap = |o: usize, inp: usize, out: usize| {
        let s = ((o as f32 + 0.5) * inp as f32 / out as f32 - 0.5).max(0.0);
        let i0 = (s as usize).min(inp - 1);
        (i0, (i0 + 1).min(inp - 1), s - i0 as f32)
    };
    let mut out = vec![0f32; dw * dh];
    for y in 0..dh {
        let (y0, y1, fy) = tap(y, sh, dh);
        for x in 0..dw {
            let (x0, x1, fx) = tap(x, sw, dw);
            let a = src[y0 * sw + x0] * (1.0 - fx) + src[y0 * sw + x1] * fx;
            let b = src[y1 * sw + x0] * (1.0 - fx) + src[y1 * sw + x1] * fx;
            out[y * dw + x] = a * (1.0 - fy) + b * fy;
        }
    }
    out
}
