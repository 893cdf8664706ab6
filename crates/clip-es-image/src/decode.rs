//! A decoded image in Pillow's terms: `PIL.Image.open(path)` followed by `load()`.
//!
//! The image keeps the mode Pillow gives it, because the reference resizes BEFORE converting
//! to RGB (`_transform_resize`: `Resize` then `_convert_image_to_rgb`), and Pillow's resize
//! depends on the mode (nearest for `P`/`1`, premultiplied alpha for `RGBA`/`LA`, a 16-bit path
//! for `I;16`, four plain channels for `CMYK`).

use std::path::{Path, PathBuf};

use crate::error::ImageError;
use crate::format::{read_file, sniff, Format};
use crate::pixels::{DecodedImage, PilMode, Rgb8Image};
use crate::{jpeg, pil_convert, png_decode};

impl DecodedImage {
    /// Decodes a file like `PIL.Image.open(path)` + `load()`. JPEG and PNG are bit-exact with
    /// Pillow 13; BMP, TIFF, WebP and GIF go through the `image` crate (8-bit L/LA/RGB/RGBA,
    /// GIF as RGB with nearest-neighbour resizing like Pillow's `P`), without that guarantee.
    pub fn open(path: &Path) -> Result<Self, ImageError> {
        let bytes = read_file(path)?;
        Self::from_bytes(&bytes).map_err(|e| e.with_path(path))
    }

    /// [`DecodedImage::open`] with a choice about the EXIF orientation; also returns the file's
    /// orientation tag (1 when none).
    pub fn open_with(path: &Path, exif: crate::ExifOrientation) -> Result<(Self, u16), ImageError> {
        let bytes = read_file(path)?;
        let image = Self::from_bytes(&bytes).map_err(|e| e.with_path(path))?;
        let orientation = crate::exif_orientation(&bytes);
        Ok(match exif {
            crate::ExifOrientation::Apply => (image.oriented(orientation), orientation),
            crate::ExifOrientation::Ignore => (image, orientation),
        })
    }

    /// Decodes an image held in memory (errors name `<memory>`).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ImageError> {
        let fail = |message: String| ImageError::Decode {
            path: PathBuf::from("<memory>"),
            message,
        };
        match sniff(bytes) {
            Format::Jpeg => {
                let raster = jpeg::decode(bytes).map_err(fail)?;
                let (mode, data) = match raster.components {
                    1 => (PilMode::L, raster.data),
                    3 => (PilMode::Rgb, raster.data),
                    // Pillow always reads CMYK JPEGs with rawmode "CMYK;I" (Adobe polarity)
                    _ => (
                        PilMode::Cmyk,
                        raster.data.into_iter().map(|v| 255 - v).collect(),
                    ),
                };
                Ok(DecodedImage {
                    width: raster.width,
                    height: raster.height,
                    mode,
                    data,
                    data16: Vec::new(),
                    palette: None,
                })
            }
            Format::Png => Ok(png_decode::read(bytes).map_err(fail)?.to_pil()),
            Format::Other => other_format(bytes),
        }
    }

    /// `Image.convert("RGB")` of the image as decoded (no resizing).
    pub fn to_rgb8(&self) -> Rgb8Image {
        Rgb8Image {
            width: self.width,
            height: self.height,
            data: pil_convert::to_rgb(self),
        }
    }

    /// `Image.resize((out_w, out_h), Image.BICUBIC)` in the image's own mode, exactly as Pillow
    /// computes it (nearest for `P` and `1`; premultiplied alpha for `RGBA` and `LA`).
    pub fn resize_bicubic(&self, out_h: u32, out_w: u32) -> Result<DecodedImage, ImageError> {
        if out_h == 0 || out_w == 0 {
            return Err(ImageError::InvalidArgument(format!(
                "height and width must be > 0, got {out_h}x{out_w}"
            )));
        }
        Ok(crate::pil_resample::resize(self, out_w, out_h))
    }

    /// `Image.resize((out_w, out_h), Image.BICUBIC).convert("RGB")`: the 8-bit RGB image that
    /// torchvision's `ToTensor` sees in the reference transform.
    pub fn resized_rgb8(&self, out_h: u32, out_w: u32) -> Result<Rgb8Image, ImageError> {
        Ok(self.resize_bicubic(out_h, out_w)?.to_rgb8())
    }
}

/// BMP, TIFF, WebP, GIF via the `image` crate.
fn other_format(bytes: &[u8]) -> Result<DecodedImage, ImageError> {
    let memory = || PathBuf::from("<memory>");
    let format = image::guess_format(bytes).map_err(|_| ImageError::Unsupported {
        path: memory(),
        message: "cannot identify image file (not JPEG, PNG, BMP, TIFF, WebP or GIF)".into(),
    })?;
    let img =
        image::load_from_memory_with_format(bytes, format).map_err(|e| ImageError::Decode {
            path: memory(),
            message: e.to_string(),
        })?;
    let (w, h) = (img.width(), img.height());
    if (w as u64) * (h as u64) > crate::MAX_PIXELS {
        return Err(ImageError::Decode {
            path: memory(),
            message: format!("{w}x{h} pixels exceeds the limit"),
        });
    }
    use image::DynamicImage as D;
    let (mode, data) = match img {
        D::ImageLuma8(b) => (PilMode::L, b.into_raw()),
        D::ImageLumaA8(b) => (PilMode::La, b.into_raw()),
        D::ImageRgb8(b) => (PilMode::Rgb, b.into_raw()),
        D::ImageRgba8(b) if format == image::ImageFormat::Gif => {
            // Pillow opens GIFs as P and resizes them nearest-neighbour; an RGB image with a
            // one-colour palette per pixel behaves the same, so keep the RGB and mark it P-like.
            let rgb: Vec<u8> = b
                .into_raw()
                .chunks_exact(4)
                .flat_map(|p| [p[0], p[1], p[2]])
                .collect();
            return Ok(palette_like_rgb(w, h, rgb));
        }
        D::ImageRgba8(b) => (PilMode::Rgba, b.into_raw()),
        other => (PilMode::Rgb, other.to_rgb8().into_raw()),
    };
    Ok(DecodedImage {
        width: w,
        height: h,
        mode,
        data,
        data16: Vec::new(),
        palette: None,
    })
}

/// A `P` image whose pixels are colours: each distinct colour gets a palette slot while there
/// are at most 256; beyond that the image stays RGB (and is resized bicubically, unlike Pillow).
fn palette_like_rgb(w: u32, h: u32, rgb: Vec<u8>) -> DecodedImage {
    let mut palette: Vec<[u8; 3]> = Vec::new();
    let mut index = std::collections::HashMap::new();
    let mut indices = Vec::with_capacity(rgb.len() / 3);
    for p in rgb.chunks_exact(3) {
        let key = [p[0], p[1], p[2]];
        let next = palette.len();
        let i = *index.entry(key).or_insert(next);
        if i == next {
            if next == 256 {
                return DecodedImage {
                    width: w,
                    height: h,
                    mode: PilMode::Rgb,
                    data: rgb,
                    data16: Vec::new(),
                    palette: None,
                };
            }
            palette.push(key);
        }
        indices.push(i as u8);
    }
    palette.resize(256, [0, 0, 0]);
    DecodedImage {
        width: w,
        height: h,
        mode: PilMode::P,
        data: indices,
        data16: Vec::new(),
        palette: Some(palette),
    }
}
