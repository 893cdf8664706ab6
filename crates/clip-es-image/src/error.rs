//! The error type of the crate, and the file-name fix-up of errors raised on bytes in memory.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{}: cannot read the file: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Decode { path: PathBuf, message: String },
    #[error("{}: unsupported image: {message}", path.display())]
    Unsupported { path: PathBuf, message: String },
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
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
