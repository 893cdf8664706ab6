//! Test helpers: a minimal `.npy` reader and the golden manifest of tools/golden_image.py.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("data")
}

pub fn image_path(file: &str) -> PathBuf {
    data_dir().join("images").join(file)
}

pub fn manifest() -> serde_json::Value {
    let text = std::fs::read_to_string(data_dir().join("manifest.json")).expect("manifest.json");
    serde_json::from_str(&text).expect("manifest.json parses")
}

/// Samples of an `.npy` array (C order), by dtype.
#[derive(Debug)]
pub enum NpyData {
    U8(Vec<u8>),
    Bool(Vec<bool>),
    U16(Vec<u16>),
    F32(Vec<f32>),
}

#[derive(Debug)]
pub struct Npy {
    pub shape: Vec<usize>,
    pub data: NpyData,
}

impl Npy {
    pub fn u8(&self) -> &[u8] {
        match &self.data {
            NpyData::U8(v) => v,
            other => panic!("expected uint8, got {other:?}"),
        }
    }
    pub fn f32(&self) -> &[f32] {
        match &self.data {
            NpyData::F32(v) => v,
            other => panic!("expected float32, got {other:?}"),
        }
    }
}

/// Reads `expected/<name>.npy` (format versions 1-3, little-endian u1/b1/u2/f4, C order).
pub fn npy(name: &str) -> Npy {
    let path = data_dir().join("expected").join(format!("{name}.npy"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        &bytes[..6],
        b"\x93NUMPY",
        "{}: not an .npy file",
        path.display()
    );
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        _ => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
    };
    let header = std::str::from_utf8(&bytes[start..start + header_len]).unwrap();
    let body = &bytes[start + header_len..];
    let field = |key: &str| -> &str {
        let i = header
            .find(key)
            .unwrap_or_else(|| panic!("{header}: no {key}"))
            + key.len();
        header[i..].trim_start_matches([':', ' ', '\''])
    };
    let descr: String = field("'descr'")
        .chars()
        .take_while(|&c| c != '\'')
        .collect();
    assert!(
        field("'fortran_order'").starts_with("False"),
        "{}: Fortran order",
        path.display()
    );
    let shape_text = field("'shape'");
    let shape: Vec<usize> = shape_text[1..shape_text.find(')').unwrap()]
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let count: usize = shape.iter().product();
    let data = match descr.as_str() {
        "|u1" => NpyData::U8(body[..count].to_vec()),
        "|b1" => NpyData::Bool(body[..count].iter().map(|&b| b != 0).collect()),
        "<u2" => NpyData::U16(
            body[..2 * count]
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect(),
        ),
        "<f4" => NpyData::F32(
            body[..4 * count]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        other => panic!("{}: unsupported dtype {other}", path.display()),
    };
    Npy { shape, data }
}

/// Largest absolute difference and the number of unequal elements.
pub fn compare_f32(got: &[f32], want: &[f32]) -> (f32, usize) {
    assert_eq!(got.len(), want.len());
    let mut max = 0.0f32;
    let mut unequal = 0;
    for (&g, &w) in got.iter().zip(want) {
        if g.to_bits() != w.to_bits() {
            unequal += 1;
            max = max.max((g - w).abs());
        }
    }
    (max, unequal)
}
