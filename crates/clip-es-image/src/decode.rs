//! A decoded image in Pillow's terms: `PIL.Image.open(path)` followed by `load()`.
//!
//! The image keeps the mode Pillow gives it, because the reference resizes BEFORE converting
//! to RGB (`_transform_resize`: `Resize` then `_convert_image_to_rgb`), and Pillow's resize
//! depends on the mode (nearest for `P`/`1`, premultiplied alpha for `RGBA`/`LA`, a 16-bit path
//! for `I;16`, four plain channels for `CMYK`).

use std::path::{Path, PathBuf};

use crate::{jpeg, pil_convert, png_decode, ImageError, Rgb8Image};

/// Pillow's image modes that the decoders here produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PilMode {
    /// `1`: bilevel, stored as 0 / 255 bytes as Pillow does.
    Bilevel,
    /// `L`: 8-bit grey.
    L,
    /// `LA`: grey + alpha.
    La,
    /// `I;16`: 16-bit grey, built with [`DecodedImage::from_i16`]. A 16-bit greyscale PNG is
    /// decoded as `L` (its high bytes) instead, unlike Pillow (see `png_decode`).
    I16,
    /// `RGB`.
    Rgb,
    /// `RGBA`.
    Rgba,
    /// `P`: palette indices (palette in [`DecodedImage::palette`]).
    P,
    /// `CMYK`, as Pillow holds it: the Adobe-inverted bytes of the file inverted back.
    Cmyk,
}

impl PilMode {
    /// Pillow's name of the mode.
    pub fn name(self) -> &'static str {
        match self {
            PilMode::Bilevel => "1",
            PilMode::L => "L",
            PilMode::La => "LA",
            PilMode::I16 => "I;16",
            PilMode::Rgb => "RGB",
            PilMode::Rgba => "RGBA",
            PilMode::P => "P",
            PilMode::Cmyk => "CMYK",
        }
    }

    /// Samples per pixel in the buffers of [`DecodedImage`].
    pub fn channels(self) -> usize {
        match self {
            PilMode::Bilevel | PilMode::L | PilMode::I16 | PilMode::P => 1,
            PilMode::La => 2,
            PilMode::Rgb => 3,
            PilMode::Rgba | PilMode::Cmyk => 4,
        }
    }
}

/// An image as Pillow holds it after `Image.open(path).load()`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedImage {
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) mode: PilMode,
    /// Interleaved 8-bit samples (`mode.channels()` per pixel); empty for `I;16`.
    pub(crate) data: Vec<u8>,
    /// 16-bit samples for `I;16`; empty otherwise.
    pub(crate) data16: Vec<u16>,
    /// 256 RGB entries for `P`.
    pub(crate) palette: Option<Vec<[u8; 3]>>,
}

/// The container format, recognised from the first bytes as Pillow does (not the extension).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    Jpeg,
    Png,
    Other,
}

pub(crate) fn sniff(bytes: &[u8]) -> Format {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Format::Jpeg
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Format::Png
    } else {
        Format::Other
    }
}

pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, ImageError> {
    std::fs::read(path).map_err(|source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    })
}

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

    /// Builds an image from raw samples (`mode.channels()` bytes per pixel, row-major). For
    /// `P` give `palette`; for `I;16` use [`DecodedImage::from_i16`].
    pub fn from_raw(
        width: u32,
        height: u32,
        mode: PilMode,
        data: Vec<u8>,
        palette: Option<Vec<[u8; 3]>>,
    ) -> Result<Self, ImageError> {
        let bad = |m: String| Err(ImageError::InvalidArgument(m));
        if mode == PilMode::I16 {
            return bad("I;16 samples are 16-bit: use from_i16".into());
        }
        if width == 0 || height == 0 {
            return bad(format!("empty image {width}x{height}"));
        }
        let need = width as usize * height as usize * mode.channels();
        if data.len() != need {
            return bad(format!(
                "{} bytes for a {width}x{height} {} image, need {need}",
                data.len(),
                mode.name()
            ));
        }
        let palette = match (mode, palette) {
            (PilMode::P, Some(mut p)) if p.len() <= 256 => {
                p.resize(256, [0, 0, 0]);
                Some(p)
            }
            (PilMode::P, _) => {
                return bad("a P image needs a palette of at most 256 entries".into())
            }
            _ => None,
        };
        let data = if mode == PilMode::Bilevel {
            data.into_iter()
                .map(|v| if v != 0 { 255 } else { 0 })
                .collect()
        } else {
            data
        };
        Ok(DecodedImage {
            width,
            height,
            mode,
            data,
            data16: Vec::new(),
            palette,
        })
    }

    /// Builds an `I;16` image from 16-bit samples.
    pub fn from_i16(width: u32, height: u32, data: Vec<u16>) -> Result<Self, ImageError> {
        if width == 0 || height == 0 || data.len() != width as usize * height as usize {
            return Err(ImageError::InvalidArgument(format!(
                "{} samples for a {width}x{height} I;16 image",
                data.len()
            )));
        }
        Ok(DecodedImage {
            width,
            height,
            mode: PilMode::I16,
            data: Vec::new(),
            data16: data,
            palette: None,
        })
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    pub fn mode(&self) -> PilMode {
        self.mode
    }

    /// Interleaved 8-bit samples (`mode().channels()` per pixel); empty for `I;16`.
    pub fn samples(&self) -> &[u8] {
        &self.data
    }

    /// The 16-bit samples of an `I;16` image; empty otherwise.
    pub fn samples_i16(&self) -> &[u16] {
        &self.data16
    }

    /// The 256-entry palette of a `P` image.
    pub fn palette(&self) -> Option<&[[u8; 3]]> {
        self.palette.as_deref()
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

impl ImageError {
    /// Replaces the `<memory>` placeholder with the file the bytes came from.
    pub(crate) fn with_path(self, path: &Path) -> ImageError {
        let path = path.to_path_buf();
        match self {
            ImageError::Decode { message, .. } => ImageError::Decode { path, message },
            ImageError::Unsupported { message, .. } => ImageError::Unsupported { path, message },
            ImageError::Io { source, .. } => ImageError::Io { path, source },
            other => other,
        }
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
