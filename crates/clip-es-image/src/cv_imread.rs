//! `cv2.imread(path, cv2.IMREAD_COLOR)` (eval_cam_with_crf.py), returned as RGB.
//!
//! OpenCV 5.0 `imgcodecs`: JPEG through libjpeg-turbo with RGB output for one and three
//! components (grey is replicated by libjpeg) and raw CMYK for four, converted by
//! `icvCvt_CMYK2BGR_8u_C4C3R` (`k - ((255 - c) * k >> 8)` on the Adobe-inverted samples); PNG as
//! in [`crate::png_decode`]; then `ApplyExifOrientation` with the file's EXIF orientation
//! (only with [`ExifOrientation::Apply`]: clip-es reads the stored grid by default, see
//! [`crate::orientation`]).

use std::path::Path;

use crate::format::{read_file, sniff, Format};
use crate::{jpeg, png_decode, ExifOrientation, ImageError, Rgb8Image};

/// The image and the file's EXIF orientation (1 when none), applied or not as asked.
pub(crate) fn imread_color(
    path: &Path,
    exif: ExifOrientation,
) -> Result<(Rgb8Image, u16), ImageError> {
    let bytes = read_file(path)?;
    let fail = |message: String| ImageError::Decode {
        path: path.to_path_buf(),
        message,
    };
    let (img, orientation) = match sniff(&bytes) {
        Format::Jpeg => {
            let r = jpeg::decode(&bytes).map_err(fail)?;
            let data = match r.components {
                1 => r.data.iter().flat_map(|&v| [v, v, v]).collect(),
                3 => r.data,
                _ => r
                    .data
                    .chunks_exact(4)
                    .flat_map(|p| opencv_cmyk_to_rgb([p[0], p[1], p[2], p[3]]))
                    .collect(),
            };
            let img = Rgb8Image {
                width: r.width,
                height: r.height,
                data,
            };
            (img, crate::exif_orientation(&bytes))
        }
        Format::Png => {
            let raw = png_decode::read(&bytes).map_err(fail)?;
            let img = Rgb8Image {
                width: raw.width as u32,
                height: raw.height as u32,
                data: raw.to_cv_rgb(),
            };
            let orientation = raw
                .exif
                .as_deref()
                .and_then(jpeg::tiff_orientation)
                .filter(|v| (1..=8).contains(v))
                .unwrap_or(1);
            (img, orientation)
        }
        Format::Other => {
            let dec = image::load_from_memory(&bytes).map_err(|e| match e {
                image::ImageError::Unsupported(u) => ImageError::Unsupported {
                    path: path.to_path_buf(),
                    message: u.to_string(),
                },
                other => fail(other.to_string()),
            })?;
            let rgb = dec.to_rgb8();
            (
                Rgb8Image {
                    width: rgb.width(),
                    height: rgb.height(),
                    data: rgb.into_raw(),
                },
                1,
            )
        }
    };
    Ok(match exif {
        ExifOrientation::Apply => (img.oriented(orientation), orientation),
        ExifOrientation::Ignore => (img, orientation),
    })
}

/// OpenCV's CMYK -> RGB for libjpeg's raw (Adobe-inverted) CMYK samples.
#[inline]
fn opencv_cmyk_to_rgb(p: [u8; 4]) -> [u8; 3] {
    let k = p[3] as i32;
    let f = |c: u8| (k - (((255 - c as i32) * k) >> 8)) as u8;
    [f(p[0]), f(p[1]), f(p[2])]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opencv_cmyk_extremes() {
        assert_eq!(opencv_cmyk_to_rgb([255, 255, 255, 255]), [255, 255, 255]);
        assert_eq!(opencv_cmyk_to_rgb([0, 0, 0, 0]), [0, 0, 0]);
        assert_eq!(opencv_cmyk_to_rgb([0, 255, 128, 255]), [1, 255, 129]);
    }
}
