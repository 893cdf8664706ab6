//! PNG decoding with the `png` crate, unpacked the way Pillow's `PngImagePlugin` (its `_MODES`
//! table and `Unpack.c`) and OpenCV's `grfmt_png.cpp` (libpng transforms for IMREAD_COLOR) do.
//!
//! Pillow, per (bit depth, colour type): 1-bit grey -> mode `1` (0/255); 2/4-bit grey -> `L`
//! scaled by 85/17; 8-bit grey -> `L`; RGB 8/16 -> `RGB` (16-bit: high byte); palette
//! 1/2/4/8 -> `P` (indices, palette padded with black to 256); grey+alpha 8 -> `LA`, 16 ->
//! `RGBA` (grey replicated, high bytes); RGBA 8/16 -> `RGBA`. tRNS only lands in
//! `info["transparency"]`, which `convert("RGB")` ignores.
//!
//! One deviation from Pillow: 16-bit grey becomes `L` holding the high byte of each sample,
//! as OpenCV and image viewers show it and as Pillow itself treats 16-bit RGB. Pillow opens it
//! as `I;16` and its `convert("RGB")` saturates every value above 255, so a normal 16-bit
//! grey photo would reach CLIP as a white picture while the CRF and the pictures (OpenCV's
//! decoding) see the real one; every stage now sees the same 8-bit image.
//!
//! OpenCV IMREAD_COLOR: `png_set_strip_16` (high byte), `png_set_strip_alpha` (no compositing),
//! palette expanded, 1/2/4-bit grey expanded to 8 bits, grey replicated; tRNS ignored.

use std::io::Cursor;

use crate::pixels::{DecodedImage, PilMode};

/// The PNG's samples as stored (rows unpadded, sub-byte samples still packed), after
/// de-interlacing.
pub(crate) struct RawPng {
    pub width: usize,
    pub height: usize,
    pub color: png::ColorType,
    pub bits: u8,
    pub line_size: usize,
    pub data: Vec<u8>,
    pub palette: Option<Vec<u8>>,
    pub exif: Option<Vec<u8>>,
}

pub(crate) fn read(bytes: &[u8]) -> Result<RawPng, String> {
    let limits = png::Limits {
        bytes: usize::MAX / 2,
    };
    let mut decoder = png::Decoder::new_with_limits(Cursor::new(bytes), limits);
    decoder.set_transformations(png::Transformations::IDENTITY);
    let mut reader = decoder
        .read_info()
        .map_err(|e| format!("broken PNG file: {e}"))?;
    let (width, height, color, bit_depth, palette, exif) = {
        let info = reader.info();
        (
            info.width as usize,
            info.height as usize,
            info.color_type,
            info.bit_depth,
            info.palette.as_ref().map(|p| p.to_vec()),
            info.exif_metadata.as_ref().map(|e| e.to_vec()),
        )
    };
    if width == 0 || height == 0 {
        return Err("PNG image has no pixels".into());
    }
    if (width as u64) * (height as u64) > crate::MAX_PIXELS {
        return Err(format!(
            "{width}x{height} pixels exceeds the limit of {}",
            crate::MAX_PIXELS
        ));
    }
    let bits = bit_depth as u8;
    let size = reader
        .output_buffer_size()
        .ok_or("PNG image is too large")?;
    let mut data = Vec::new();
    data.try_reserve_exact(size)
        .map_err(|_| "PNG image is too large to hold in memory")?;
    data.resize(size, 0);
    let out = reader.next_frame(&mut data).map_err(|e| match e {
        png::DecodingError::IoError(_) => format!("image file is truncated: {e}"),
        _ => format!("broken PNG data: {e}"),
    })?;
    if out.color_type != color || out.bit_depth as u8 != bits {
        return Err("PNG decoder changed the sample format".into());
    }
    let line_size = out.line_size;
    data.truncate(line_size * height);
    if color == png::ColorType::Indexed && palette.is_none() {
        return Err("palette image without a PLTE chunk".into());
    }
    Ok(RawPng {
        width,
        height,
        color,
        bits,
        line_size,
        data,
        palette,
        exif,
    })
}

impl RawPng {
    fn channels(&self) -> usize {
        match self.color {
            png::ColorType::Grayscale | png::ColorType::Indexed => 1,
            png::ColorType::GrayscaleAlpha => 2,
            png::ColorType::Rgb => 3,
            png::ColorType::Rgba => 4,
        }
    }

