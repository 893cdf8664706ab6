//! The pixel types every decoder and resampler shares: [`PilMode`], [`DecodedImage`] (an image
//! as Pillow holds it, with its constructors and accessors), [`Rgb8Image`] and the
//! [`MAX_PIXELS`] limit. Decoding lives in `decode` (and the format modules), resampling in
//! `pil_resample`; both depend on this module and not on each other's types.

use crate::error::ImageError;

/// Pillow refuses images above `2 * Image.MAX_IMAGE_PIXELS` pixels (DecompressionBombError);
/// the same limit keeps a corrupt header from asking for an absurd allocation.
pub const MAX_PIXELS: u64 = 2 * (1024 * 1024 * 1024 / 4 / 3);

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

impl DecodedImage {
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
}

/// An 8-bit RGB image, row-major, interleaved (HWC).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rgb8Image {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl Rgb8Image {
    /// The pixel at (x, y) as [r, g, b].
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let i = (y as usize * self.width as usize + x as usize) * 3;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }
}
