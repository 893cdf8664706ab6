//! The native part of the Python package `clip_es` (module `clip_es._native`): thin bindings
//! of the library entry points. Argument checking in pydensecrf's terms (dtypes, shapes,
//! contiguity, with pydensecrf's messages) lives in the Python layer
//! (`python/clip_es/pydensecrf/densecrf.py`); this layer checks again what it needs for memory
//! safety and turns every library error into a `ValueError`. All computation runs with the GIL
//! released.
//!
//! The CRF is `clip_es_crf` (Kraehenbuehl and Koltun, NIPS 2011; see that crate's header for
//! the densecrf sources it mirrors); `pipeline` binds the CLIP-ES stages of the `clip_es`
//! crate (docs/algorithm.md). Nothing here computes anything of its own beyond copying arrays
//! between layouts. The work of every entry point runs through `guard::guard` or
//! `guard::interruptible`: a panic becomes `RuntimeError`, and Ctrl-C during long work raises
//! `KeyboardInterrupt`.

mod commands;
mod guard;
mod pipeline;
mod stage3;

use guard::{guard, interruptible};

use clip_es_crf::{
    bilateral_features, gaussian_features, Compatibility, CrfError, DenseCrf, Normalization,
    PairwiseKernel,
};
use numpy::{
    PyArray1, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2, PyReadonlyArray3,
    PyReadwriteArray2, PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyMemoryError, PyValueError};
use pyo3::prelude::*;

/// A CRF error as Python's: `MemoryError` for buffers that cannot be allocated, else
/// `ValueError`.
fn value_error(e: CrfError) -> PyErr {
    match e {
        CrfError::Memory(_) => PyMemoryError::new_err(e.to_string()),
        _ => PyValueError::new_err(e.to_string()),
    }
}

fn contiguous<'a, T>(slice: Result<&'a [T], numpy::AsSliceError>, what: &str) -> PyResult<&'a [T]> {
    slice.map_err(|_| PyValueError::new_err(format!("{what}: ndarray is not C-contiguous")))
}

/// densecrf's `NormalizationType` values: NO_NORMALIZATION, NORMALIZE_BEFORE,
/// NORMALIZE_AFTER, NORMALIZE_SYMMETRIC.
fn normalization(n: i64) -> PyResult<Normalization> {
    Ok(match n {
        0 => Normalization::None,
        1 => Normalization::Before,
        2 => Normalization::After,
        3 => Normalization::Symmetric,
        _ => {
            return Err(PyValueError::new_err(format!(
                "normalization {n} is not one of NO_NORMALIZATION (0), NORMALIZE_BEFORE (1), \
                 NORMALIZE_AFTER (2), NORMALIZE_SYMMETRIC (3)"
            )))
        }
    })
}

/// densecrf's `KernelType` values: CONST_KERNEL, DIAG_KERNEL, FULL_KERNEL. The kernel type
/// only matters for learning the kernel's parameters, which inference never changes.
fn check_kernel(k: i64) -> PyResult<()> {
    if (0..=2).contains(&k) {
        Ok(())
    } else {
        Err(PyValueError::new_err(format!(
            "kernel {k} is not one of CONST_KERNEL (0), DIAG_KERNEL (1), FULL_KERNEL (2)"
        )))
    }
}

/// A label compatibility from a Python number (Potts), a float32 vector (diagonal) or a
/// float32 square matrix.
fn compatibility(c: &Bound<'_, PyAny>, n_labels: usize) -> PyResult<Compatibility> {
    if let Ok(v) = c.extract::<PyReadonlyArray1<'_, f32>>() {
        let w = contiguous(v.as_slice(), "compat")?;
        if w.len() != n_labels {
            return Err(PyValueError::new_err(format!(
                "compat vector has {} weights for {n_labels} labels",
                w.len()
            )));
        }
        return Ok(Compatibility::Diagonal(w.to_vec()));
    }
    if let Ok(m) = c.extract::<PyReadonlyArray2<'_, f32>>() {
        let shape = m.shape().to_vec();
        if shape != [n_labels, n_labels] {
            return Err(PyValueError::new_err(format!(
                "compat matrix of shape {shape:?} for {n_labels} labels"
            )));
        }
        return Compatibility::matrix(n_labels, contiguous(m.as_slice(), "compat")?)
            .map_err(value_error);
    }
    let w: f32 = c.extract().map_err(|_| {
        PyValueError::new_err(
            "compat must be a number, a float32 vector or a float32 square matrix",
        )
    })?;
    Ok(Compatibility::Potts(w))
}

/// A dense CRF over `n_points` variables and `n_labels` labels (the engine behind
/// `clip_es.pydensecrf.densecrf.DenseCRF`).
#[pyclass(module = "clip_es._native")]
struct Crf {
    crf: DenseCrf,
}

