//! Label maps as 8-bit PNGs, the format of VOC's `SegmentationClass` files, the pseudo masks
//! (reference `eval_cam_with_crf.py` writes them with `cv2.imwrite`), predictions and training
//! targets: the ignore label, the PASCAL VOC colour map, and one reader and one writer.

use std::path::{Path, PathBuf};

/// The label of pixels that no class claims: VOC's object borders, pseudo-mask pixels below the
/// confidence threshold. The segmentation loss and the evaluator skip them.
pub const IGNORE_LABEL: u8 = 255;

/// Why a label PNG cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum LabelPngError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

/// The PASCAL VOC colour of a label value (the devkit's `bitget` construction; 0 black, 255
/// cream).
pub fn voc_colour(label: u8) -> [u8; 3] {
    let (mut r, mut g, mut b) = (0u8, 0u8, 0u8);
    let mut c = label as u32;
    for j in 0..8 {
        r |= ((c & 1) as u8) << (7 - j);
        g |= (((c >> 1) & 1) as u8) << (7 - j);
        b |= (((c >> 2) & 1) as u8) << (7 - j);
        c >>= 3;
    }
    [r, g, b]
}

/// The PASCAL VOC colour map, 256 RGB entries ([`voc_colour`] of 0..=255), as a PNG `PLTE`.
pub fn voc_palette() -> Vec<u8> {
    (0..=255u8).flat_map(voc_colour).collect()
}

/// Encodes an 8-bit label map as a PNG: grayscale (what `cv2.imwrite` writes for the
/// reference's masks) or indexed with the VOC palette.
pub fn encode_label_png(
    labels: &[u8],
    width: usize,
    height: usize,
    palette: bool,
) -> Result<Vec<u8>, png::EncodingError> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, width as u32, height as u32);
        enc.set_depth(png::BitDepth::Eight);
        if palette {
            enc.set_color(png::ColorType::Indexed);
            enc.set_palette(voc_palette());
        } else {
            enc.set_color(png::ColorType::Grayscale);
        }
        let mut writer = enc.write_header()?;
        writer.write_image_data(labels)?;
        writer.finish()?;
    }
    Ok(out)
}

/// An 8-bit label map read from a PNG, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelMap {
    pub width: usize,
    pub height: usize,
    pub labels: Vec<u8>,
}

/// Reads a label PNG as PIL's `np.array(Image.open(path))` does for VOC files: the palette
/// indices of an indexed PNG (any bit depth) or the values of a grayscale PNG of at most 8 bits
/// (2- and 4-bit grey scaled to 0..255 as PIL's "L", 1-bit as 0 / 1 as PIL's "1").
/// Colour, 16-bit and alpha PNGs are errors.
pub fn read_label_png(path: &Path) -> Result<LabelMap, LabelPngError> {
    let invalid = |message: String| LabelPngError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let file = std::fs::File::open(path).map_err(|source| LabelPngError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::IDENTITY);
    let bad = |e: png::DecodingError| invalid(format!("not a readable PNG: {e}"));
    let mut reader = decoder.read_info().map_err(bad)?;
    let (color, depth) = reader.output_color_type();
    match color {
        png::ColorType::Indexed | png::ColorType::Grayscale => {}
        other => {
            return Err(invalid(format!(
                "{other:?} PNG ({} channels); a label map must be a palette or single-channel PNG",
                other.samples()
            )))
        }
    }
    let bits = match depth {
        png::BitDepth::One => 1,
        png::BitDepth::Two => 2,
        png::BitDepth::Four => 4,
        png::BitDepth::Eight => 8,
        png::BitDepth::Sixteen => return Err(invalid("16-bit PNG; label maps are 8-bit".into())),
    };
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| invalid("PNG too large".into()))?;
    let mut buf = vec![0u8; size];
    let info = reader.next_frame(&mut buf).map_err(bad)?;
    let (w, h) = (info.width as usize, info.height as usize);
    let mut labels = Vec::with_capacity(w * h);
    for row in buf.chunks(info.line_size).take(h) {
        if bits == 8 {
            labels.extend_from_slice(&row[..w]);
        } else {
            let per_byte = 8 / bits;
            let mask = (1u8 << bits) - 1;
            for x in 0..w {
                let byte = row[x / per_byte];
                let shift = 8 - bits * (x % per_byte + 1);
                let v = (byte >> shift) & mask;
                // PIL reads 2- and 4-bit grayscale as "L", scaled to 0..255; 1-bit as "1", whose
                // array is boolean (0 / 1); palette indices stay as they are.
                let scaled = color == png::ColorType::Grayscale && bits > 1;
                labels.push(if scaled { v * (255 / mask) } else { v });
            }
        }
    }
    Ok(LabelMap {
        width: w,
        height: h,
        labels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn palette_matches_voc() {
        let p = voc_palette();
        assert_eq!(p.len(), 768);
        assert_eq!(&p[0..3], &[0, 0, 0]);
        assert_eq!(&p[3..6], &[128, 0, 0]);
        assert_eq!(&p[15 * 3..15 * 3 + 3], &[192, 128, 128]);
        assert_eq!(&p[255 * 3..], &[224, 224, 192]);
        assert_eq!(voc_colour(15), [192, 128, 128]);
    }

    #[test]
    fn label_png_round_trip_and_low_bit_depths() {
        let dir = std::env::temp_dir().join(format!("clip-es-data-labels-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let labels: Vec<u8> = (0..35)
            .map(|i| {
                if i % 7 == 0 {
                    IGNORE_LABEL
                } else {
                    (i % 21) as u8
                }
            })
            .collect();
        for palette in [false, true] {
            let f = dir.join(format!("m{palette}.png"));
            std::fs::write(&f, encode_label_png(&labels, 7, 5, palette).unwrap()).unwrap();
            let got = read_label_png(&f).unwrap();
            assert_eq!((got.width, got.height), (7, 5));
            assert_eq!(got.labels, labels);
        }
        // a 4-bit palette PNG reads as its palette indices, as PIL reads it
        let f = dir.join("p4.png");
        {
            let mut out = Vec::new();
            let mut enc = png::Encoder::new(&mut out, 3, 1);
            enc.set_color(png::ColorType::Indexed);
            enc.set_depth(png::BitDepth::Four);
            enc.set_palette(voc_palette()[..48].to_vec());
            let mut w = enc.write_header().unwrap();
            w.write_image_data(&[0x1F, 0x20]).unwrap();
            w.finish().unwrap();
            std::fs::write(&f, out).unwrap();
        }
        assert_eq!(read_label_png(&f).unwrap().labels, [1, 15, 2]);
        std::fs::write(dir.join("bad.png"), b"\x89PNG\r\n\x1a\nxxxx").unwrap();
        let e = read_label_png(&dir.join("bad.png"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("bad.png") && e.contains("not a readable PNG"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
