//! `cv2.imread(path, cv2.IMREAD_COLOR)` (eval_cam_with_crf.py), returned as RGB.
//!
//! OpenCV 5.0 `imgcodecs`: JPEG through libjpeg-turbo with RGB output for one and three
//! components (grey is replicated by libjpeg) and raw CMYK for four, converted by
//! `icvCvt_CMYK2BGR_8u_C4C3R` (`k - ((255 - c) * k >> 8)` on the Adobe-inverted samples); PNG as
//! in [`crate::png_decode`]; then `ApplyExifOrientation` with the file's EXIF orientation.

use std::path::Path;

use crate::decode::{read_file, sniff, Format};
use crate::{jpeg, png_decode, ImageError, Rgb8Image};

pub(crate) fn imread_color(path: &Path) -> Result<Rgb8Image, ImageError> {
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
            (img, jpeg::exif_orientation(&bytes))
        }
        Format::Png => {
            let raw = png_decode::read(&bytes).map_err(fail)?;
            let img = Rgb8Image {
                width: raw.width as u32,
                height: raw.height as u32,
                data: raw.to_cv_rgb(),
            };
            let orientation = raw.exif.as_deref().and_then(jpeg::tiff_orientation);
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
                None,
            )
        }
    };
    Ok(apply_exif_orientation(img, orientation.unwrap_or(1)))
}

/// OpenCV's CMYK -> RGB for libjpeg's raw (Adobe-inverted) CMYK samples.
#[inline]
fn opencv_cmyk_to_rgb(p: [u8; 4]) -> [u8; 3] {
    let k = p[3] as i32;
    let f = |c: u8| (k - (((255 - c as i32) * k) >> 8)) as u8;
    [f(p[0]), f(p[1]), f(p[2])]
}

/// OpenCV's `ApplyExifOrientation` (values 2..8; anything else leaves the image alone).
pub(crate) fn apply_exif_orientation(img: Rgb8Image, orientation: u16) -> Rgb8Image {
    let (w, h) = (img.width as usize, img.height as usize);
    match crate::orientation::orient_pixels(&img.data, w, h, 3, orientation) {
        Some((ow, oh, data)) => Rgb8Image {
            width: ow as u32,
            height: oh as u32,
            data,
        },
        None => img,
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
        assert_eq!(
            grid(&apply_exif_orientation(sample(), 1)),
            vec![vec![0, 1, 2], vec![10, 11, 12]]
        );
        assert_eq!(
            grid(&apply_exif_orientation(sample(), 2)),
            vec![vec![2, 1, 0], vec![12, 11, 10]]
        );
        assert_eq!(
            grid(&apply_exif_orientation(sample(), 3)),
            vec![vec![12, 11, 10], vec![2, 1, 0]]
        );
        assert_eq!(
            grid(&apply_exif_orientation(sample(), 4)),
            vec![vec![10, 11, 12], vec![0, 1, 2]]
        );
        assert_eq!(
            grid(&apply_exif_orientation(sample(), 5)),
            vec![vec![0, 10], vec![1, 11], vec![2, 12]]
        );
        // 6: rotate 90 degrees clockwise
        assert_eq!(
            grid(&apply_exif_orientation(sample(), 6)),
            vec![vec![10, 0], vec![11, 1], vec![12, 2]]
        );
        assert_eq!(
            grid(&apply_exif_orientation(sample(), 7)),
            vec![vec![12, 2], vec![11, 1], vec![10, 0]]
        );
        // 8: rotate 90 degrees counter-clockwise
        assert_eq!(
            grid(&apply_exif_orientation(sample(), 8)),
            vec![vec![2, 12], vec![1, 11], vec![0, 10]]
        );
    }

    #[test]
    fn opencv_cmyk_extremes() {
        assert_eq!(opencv_cmyk_to_rgb([255, 255, 255, 255]), [255, 255, 255]);
        assert_eq!(opencv_cmyk_to_rgb([0, 0, 0, 0]), [0, 0, 0]);
        assert_eq!(opencv_cmyk_to_rgb([0, 255, 128, 255]), [1, 255, 129]);
    }
}
