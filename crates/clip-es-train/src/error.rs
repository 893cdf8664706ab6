use std::path::PathBuf;

/// Errors of the training stage; each names the file it concerns where there is one.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: bad mask: {message}", path.display())]
    BadMask { path: PathBuf, message: String },
    #[error("{}: bad image: {message}", path.display())]
    BadImage { path: PathBuf, message: String },
    #[error("{}: bad checkpoint or weights file: {message}", path.display())]
    Weights { path: PathBuf, message: String },
    #[error("{}: bad feature cache: {message}", path.display())]
    Features { path: PathBuf, message: String },
    #[error("{0}")]
    Config(String),
    #[error("the loss (or its gradient) became {value} at iteration {iteration}; training stopped, nothing of that iteration written. Try a lower learning rate (--lr), and for DeepLab-v2 initial weights (--init); resume from the last good checkpoint: {}", last_good.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "none written yet".into()))]
    NonFinite {
        iteration: usize,
        value: f32,
        last_good: Option<PathBuf>,
    },
    #[error("training stopped on request after iteration {iteration}. Last checkpoint: {}", last_good.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "none written in this run".into()))]
    Stopped {
        iteration: usize,
        last_good: Option<PathBuf>,
    },
}

impl TrainError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T> = std::result::Result<T, TrainError>;
