//! Errors of the pickle VM and the archive / `.npy` readers.
//!
//! Every message starts with the file (or archive member) it is about, so that a failure while
//! loading weights or CAMs says where it happened and what was wrong.

use crate::DType;

/// Any failure while reading a pickle, a PyTorch archive or a `.npy` file.
#[derive(Debug, thiserror::Error)]
pub enum PickleError {
    /// The file could not be opened or read.
    #[error("{file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// An opcode this VM does not implement (extension registry, out-of-band buffers) or one
    /// that does not exist.
    #[error("{file}: pickle opcode 0x{opcode:02x} at byte {pos} not supported")]
    UnsupportedOpcode {
        file: String,
        opcode: u8,
        pos: usize,
    },
    /// The stream ended before an opcode's argument or before STOP.
    #[error("{file}: truncated pickle: {what} at byte {pos} runs past the end of the data")]
    Truncated {
        file: String,
        pos: usize,
        what: &'static str,
    },
    /// A structurally invalid pickle (stack underflow, bad argument, wrong operand type...).
    #[error("{file}: malformed pickle at byte {pos}: {msg}")]
    Malformed {
        file: String,
        pos: usize,
        msg: String,
    },
    /// A problem with the container (zip archive, `.npy` header) or with what the pickle
    /// describes (unknown dtype, tensor outside its storage...).
    #[error("{file}: {msg}")]
    Format { file: String, msg: String },
    /// A typed accessor was asked for a conversion the dtype does not allow.
    #[error("cannot read {found} data as {wanted}")]
    DTypeMismatch { wanted: &'static str, found: DType },
}

impl PickleError {
    pub(crate) fn format(file: &str, msg: impl Into<String>) -> Self {
        PickleError::Format {
            file: file.to_string(),
            msg: msg.into(),
        }
    }

    pub(crate) fn io(file: &str, source: std::io::Error) -> Self {
        PickleError::Io {
            file: file.to_string(),
            source,
        }
    }
}
