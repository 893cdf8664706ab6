//! Stage three from Python: `train` over `clip_es_train::train::run` and `predict` over
//! `clip_es::predict::run`, the library entry points of `clip-es train` and `clip-es predict`
//! (docs/training.md). Settings not given (or not exposed here) keep the library's defaults,
//! the command line's. Ctrl-C stops
//! `train` between iterations (`KeyboardInterrupt`, the checkpoints written so far kept).

use clip_es::masks::CrfParams;
use clip_es::predict::PredictConfig;
use clip_es::progress::Silent;
use clip_es_train::loss::LossKind;
use clip_es_train::train::{Start, TrainConfig};
use clip_es_train::Arch;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::path::PathBuf;

use crate::guard::interruptible;
use crate::pipeline::value_error;

/// Trains a segmentation network on pseudo masks, as `clip-es train` does: arch
/// "clip-decoder" or "deeplab-v2"; images / masks / split / out as the command's options.
/// iters (default 20000), lr (default 0.01 for the decoder, 2.5e-4 for DeepLab-v2), batch,
/// iter_size, loss ("ce" or "balanced"), seed, save_every; init: initial weights (DeepLab-v2:
/// deeplab-pytorch's init or torchvision's ResNet-101 .pth); resume: True (the latest
/// checkpoint in `out`) or a checkpoint path; model: the CLIP model of the decoder's features;
/// hidden, upsamplings, grid_crop: the decoder's shape; width, blocks: DeepLab-v2's (tests);
/// random_init: a DeepLab-v2 without init starts from random weights (tests; it diverges on real
/// photos, so without it init is required). overwrite: start a new run in an `out` that holds
/// one, removing that run's files first (without it, or resume, such an `out` raises
/// ValueError). Out-of-range values raise ValueError before any work, with the command line's
/// message. device: "flex" (the CPU, default) or "vulkan" (a Vulkan GPU, in wheels built
/// with the `vulkan` feature, docs/gpu.md).
///
/// Returns a dict: checkpoint, final_checkpoint, log, curve, start, iters: the files named exist.
#[pyfunction]
#[pyo3(signature = (arch, images, masks, split, out, iters=None, lr=None, batch=None, iter_size=None, loss=None, num_classes=None, init=None, resume=None, model=None, seed=None, save_every=None, hidden=None, upsamplings=None, grid_crop=None, width=None, blocks=None, crop=None, threads=None, overwrite=false, random_init=false, device=None))]
#[allow(clippy::too_many_arguments)]
pub fn train<'py>(
    py: Python<'py>,
    arch: &str,
    images: PathBuf,
    masks: PathBuf,
    split: PathBuf,
    out: PathBuf,
    iters: Option<usize>,
    lr: Option<f64>,
    batch: Option<usize>,
    iter_size: Option<usize>,
    loss: Option<&str>,
    num_classes: Option<usize>,
    init: Option<PathBuf>,
    resume: Option<&Bound<'py, PyAny>>,
    model: Option<String>,
    seed: Option<u64>,
    save_every: Option<usize>,
    hidden: Option<usize>,
    upsamplings: Option<usize>,
    grid_crop: Option<usize>,
    width: Option<usize>,
    blocks: Option<[usize; 4]>,
    crop: Option<usize>,
    threads: Option<usize>,
    overwrite: bool,
    random_init: bool,
    device: Option<String>,
) -> PyResult<Bound<'py, PyDict>> {
    let arch = Arch::parse(arch).ok_or_else(|| {
        PyValueError::new_err(format!(
            "arch must be 'clip-decoder' or 'deeplab-v2', got {arch:?}"
        ))
    })?;
    let mut c = TrainConfig::new(arch, images, masks, split, out);
    if let Some(d) = device {
        c.device = d;
    }
    // The ranges are checked by the stage (`TrainConfig::validate`), as for the command line.
    if let Some(i) = iters {
        c.options.iters = i;
    }
    if let Some(l) = lr {
        c.options.lr = l;
    }
    // Unset arguments keep the library's defaults (`TrainConfig::new`), as the command line's.
    let o = &mut c.options;
    o.batch = batch.unwrap_or(o.batch);
    o.iter_size = iter_size.unwrap_or(o.iter_size);
    if let Some(loss) = loss {
        o.loss = match loss {
            "ce" => LossKind::Plain,
            "balanced" => LossKind::Balanced,
            _ => {
                return Err(PyValueError::new_err(format!(
                    "loss must be 'ce' or 'balanced', got {loss:?}"
                )))
            }
        };
    }
    o.seed = seed.unwrap_or(o.seed);
    o.save_every = save_every.unwrap_or(o.save_every);
    o.grid_crop = grid_crop.unwrap_or(o.grid_crop);
    o.augment.crop = crop.unwrap_or(o.augment.crop);
    c.num_classes = num_classes.unwrap_or(c.num_classes);
    c.deeplab.width = width.unwrap_or(c.deeplab.width);
    if let Some(b) = blocks {
        c.deeplab.blocks = b;
    }
    c.decoder_hidden = hidden.unwrap_or(c.decoder_hidden);
    c.decoder_upsamplings = upsamplings.unwrap_or(c.decoder_upsamplings);
    if let Some(m) = model {
        c.clip_model = m;
    }
    c.threads = threads;
    c.overwrite = overwrite;
    c.random_init = random_init;
    // resume: absent or False, a new run; True, the latest checkpoint in `out`; else a path.
    c.start = match resume.map(|r| (r.extract::<bool>(), r)) {
        None | Some((Ok(false), _)) => Start::Fresh { init },
        Some((Ok(true), _)) => Start::Resume {
            checkpoint: None,
            iters,
        },
        Some((Err(_), r)) => Start::Resume {
            checkpoint: Some(r.extract::<PathBuf>()?),
            iters,
        },
    };
    // Ctrl-C stops the run between iterations; the checkpoints written so far stay.
    let report = interruptible(py, move |stop| {
        clip_es_train::train::run_until(&c, &Silent, stop)
    })?
    .map_err(value_error)?;
    let d = PyDict::new(py);
    d.set_item("checkpoint", report.checkpoint)?;
    d.set_item("final_checkpoint", report.final_checkpoint)?;
    d.set_item("log", report.log)?;
    d.set_item("curve", report.curve)?;
    d.set_item("start", report.start)?;
    d.set_item("iters", report.iters)?;
    Ok(d)
}

