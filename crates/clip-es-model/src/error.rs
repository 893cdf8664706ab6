//! The error of reading a checkpoint, shared by the containers (`container`) and the CLIP
//! weight tables (`weights`), in a module of its own so that neither depends on the other for it.

use std::path::PathBuf;

use crate::config::ConfigError;

/// A failure to load weights. Every message names the file concerned.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a valid safetensors file ({reason})", .path.display())]
    Safetensors { path: PathBuf, reason: String },
    #[error("{}: cannot read the PyTorch archive ({reason})", .path.display())]
    Torch { path: PathBuf, reason: String },
    /// From the pickle reader, whose messages start with the file.
    #[error("{0}")]
    Pickle(#[from] clip_es_pickle::PickleError),
    #[error("{}: unrecognised model file ({reason})", .path.display())]
    UnknownFormat { path: PathBuf, reason: String },
    #[error("{}: {reason}", .path.display())]
    MissingFile { path: PathBuf, reason: String },
    #[error("{}: {source}", .path.display())]
    Config {
        path: PathBuf,
        #[source]
        source: ConfigError,
    },
    #[error("{}: not a CLIP ViT model ({reason})", .path.display())]
    NotClip { path: PathBuf, reason: String },
    #[error("{}: missing tensor `{name}`", .path.display())]
    MissingTensor { path: PathBuf, name: String },
    #[error("{}: tensor `{name}` has shape {found:?}, expected {expected:?}", .path.display())]
    Shape {
        path: PathBuf,
        name: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("{}: tensor `{name}` has data type {dtype}, expected a floating-point type", .path.display())]
    DType {
        path: PathBuf,
        name: String,
        dtype: String,
    },
    #[error("{}: tensor `{name}`: {reason}", .path.display())]
    BadTensor {
        path: PathBuf,
        name: String,
        reason: String,
    },
    #[error("{}: no tensor named `{name}` in the loaded model", .path.display())]
    NoSuchTensor { path: PathBuf, name: String },
}
