//! The RGB drawing surface of every picture clip-es writes (mask overlays, heat maps, IoU charts
//! in `clip_es::viz`, the loss curve of training) and its bitmap text: the public-domain 8x8
//! font of the `font8x8` crate (basic Latin and Latin-1), scaled by an integer factor;
//! characters outside those ranges are drawn as `?`. The charts themselves stay with their
//! stages.

/// An RGB colour.
pub type Rgb = [u8; 3];

/// An RGB drawing surface, row-major, interleaved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Canvas {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

/// Size of a glyph cell of the bitmap font at scale 1.
pub const GLYPH: usize = 8;

fn glyph(c: char) -> [u8; 8] {
    let u = c as u32;
    if u < 128 {
        font8x8::legacy::BASIC_LEGACY[u as usize]
    } else if (0xA0..=0xFF).contains(&u) {
        font8x8::legacy::LATIN_LEGACY[(u - 0xA0) as usize]
    } else {
        font8x8::legacy::BASIC_LEGACY['?' as usize]
    }
}

/// Width in pixels of `text` at `scale`.
pub fn text_width(text: &str, scale: usize) -> usize {
    text.chars().count() * GLYPH * scale
}

impl Canvas {
    pub fn new(width: usize, height: usize, background: Rgb) -> Self {
        let mut data = Vec::with_capacity(width * height * 3);
        for _ in 0..width * height {
            data.extend_from_slice(&background);
        }
        Canvas {
            width,
            height,
            data,
        }
    }

    pub fn pixel(&self, x: usize, y: usize) -> Rgb {
        let i = (y * self.width + x) * 3;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }

    /// Sets a pixel; points outside the canvas are clipped.
    pub fn set(&mut self, x: usize, y: usize, c: Rgb) {
        if x < self.width && y < self.height {
            let i = (y * self.width + x) * 3;
            self.data[i..i + 3].copy_from_slice(&c);
        }
    }

    /// Mixes `c` into the pixel with weight `alpha`.
    pub fn blend(&mut self, x: usize, y: usize, c: Rgb, alpha: f32) {
        if x < self.width && y < self.height {
            let i = (y * self.width + x) * 3;
            for (d, &v) in self.data[i..i + 3].iter_mut().zip(&c) {
                let m = *d as f32 * (1.0 - alpha) + v as f32 * alpha;
                *d = m.round().clamp(0.0, 255.0) as u8;
            }
        }
    }

    pub fn fill_rect(&mut self, x: usize, y: usize, w: usize, h: usize, c: Rgb) {
        for yy in y..(y + h).min(self.height) {
            for xx in x..(x + w).min(self.width) {
                self.set(xx, yy, c);
            }
        }
    }

    /// Draws `text` with its top-left corner at (x, y), each font pixel `scale` x `scale`,
    /// clipped to the canvas.
    pub fn draw_text(&mut self, x: usize, y: usize, text: &str, scale: usize, c: Rgb) {
        for (k, ch) in text.chars().enumerate() {
            let g = glyph(ch);
            let x0 = x + k * GLYPH * scale;
            for (row, bits) in g.iter().enumerate() {
                for col in 0..GLYPH {
                    if bits >> col & 1 == 1 {
                        self.fill_rect(x0 + col * scale, y + row * scale, scale, scale, c);
                    }
                }
            }
        }
    }

    /// Copies `other` onto this canvas with its top-left corner at (x, y).
    pub fn paste(&mut self, other: &Canvas, x: usize, y: usize) {
        for yy in 0..other.height {
            for xx in 0..other.width {
                self.set(x + xx, y + yy, other.pixel(xx, yy));
            }
        }
    }

    /// An 8-bit RGB PNG.
    pub fn encode_png(&self) -> Result<Vec<u8>, png::EncodingError> {
        let mut out = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut out, self.width as u32, self.height as u32);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            let mut w = enc.write_header()?;
            w.write_image_data(&self.data)?;
            w.finish()?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_drawn_in_glyph_cells_and_clipped() {
        let mut c = Canvas::new(20, 10, [0, 0, 0]);
        c.draw_text(0, 0, "Hé", 1, [9, 9, 9]);
        let lit = |x0: usize, x1: usize| {
            (0..10)
                .flat_map(|y| (x0..x1).map(move |x| (x, y)))
                .filter(|&(x, y)| c.pixel(x, y) == [9, 9, 9])
                .count()
        };
        assert!(lit(0, 8) > 5 && lit(8, 16) > 5, "both glyphs drawn");
        assert_eq!(text_width("Hé", 2), 32);
        // the second character of "HH" at scale 2 starts at x = 16, outside a 20-wide canvas
        // but for its first columns: nothing panics
        c.draw_text(0, 0, "HH", 2, [1, 1, 1]);
    }
}