#[pymethods]
impl Crf {
    #[new]
    fn new(n_points: i64, n_labels: i64) -> PyResult<Self> {
        guard(|| {
            if n_points <= 0 || n_labels <= 0 {
                return Err(PyValueError::new_err(format!(
                    "a CRF needs at least one variable and one label, got {n_points} variables \
                     and {n_labels} labels"
                )));
            }
            Ok(Crf {
                crf: DenseCrf::new(n_points as usize, n_labels as usize).map_err(value_error)?,
            })
        })
    }

    /// Unary energies of shape (labels, points), float32, C-contiguous.
    fn set_unary(&mut self, py: Python<'_>, unary: PyReadonlyArray2<'_, f32>) -> PyResult<()> {
        guard(|| {
            let shape = unary.shape().to_vec();
            let (m, n) = (self.crf.num_labels(), self.crf.num_points());
            if shape != [m, n] {
                return Err(PyValueError::new_err(format!(
                    "Bad shape for unary energy (Need ({m}, {n}), got ({}, {}))",
                    shape[0], shape[1]
                )));
            }
            let u = contiguous(unary.as_slice(), "unary")?;
            let crf = &mut self.crf;
            py.detach(|| crf.set_unary_label_major(u))
                .map_err(value_error)
        })
    }

    /// A pairwise term over features of shape (dim, points), float32, C-contiguous.
    fn add_pairwise(
        &mut self,
        py: Python<'_>,
        features: PyReadonlyArray2<'_, f32>,
        compat: &Bound<'_, PyAny>,
        kernel: i64,
        normalization_type: i64,
    ) -> PyResult<()> {
        guard(|| {
            check_kernel(kernel)?;
            let norm = normalization(normalization_type)?;
            let compat = compatibility(compat, self.crf.num_labels())?;
            let shape = features.shape().to_vec();
            let n = self.crf.num_points();
            if shape[1] != n {
                return Err(PyValueError::new_err(format!(
                    "Bad shape for pairwise energy (Need (?, {n}), got ({}, {}))",
                    shape[0], shape[1]
                )));
            }
            let dim = shape[0];
            let f = contiguous(features.as_slice(), "features")?;
            let crf = &mut self.crf;
            py.detach(|| {
                // (dim, points) -> point-major.
                let mut pm = vec![0f32; f.len()];
                for k in 0..dim {
                    for i in 0..n {
                        pm[i * dim + k] = f[k * n + i];
                    }
                }
                let kernel = PairwiseKernel::new(&pm, dim, compat, norm)?;
                crf.add_pairwise(kernel)
            })
            .map_err(value_error)
        })
    }

    /// densecrf's `DenseCRF2D::addPairwiseGaussian` for a `width` x `height` grid.
    #[allow(clippy::too_many_arguments)]
    fn add_pairwise_gaussian(
        &mut self,
        py: Python<'_>,
        width: usize,
        height: usize,
        sx: f32,
        sy: f32,
        compat: &Bound<'_, PyAny>,
        kernel: i64,
        normalization_type: i64,
    ) -> PyResult<()> {
        guard(|| {
            check_kernel(kernel)?;
            let norm = normalization(normalization_type)?;
            let compat = compatibility(compat, self.crf.num_labels())?;
            self.check_grid(width, height)?;
            let crf = &mut self.crf;
            py.detach(|| {
                let f = gaussian_features(width, height, sx, sy);
                let kernel = PairwiseKernel::new(&f, 2, compat, norm)?;
                crf.add_pairwise(kernel)
            })
            .map_err(value_error)
        })
    }

    /// densecrf's `DenseCRF2D::addPairwiseBilateral`; `image` is (height, width, 3) uint8,
    /// C-contiguous.
    #[allow(clippy::too_many_arguments)]
    fn add_pairwise_bilateral(
        &mut self,
        py: Python<'_>,
        width: usize,
        height: usize,
        sx: f32,
        sy: f32,
        schan: (f32, f32, f32),
        image: PyReadonlyArray3<'_, u8>,
        compat: &Bound<'_, PyAny>,
        kernel: i64,
        normalization_type: i64,
    ) -> PyResult<()> {
        guard(|| {
            check_kernel(kernel)?;
            let norm = normalization(normalization_type)?;
            let compat = compatibility(compat, self.crf.num_labels())?;
            self.check_grid(width, height)?;
            let shape = image.shape().to_vec();
            if shape != [height, width, 3] {
                return Err(PyValueError::new_err(format!(
                    "Bad shape for pairwise bilateral (Need ({height}, {width}, 3), got {shape:?})"
                )));
            }
            let im = contiguous(image.as_slice(), "rgbim")?;
            let crf = &mut self.crf;
            py.detach(|| {
                let f = bilateral_features(width, height, sx, sy, [schan.0, schan.1, schan.2], im)?;
                let kernel = PairwiseKernel::new(&f, 5, compat, norm)?;
                crf.add_pairwise(kernel)
            })
            .map_err(value_error)
        })
    }

