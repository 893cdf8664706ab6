//! Fully connected conditional random field with Gaussian edge potentials (Kraehenbuehl and
//! Koltun, "Efficient Inference in Fully Connected CRFs with Gaussian Edge Potentials", NIPS
//! 2011), filtering on a permutohedral lattice (Adams et al., Eurographics 2010).
//!
//! A port of Philipp Kraehenbuehl's densecrf as wrapped by pydensecrf (the engine behind CLIP-ES's
//! `eval_cam_with_crf.py`), reproducing its single-precision arithmetic operation by operation
//! (see `lattice` and `inference` for what that takes), deterministic. (`unsafe` is limited to
//! prefetch hints and unchecked indexing in the lattice passes, over indices validated when the
//! lattice is built.)
//!
//! ```
//! use clip_es_crf::{unary_from_probabilities, Compatibility, DenseCrf, PairwiseKernel};
//! let (w, h, labels) = (4, 3, 2);
//! let image = vec![128u8; w * h * 3];
//! let probs: Vec<f32> = (0..labels * w * h).map(|i| if i < w * h { 0.7 } else { 0.3 }).collect();
//! let mut crf = DenseCrf::new(w * h, labels)?;
//! crf.set_unary_label_major(&unary_from_probabilities(&probs))?;
//! crf.add_pairwise(PairwiseKernel::gaussian(w, h, 1.0, Compatibility::Potts(3.0))?)?;
//! crf.add_pairwise(PairwiseKernel::bilateral(w, h, 67.0, 3.0, &image, Compatibility::Potts(4.0))?)?;
//! let q = crf.inference(10)?;
//! assert!(q.argmax().iter().all(|&(label, _)| label == 0));
//! # Ok::<(), clip_es_crf::CrfError>(())
//! ```

pub mod inference;
pub mod kernel;
pub mod lattice;
pub mod unary;

pub use inference::{DenseCrf, Marginals};
pub use kernel::{
    bilateral_features, gaussian_features, Compatibility, KernelScratch, Normalization,
    PairwiseKernel,
};
pub use lattice::{FilterScratch, Permutohedral};
pub use unary::{unary_from_f16_probabilities, unary_from_probabilities};

/// Errors of the CRF: inputs of inconsistent sizes or non-finite values, sizes whose buffers
/// cannot be allocated, and inference stopped by its caller.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CrfError {
    #[error("shape mismatch: {0}")]
    Shape(String),
    #[error("non-finite input: {0}")]
    NonFinite(String),
    #[error("not enough memory: {0}")]
    Memory(String),
    #[error("inference stopped on request")]
    Stopped,
}

/// A zero-filled buffer of `len` values, or [`CrfError::Memory`] naming `what` when the
/// allocation fails (instead of aborting the process, as `vec!` does).
pub(crate) fn zeroed(len: usize, what: &str) -> Result<Vec<f32>, CrfError> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| {
        CrfError::Memory(format!(
            "{what}: cannot allocate {len} values ({} bytes)",
            len.saturating_mul(std::mem::size_of::<f32>())
        ))
    })?;
    v.resize(len, 0.0);
    Ok(v)
}
