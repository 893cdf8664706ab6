//! Recognising a file's container format from its first bytes, and reading a file with an
//! error that names it.

use std::path::Path;

use crate::error::ImageError;

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