    /// Sample `c` of pixel `x` in row `y`, at its stored depth (1..16 bits).
    #[inline]
    fn sample(&self, x: usize, y: usize, c: usize) -> u16 {
        let row = &self.data[y * self.line_size..(y + 1) * self.line_size];
        match self.bits {
            16 => {
                let i = (x * self.channels() + c) * 2;
                u16::from_be_bytes([row[i], row[i + 1]])
            }
            8 => row[x * self.channels() + c] as u16,
            b => {
                // sub-byte samples only exist for one-channel types, most significant bits first
                let b = b as usize;
                let bit = x * b;
                let byte = row[bit / 8];
                let shift = 8 - b - bit % 8;
                ((byte >> shift) & ((1u8 << b) - 1)) as u16
            }
        }
    }

    /// High byte of a sample (Pillow's `;16B` rawmodes and libpng's strip_16 both keep it).
    #[inline]
    fn sample8(&self, x: usize, y: usize, c: usize) -> u8 {
        let v = self.sample(x, y, c);
        if self.bits == 16 {
            (v >> 8) as u8
        } else {
            v as u8
        }
    }

    /// Grey sample expanded to 8 bits the way both Pillow (`L;2`, `L;4`, `1`) and libpng
    /// (`png_set_expand_gray_1_2_4_to_8`) do it: by repeating the bit pattern.
    #[inline]
    fn grey8(&self, x: usize, y: usize) -> u8 {
        let v = self.sample(x, y, 0);
        match self.bits {
            1 => (v as u8) * 255,
            2 => (v as u8) * 85,
            4 => (v as u8) * 17,
            8 => v as u8,
            _ => (v >> 8) as u8,
        }
    }

    /// The palette as 256 RGB triples, missing entries black (Pillow's calloc'ed palette).
    fn palette256(&self) -> Vec<[u8; 3]> {
        let mut out = vec![[0u8; 3]; 256];
        if let Some(p) = &self.palette {
            for (i, rgb) in p.chunks_exact(3).take(256).enumerate() {
                out[i] = [rgb[0], rgb[1], rgb[2]];
            }
        }
        out
    }

    /// Pillow's view of the image.
    pub(crate) fn to_pil(&self) -> DecodedImage {
        let (w, h) = (self.width, self.height);
        let mut u8s = Vec::new();
        use png::ColorType as C;
        let mode = match (self.color, self.bits) {
            (C::Grayscale, 1) => PilMode::Bilevel,
            // 16-bit grey included: high byte (see the module header).
            (C::Grayscale, _) => PilMode::L,
            (C::Rgb, _) => PilMode::Rgb,
            (C::Indexed, _) => PilMode::P,
            (C::GrayscaleAlpha, 8) => PilMode::La,
            (C::GrayscaleAlpha, _) => PilMode::Rgba,
            (C::Rgba, _) => PilMode::Rgba,
        };
        match mode {
            PilMode::Bilevel | PilMode::L => {
                u8s.reserve_exact(w * h);
                for y in 0..h {
                    for x in 0..w {
                        u8s.push(self.grey8(x, y));
                    }
                }
            }
            PilMode::P => {
                u8s.reserve_exact(w * h);
                for y in 0..h {
                    for x in 0..w {
                        u8s.push(self.sample(x, y, 0) as u8);
                    }
                }
            }
            _ => {
                let grey_alpha = self.color == C::GrayscaleAlpha;
                let n = mode.channels();
                u8s.reserve_exact(w * h * n);
                for y in 0..h {
                    for x in 0..w {
                        if grey_alpha && n == 4 {
                            let l = self.sample8(x, y, 0);
                            u8s.extend_from_slice(&[l, l, l, self.sample8(x, y, 1)]);
                        } else {
                            for c in 0..n {
                                u8s.push(self.sample8(x, y, c));
                            }
                        }
                    }
                }
            }
        }
        let palette = (mode == PilMode::P).then(|| self.palette256());
        DecodedImage {
            width: w as u32,
            height: h as u32,
            mode,
            data: u8s,
            data16: Vec::new(),
            palette,
        }
    }

    /// OpenCV's IMREAD_COLOR view, as RGB (OpenCV would store it as BGR).
    pub(crate) fn to_cv_rgb(&self) -> Vec<u8> {
        let (w, h) = (self.width, self.height);
        let mut out = Vec::with_capacity(w * h * 3);
        use png::ColorType as C;
        match self.color {
            C::Grayscale | C::GrayscaleAlpha => {
                for y in 0..h {
                    for x in 0..w {
                        let v = self.grey8(x, y);
                        out.extend_from_slice(&[v, v, v]);
                    }
                }
            }
            C::Indexed => {
                let pal = self.palette256();
                for y in 0..h {
                    for x in 0..w {
                        out.extend_from_slice(&pal[self.sample(x, y, 0) as usize]);
                    }
                }
            }
            C::Rgb | C::Rgba => {
                for y in 0..h {
                    for x in 0..w {
                        for c in 0..3 {
                            out.push(self.sample8(x, y, c));
                        }
                    }
                }
            }
        }
        out
    }
}