    /// `iterations` mean-field steps; the marginals as a (labels, points) float32 array.
    /// Ctrl-C stops it between iterations with `KeyboardInterrupt`.
    fn inference<'py>(
        &self,
        py: Python<'py>,
        iterations: i64,
    ) -> PyResult<Bound<'py, numpy::PyArray2<f32>>> {
        guard(|| {
            let iterations = iterations.max(0) as usize;
            let crf = &self.crf;
            let q = interruptible(py, |stop| {
                crf.inference_until(iterations, stop)
                    .map(|q| q.label_major())
            })?
            .map_err(value_error)?;
            PyArray1::from_vec(py, q).reshape([self.crf.num_labels(), self.crf.num_points()])
        })
    }

    /// densecrf's `startInference`: the starting marginals, a (labels, points) float32 array
    /// (all zeros without a unary energy).
    fn start_inference<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, numpy::PyArray2<f32>>> {
        guard(|| {
            let crf = &self.crf;
            let q = py
                .detach(|| {
                    crf.start_inference()
                        .map(|q| point_to_label_major(&q, crf.num_labels()))
                })
                .map_err(value_error)?;
            PyArray1::from_vec(py, q).reshape([self.crf.num_labels(), self.crf.num_points()])
        })
    }

    /// densecrf's `stepInference`: one mean-field update of `q`, a (labels, points) float32
    /// C-contiguous array, in place.
    fn step_inference(&self, py: Python<'_>, mut q: PyReadwriteArray2<'_, f32>) -> PyResult<()> {
        guard(|| {
            self.check_marginals(q.shape())?;
            let crf = &self.crf;
            let values = q
                .as_slice_mut()
                .map_err(|_| PyValueError::new_err("Q: ndarray is not C-contiguous"))?;
            py.detach(|| {
                let m = crf.num_labels();
                let mut pm = label_to_point_major(values, m)?;
                crf.step_inference(&mut pm)?;
                values.copy_from_slice(&point_to_label_major(&pm, m));
                Ok::<(), CrfError>(())
            })
            .map_err(value_error)
        })
    }

    /// densecrf's `klDivergence` of the (labels, points) float32 marginals `q`.
    fn kl_divergence(&self, py: Python<'_>, q: PyReadonlyArray2<'_, f32>) -> PyResult<f64> {
        guard(|| {
            self.check_marginals(q.shape())?;
            let values = contiguous(q.as_slice(), "Q")?;
            let crf = &self.crf;
            py.detach(|| crf.kl_divergence(&label_to_point_major(values, crf.num_labels())?))
                .map_err(value_error)
        })
    }

    #[getter]
    fn num_points(&self) -> usize {
        self.crf.num_points()
    }

    #[getter]
    fn num_labels(&self) -> usize {
        self.crf.num_labels()
    }
}

impl Crf {
    fn check_marginals(&self, shape: &[usize]) -> PyResult<()> {
        let (m, n) = (self.crf.num_labels(), self.crf.num_points());
        if shape != [m, n] {
            return Err(PyValueError::new_err(format!(
                "Bad shape for Q (Need ({m}, {n}), got {shape:?})"
            )));
        }
        Ok(())
    }

    fn check_grid(&self, width: usize, height: usize) -> PyResult<()> {
        if width.checked_mul(height) != Some(self.crf.num_points()) {
            return Err(PyValueError::new_err(format!(
                "a {width} x {height} grid for a CRF of {} variables",
                self.crf.num_points()
            )));
        }
        Ok(())
    }
}

/// Label-major values (`[l*n + i]`, pydensecrf's arrays) point-major (`[i*m + l]`).
fn label_to_point_major(values: &[f32], n_labels: usize) -> Result<Vec<f32>, CrfError> {
    let n = values.len() / n_labels;
    let mut out = Vec::new();
    out.try_reserve_exact(values.len())
        .map_err(|_| CrfError::Memory(format!("cannot copy {} marginals", values.len())))?;
    out.resize(values.len(), 0.0);
    for (i, p) in out.chunks_exact_mut(n_labels).enumerate() {
        for (l, v) in p.iter_mut().enumerate() {
            *v = values[l * n + i];
        }
    }
    Ok(out)
}

/// Point-major values label-major.
fn point_to_label_major(values: &[f32], n_labels: usize) -> Vec<f32> {
    clip_es_crf::Marginals {
        n_labels,
        values: values.to_vec(),
    }
    .label_major()
}

/// Sets the number of worker threads of clip-es's thread pool (rayon's global pool). Must be
/// called before any parallel work; the environment variable RAYON_NUM_THREADS does the same.
#[pyfunction]
fn set_num_threads(n: usize) -> PyResult<()> {
    guard(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .map_err(|e| {
                PyValueError::new_err(format!(
                "cannot set the number of threads to {n}: {e} (call set_num_threads before any \
                 other clip_es function, or set RAYON_NUM_THREADS)"
            ))
            })
    })
}

/// The number of worker threads clip-es uses.
#[pyfunction]
fn num_threads() -> usize {
    rayon::current_num_threads()
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Crf>()?;
    pipeline::register(m)?;
    stage3::register(m)?;
    commands::register(m)?;
    m.add_function(wrap_pyfunction!(set_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(num_threads, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