/// Label maps of a trained network for the images of a split, as `clip-es predict` does:
/// `<out>/<id>.png` (VOC palette unless palette=False). crf: refine with the dense CRF of the
/// pseudo masks. scales: DeepLab-v2's multi-scale inputs / the decoder's averaged views. flip:
/// the decoder's mirrored views. model: the CLIP model of a decoder (default: the one it was
/// trained with). overlays: a directory for overlay pictures (legends with the VOC names).
///
/// Returns a dict: images, written, skipped, failures (a list of [id, message]).
#[pyfunction]
#[pyo3(signature = (checkpoint, images, split, out, crf=false, scales=None, flip=true, model=None, palette=true, overlays=None, overwrite=false, threads=None, device=None))]
#[allow(clippy::too_many_arguments)]
pub fn predict<'py>(
    py: Python<'py>,
    checkpoint: PathBuf,
    images: PathBuf,
    split: PathBuf,
    out: PathBuf,
    crf: bool,
    scales: Option<Vec<f64>>,
    flip: bool,
    model: Option<String>,
    palette: bool,
    overlays: Option<PathBuf>,
    overwrite: bool,
    threads: Option<usize>,
    device: Option<String>,
) -> PyResult<Bound<'py, PyDict>> {
    let mut c = PredictConfig::new(checkpoint, images, split, out);
    if let Some(d) = device {
        c.device = d;
    }
    c.crf = crf.then(CrfParams::default);
    c.scales = scales;
    c.flip = flip;
    c.clip_model = model;
    c.palette = palette;
    c.overwrite = overwrite;
    c.threads = threads;
    if let Some(d) = overlays {
        c.overlays = Some((d, clip_es::ClassSet::voc()));
    }
    let r = interruptible(py, move |_| clip_es::predict::run(&c, &Silent))?.map_err(value_error)?;
    let d = PyDict::new(py);
    d.set_item("images", r.images)?;
    d.set_item("written", r.written)?;
    d.set_item("skipped", r.skipped)?;
    d.set_item("failures", r.failures)?;
    Ok(d)
}

/// Registers `train` and `predict`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(train, m)?)?;
    m.add_function(wrap_pyfunction!(predict, m)?)?;
    Ok(())
}
