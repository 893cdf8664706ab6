//! The EXIF orientation tag (TIFF tag 0x0112) and its application.
//!
//! The reference reads its images two ways: `PIL.Image.open` for the CAMs (orientation
//! ignored: the pixels as stored) and `cv2.imread` for the CRF (orientation applied). A photo
//! whose tag rotates it therefore gets CAMs on one pixel grid and a CRF on another. clip-es reads
//! the stored grid everywhere by default (what the datasets' ground truth uses and what the
//! reference's CAMs see) and applies the tag in every stage alike only when asked.

use crate::format::{sniff, Format};
use crate::{jpeg, DecodedImage, Rgb8Image};

/// What to do with an image's EXIF orientation tag.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExifOrientation {
    /// Read the pixels as stored (Pillow's `Image.open`; the default of every clip-es stage).
    #[default]
    Ignore,
    /// Rotate / flip as the tag says (OpenCV's `imread`, Pillow's `ImageOps.exif_transpose`).
    Apply,
}

/// The EXIF orientation of an encoded image (JPEG APP1 or PNG eXIf; 1..=8), 1 when the file has
/// none or an unreadable one. Other formats: 1.
pub fn exif_orientation(bytes: &[u8]) -> u16 {
    let o = match sniff(bytes) {
        Format::Jpeg => jpeg::exif_orientation(bytes),
        Format::Png => png_exif(bytes).and_then(jpeg::tiff_orientation),
        Format::Other => None,
    };
    o.filter(|v| (1..=8).contains(v)).unwrap_or(1)
}

/// The data of a PNG's eXIf chunk (before the image data), by walking the chunk list.
fn png_exif(bytes: &[u8]) -> Option<&[u8]> {
    let mut pos = 8usize;
    while pos + 8 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[pos..pos + 4].try_into().ok()?) as usize;
        let kind = &bytes[pos + 4..pos + 8];
        let data = bytes.get(pos + 8..(pos + 8).checked_add(len)?)?;
        match kind {
            b"eXIf" => return Some(data),
            b"IDAT" | b"IEND" => return None,
            _ => pos = pos + 12 + len,
        }
    }
    None
}

