//! CLIP-ES (Lin et al., CVPR 2023, "CLIP is Also an Efficient Segmenter"): the method and its
//! pipeline stages. docs/algorithm.md describes the computation; docs/DEVELOPING.md the layout.
//!
//! The CLIP model lives in `clip-es-model`; image decoding and resampling in `clip-es-image`;
//! the dense CRF in `clip-es-crf`. This crate holds the method (Softmax-GradCAM, class-aware
//! attention affinity) and the stages, each with a library entry point that the command line,
//! a Python module and the tests call:
//!
//! - [`cams::run`] (a dataset) and [`cams::Cams::image`] (one image in memory): CAMs;
//! - [`masks::run`] and [`masks::pseudo_mask`]: CRF pseudo masks;
//! - [`eval::run`]: mIoU of CAMs or masks;
//! - [`segment::run`]: any photo, with typed classes, a preset's or label-free tags;
//! - [`prompts::run`]: prompt templates ranked by sharpness;
//! - [`pipeline::run`]: the whole pipeline of `clip-es run` (CAMs, masks, evaluations, and
//!   optionally stage three);
//! - [`predict::run`]: label maps of a network trained by stage three (`clip-es-train`, whose
//!   `train::run` is the training stage's entry point), optionally refined by the dense CRF.

pub mod affinity;
pub mod argmax;
pub mod atomic;
pub mod budget;
pub mod cam_files;
pub mod cams;
pub mod classes;
pub mod datasets;
pub mod eval;
pub mod gradcam;
pub mod masks;
pub mod pipeline;
pub mod predict;
pub mod progress;
pub mod prompt_select;
pub mod prompts;
pub mod segment;
pub mod tags;
pub mod viz;

pub use cams::{Cams, CamsConfig, CamsReport};
pub use classes::ClassSet;
pub use eval::{EvalConfig, EvalReport};
pub use masks::{MasksConfig, MasksReport};
pub use progress::{Progress, Silent};

/// Unique temporary directories for unit tests (one per call, never shared between tests).
#[cfg(test)]
pub(crate) mod test_dir {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static NEXT: AtomicUsize = AtomicUsize::new(0);

    /// A fresh empty directory under the system temp dir, named after `tag`, the process and a
    /// per-process counter.
    pub fn unique(tag: &str) -> PathBuf {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let d = std::env::temp_dir().join(format!("clip-es-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
