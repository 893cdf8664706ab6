//! EXIF orientation for the photos of `clip-es segment`: phones store pictures sideways and
//! say how to turn them in EXIF tag 0x0112 (JPEG APP1, PNG `eXIf`). `load_rgb` applies it
//! (as `cv2.imread` does) but `DecodedImage::open` does not (as `PIL.Image.open` does not);
//! [`DecodedImage::oriented`] turns a decoded image the same way, so that every step of a
//! command can see the photo upright.

use crate::decode::{read_file, sniff, Format};
use crate::{jpeg, DecodedImage, ImageError};
use std::path::Path;

/// The EXIF orientation (1..8) of an image file's bytes; 1 when it has none or an invalid one.
pub fn exif_orientation_of_bytes(bytes: &[u8]) -> u16 {
    let o = match sniff(bytes) {
        Format::Jpeg => jpeg::exif_orientation(bytes),
        Format::Png => png_exif(bytes).and_then(jpeg::tiff_orientation),
        Format::Other => None,
    };
    o.filter(|v| (1..=8).contains(v)).unwrap_or(1)
}

/// The EXIF orientation of an image file (see [`exif_orientation_of_bytes`]).
pub fn exif_orientation(path: &Path) -> Result<u16, ImageError> {
    Ok(exif_orientation_of_bytes(&read_file(path)?))
}

/// The payload of a PNG's `eXIf` chunk (before the image data).
fn png_exif(bytes: &[u8]) -> Option<&[u8]> {
    let mut i = 8;
    while i + 8 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[i..i + 4].try_into().ok()?) as usize;
        let kind = &bytes[i + 4..i + 8];
        let data = bytes.get(i + 8..i + 8 + len)?;
        match kind {
            b"eXIf" => return Some(data),
            b"IDAT" | b"IEND" => return None,
            _ => i += 12 + len,
        }
    }
    None
}

/// `(transpose, flip_x, flip_y)` of an orientation, applied in that order (OpenCV's
/// `ApplyExifOrientation`); `None` for 1 and unknown values.
pub(crate) fn orientation_ops(orientation: u16) -> Option<(bool, bool, bool)> {
    Some(match orientation {
        2 => (false, true, false),
        3 => (false, true, true),
        4 => (false, false, true),
        5 => (true, false, false),
        6 => (true, true, false),
        7 => (true, true, true),
        8 => (true, false, true),
        _ => return None,
    })
}

/// Reorders `w x h` pixels of `stride` items each by an orientation; returns the new width and
/// height with the data.
pub(crate) fn orient_pixels<T: Copy + Default>(
    data: &[T],
    w: usize,
    h: usize,
    stride: usize,
    orientation: u16,
) -> Option<(usize, usize, Vec<T>)> {
    let (transpose, flip_x, flip_y) = orientation_ops(orientation)?;
    let (ow, oh) = if transpose { (h, w) } else { (w, h) };
    let mut out = vec![T::default(); data.len()];
    for y in 0..oh {
        for x in 0..ow {
            // Undo the flips, then the transpose, to find the source pixel.
            let tx = if flip_x { ow - 1 - x } else { x };
            let ty = if flip_y { oh - 1 - y } else { y };
            let (sx, sy) = if transpose { (ty, tx) } else { (tx, ty) };
            let s = (sy * w + sx) * stride;
            let d = (y * ow + x) * stride;
            out[d..d + stride].copy_from_slice(&data[s..s + stride]);
        }
    }
    Some((ow, oh, out))
}

impl DecodedImage {
    /// The image turned upright by an EXIF orientation (1..8), in its own mode; the same pixel
    /// moves as in [`crate::load_rgb`].
    pub fn oriented(&self, orientation: u16) -> DecodedImage {
        let (w, h) = (self.width as usize, self.height as usize);
        let mut out = self.clone();
        if !self.data.is_empty() {
            let stride = self.data.len() / (w * h).max(1);
            if let Some((ow, oh, d)) = orient_pixels(&self.data, w, h, stride, orientation) {
                out.width = ow as u32;
                out.height = oh as u32;
                out.data = d;
            }
        }
        if !self.data16.is_empty() {
            if let Some((ow, oh, d)) = orient_pixels(&self.data16, w, h, 1, orientation) {
                out.width = ow as u32;
                out.height = oh as u32;
                out.data16 = d;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oriented_matches_the_rgb_path() {
        // 3 x 2 RGB image; every orientation moves pixels as apply_exif_orientation does.
        let data: Vec<u8> = (0..6u8).flat_map(|v| [v, 10 * v, 100 + v]).collect();
        let img = DecodedImage::from_raw(3, 2, crate::PilMode::Rgb, data.clone(), None).unwrap();
        for o in 1..=8u16 {
            let a = img.oriented(o).to_rgb8();
            let b = crate::cv_imread::apply_exif_orientation(
                crate::Rgb8Image {
                    width: 3,
                    height: 2,
                    data: data.clone(),
                },
                o,
            );
            assert_eq!(a, b, "orientation {o}");
        }
        assert_eq!(img.oriented(6).width(), 2);
    }

    #[test]
    fn png_exif_chunk_is_found() {
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        let chunk = |kind: &[u8], data: &[u8]| {
            let mut c = (data.len() as u32).to_be_bytes().to_vec();
            c.extend_from_slice(kind);
            c.extend_from_slice(data);
            c.extend_from_slice(&[0, 0, 0, 0]);
            c
        };
        png.extend(chunk(b"IHDR", &[0; 13]));
        let tiff = [
            b'I', b'I', 42, 0, 8, 0, 0, 0, 1, 0, 0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0, 0, 0,
        ];
        png.extend(chunk(b"eXIf", &tiff));
        png.extend(chunk(b"IEND", &[]));
        assert_eq!(png_exif(&png), Some(&tiff[..]));
        assert_eq!(exif_orientation_of_bytes(&png), 6);
        assert_eq!(exif_orientation_of_bytes(b"not an image"), 1);
    }
}
