//! A minimal `.npy` reader shared by the golden tests and the benchmark example.
#![allow(dead_code)]

use half::f16;
use std::path::Path;

/// A minimal `.npy` reader for the goldens: little-endian, C order, dtypes f4, f2, u1.
pub struct Npy {
    pub descr: String,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

pub fn read(path: &Path) -> Npy {
    let name = path.display();
    let raw = std::fs::read(path).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(&raw[..6], b"\x93NUMPY", "{name}");
    let (hlen, start) = if raw[6] == 1 {
        (u16::from_le_bytes([raw[8], raw[9]]) as usize, 10)
    } else {
        (
            u32::from_le_bytes([raw[8], raw[9], raw[10], raw[11]]) as usize,
            12,
        )
    };
    let header = std::str::from_utf8(&raw[start..start + hlen]).unwrap();
    let field = |key: &str| {
        let i = header.find(key).unwrap() + key.len();
        header[i..].trim_start_matches([' ', ':']).to_string()
    };
    let descr = field("'descr'").split('\'').nth(1).unwrap().to_string();
    assert!(field("'fortran_order'").starts_with("False"));
    let shape_txt = field("'shape'");
    let shape = shape_txt[1..shape_txt.find(')').unwrap()]
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect();
    Npy {
        descr,
        shape,
        bytes: raw[start + hlen..].to_vec(),
    }
}

impl Npy {
    pub fn f32s(&self) -> Vec<f32> {
        assert_eq!(self.descr, "<f4");
        self.bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }
    pub fn f16s(&self) -> Vec<f16> {
        assert_eq!(self.descr, "<f2");
        self.bytes
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }
    pub fn u8s(&self) -> Vec<u8> {
        assert_eq!(self.descr, "|u1");
        self.bytes.clone()
    }
}