/// (transpose, flip_x, flip_y), applied in that order, for orientations 2..=8 (OpenCV's
/// `ApplyExifOrientation`); None for 1 and invalid values.
fn transform(orientation: u16) -> Option<(bool, bool, bool)> {
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

/// Re-arranges `w x h` pixels of `ch` samples each; returns the data and the new (w, h).
fn orient<T: Copy + Default>(
    data: &[T],
    w: usize,
    h: usize,
    ch: usize,
    orientation: u16,
) -> Option<(Vec<T>, usize, usize)> {
    let (transpose, flip_x, flip_y) = transform(orientation)?;
    let (ow, oh) = if transpose { (h, w) } else { (w, h) };
    let mut out = vec![T::default(); w * h * ch];
    for y in 0..oh {
        for x in 0..ow {
            // undo the flips, then the transpose, to find the source pixel
            let tx = if flip_x { ow - 1 - x } else { x };
            let ty = if flip_y { oh - 1 - y } else { y };
            let (sx, sy) = if transpose { (ty, tx) } else { (tx, ty) };
            let s = (sy * w + sx) * ch;
            let d = (y * ow + x) * ch;
            out[d..d + ch].copy_from_slice(&data[s..s + ch]);
        }
    }
    Some((out, ow, oh))
}

impl Rgb8Image {
    /// The image turned as the EXIF `orientation` says (1 and invalid values: unchanged).
    pub fn oriented(self, orientation: u16) -> Rgb8Image {
        match orient(
            &self.data,
            self.width as usize,
            self.height as usize,
            3,
            orientation,
        ) {
            Some((data, w, h)) => Rgb8Image {
                width: w as u32,
                height: h as u32,
                data,
            },
            None => self,
        }
    }
}

impl DecodedImage {
    /// The image turned as the EXIF `orientation` says (1 and invalid values: unchanged), in
    /// its own mode: the same pixel grid as [`Rgb8Image::oriented`] of its RGB conversion.
    pub fn oriented(self, orientation: u16) -> DecodedImage {
        let (w, h) = (self.width as usize, self.height as usize);
        if transform(orientation).is_none() {
            return self;
        }
        let mut out = self;
        if out.mode == crate::PilMode::I16 {
            if let Some((d, ow, oh)) = orient(&out.data16, w, h, 1, orientation) {
                (out.data16, out.width, out.height) = (d, ow as u32, oh as u32);
            }
        } else if let Some((d, ow, oh)) = orient(&out.data, w, h, out.mode.channels(), orientation)
        {
            (out.data, out.width, out.height) = (d, ow as u32, oh as u32);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Rgb8Image {
        // 3 wide, 2 high; pixel value = 10 * y + x in all channels
        let data = (0..2)
            .flat_map(|y| (0..3).flat_map(move |x| [10 * y + x; 3]))
            .collect();
        Rgb8Image {
            width: 3,
            height: 2,
            data,
        }
    }

    fn grid(img: &Rgb8Image) -> Vec<Vec<u8>> {
        (0..img.height)
            .map(|y| (0..img.width).map(|x| img.pixel(x, y)[0]).collect())
            .collect()
    }

    #[test]
    fn orientations_match_opencv_semantics() {
        let g = |o| grid(&sample().oriented(o));
        assert_eq!(g(1), vec![vec![0, 1, 2], vec![10, 11, 12]]);
        assert_eq!(g(9), g(1));
        assert_eq!(g(2), vec![vec![2, 1, 0], vec![12, 11, 10]]);
        assert_eq!(g(3), vec![vec![12, 11, 10], vec![2, 1, 0]]);
        assert_eq!(g(4), vec![vec![10, 11, 12], vec![0, 1, 2]]);
        assert_eq!(g(5), vec![vec![0, 10], vec![1, 11], vec![2, 12]]);
        // 6: rotate 90 degrees clockwise
        assert_eq!(g(6), vec![vec![10, 0], vec![11, 1], vec![12, 2]]);
        assert_eq!(g(7), vec![vec![12, 2], vec![11, 1], vec![10, 0]]);
        assert_eq!(g(8), vec![vec![2, 12], vec![1, 11], vec![0, 10]]);
    }

    #[test]
    fn decoded_image_turns_like_its_rgb() {
        let rgb = sample();
        let d = DecodedImage::from_raw(3, 2, crate::PilMode::Rgb, rgb.data.clone(), None).unwrap();
        for o in 1..=8 {
            assert_eq!(
                d.clone().oriented(o).to_rgb8(),
                rgb.clone().oriented(o),
                "{o}"
            );
        }
        let g = DecodedImage::from_i16(3, 2, (0..6).collect())
            .unwrap()
            .oriented(6);
        assert_eq!((g.width(), g.height()), (2, 3));
        assert_eq!(g.samples_i16(), &[3, 0, 4, 1, 5, 2]);
    }

    #[test]
    fn png_exif_chunk_is_found() {
        let mut tiff = b"II\x2a\x00\x08\x00\x00\x00\x01\x00".to_vec();
        tiff.extend([0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0]);
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        let chunk = |png: &mut Vec<u8>, kind: &[u8], data: &[u8]| {
            png.extend((data.len() as u32).to_be_bytes());
            png.extend(kind);
            png.extend(data);
            png.extend([0; 4]); // CRC: not checked here
        };
        chunk(&mut png, b"IHDR", &[0; 13]);
        chunk(&mut png, b"eXIf", &tiff);
        assert_eq!(exif_orientation(&png), 6);
        png.truncate(png.len() - 10);
        assert_eq!(exif_orientation(&png), 1);
        assert_eq!(exif_orientation(b"GIF89a"), 1);
    }
}
