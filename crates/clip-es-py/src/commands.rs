//! The commands `clip-es run`, `clip-es segment` and `clip-es prompts` from Python:
//! `clip_es.run`, `clip_es.segment` and `clip_es.prompts` over the library entry points
//! `clip_es::pipeline::run`, `clip_es::segment::run` and `clip_es::prompts::run`. The keyword
//! arguments are the command's options (`--no-crf` is `no_crf=True`, `--template` is
//! `templates=[...]`); an argument left at `None` takes the library's default, the one the
//! command line shows. They only convert arguments and results: the validation and the work
//! are the library's, the same code the command line runs.

use crate::guard::interruptible;
use clip_es::cam_files::CamKind;
use clip_es::cams::{CamsReport, DatasetConfig};
use clip_es::classes::ClassSet;
use clip_es::eval::UnlabelledPolicy;
use clip_es::masks::{CrfImage, MasksReport};
use clip_es::pipeline::{PipelineConfig, PipelineError, PipelineReport, Stage3Config};
use clip_es::predict::PredictReport;
use clip_es::prompts::{PromptsConfig, PromptsError};
use clip_es::segment::{PhotoResult, SegmentConfig, SegmentRunError};
use clip_es::Silent;
use clip_es_image::ExifOrientation;
use clip_es_train::Arch;
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use serde_json::json;
use std::path::PathBuf;

/// A JSON value as the Python object `json.loads` makes of it.
fn to_python<'py>(py: Python<'py>, value: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    py.import("json")?
        .call_method1("loads", (value.to_string(),))
}

/// One path or a list of them.
fn paths(arg: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<PathBuf>> {
    if let Ok(p) = arg.extract::<PathBuf>() {
        return Ok(vec![p]);
    }
    arg.extract::<Vec<PathBuf>>()
        .map_err(|_| PyTypeError::new_err(format!("{what} must be a path or a list of paths")))
}

fn choice<T: Copy>(name: &str, value: &str, options: &[(&str, T)]) -> PyResult<T> {
    options
        .iter()
        .find(|(n, _)| *n == value)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let names: Vec<String> = options.iter().map(|(n, _)| format!("'{n}'")).collect();
            PyValueError::new_err(format!(
                "{name} must be {}, got {value:?}",
                names.join(" or ")
            ))
        })
}

fn cam_kind(value: Option<&str>) -> PyResult<Option<CamKind>> {
    value
        .map(|v| {
            choice(
                "cam_key",
                v,
                &[
                    ("attn_highres", CamKind::AttnHighres),
                    ("highres", CamKind::Highres),
                ],
            )
        })
        .transpose()
}

fn failures_json(failures: &[(String, String)]) -> serde_json::Value {
    json!(failures)
}

/// Segments photos as `clip-es segment` does: `inputs` (a photo or directory, or a list of
/// them) into `out`, for `classes` (",": classes, ";": synonyms), a `dataset` preset's
/// classes, or label-free tags (no `classes`). Every other keyword is the command's option of
/// the same name; `memory_limit` in MB.
///
/// Returns a dict: model, images, selection, results (per photo: image with files and summary,
/// or tags), failures (a list of [photo, reason]), tags_file.
#[pyfunction]
#[pyo3(signature = (inputs, out=None, classes=None, dataset=None, background=None, vocabulary=None, tags_only=false, tag_threshold=None, max_tags=None, no_crf=false, memory_limit=None, max_side=None, confidence=None, scales=None, flip=false, templates=None, model=None, threads=None, device=None))]
#[allow(clippy::too_many_arguments)]
pub fn segment<'py>(
    py: Python<'py>,
    inputs: &Bound<'py, PyAny>,
    out: Option<PathBuf>,
    classes: Option<String>,
    dataset: Option<String>,
    background: Option<String>,
    vocabulary: Option<PathBuf>,
    tags_only: bool,
    tag_threshold: Option<f32>,
    max_tags: Option<usize>,
    no_crf: bool,
    memory_limit: Option<u64>,
    max_side: Option<usize>,
    confidence: Option<f32>,
    scales: Option<Vec<f64>>,
    flip: bool,
    templates: Option<Vec<String>>,
    model: Option<String>,
    threads: Option<usize>,
    device: Option<String>,
) -> PyResult<Bound<'py, PyAny>> {
    let mut c = SegmentConfig::new(paths(inputs, "inputs")?);
    if let Some(d) = device {
        c.settings.device = clip_es::cams::parse_device(&d).map_err(PyValueError::new_err)?;
    }
    if let Some(o) = out {
        c.out = o;
    }
    c.classes = classes;
    c.dataset = dataset;
    c.background = background;
    c.vocabulary = vocabulary;
    c.tags_only = tags_only;
    if let Some(t) = tag_threshold {
        c.options.tags.threshold = t;
    }
    if let Some(m) = max_tags {
        c.options.tags.max_tags = m;
    }
    c.options.mask.use_crf = !no_crf;
    if let Some(v) = confidence {
        c.options.mask.confidence = v;
    }
    c.settings.memory_limit = memory_limit.map(|mb| mb.saturating_mul(1_000_000));
    if let Some(m) = max_side {
        c.settings.max_side = m;
    }
    if let Some(s) = scales {
        c.settings.augment.scales = s;
    }
    c.settings.augment.flip = flip;
    if let Some(t) = templates {
        c.settings.templates = t;
    }
    if let Some(m) = model {
        c.model = m;
    }
    c.threads = threads;
    let report = interruptible(py, move |stop| {
        clip_es::segment::run_until(&c, &Silent, stop)
    })?
    .map_err(|e| match e {
        SegmentRunError::Write { .. } => PyOSError::new_err(e.to_string()),
        _ => PyValueError::new_err(e.to_string()),
    })?;
    let results: Vec<serde_json::Value> = report
        .results
        .iter()
        .map(|r| match r {
            PhotoResult::Segmented {
                path,
                files,
                summary,
            } => json!({
                "image": path,
                "files": {
                    "mask": files.mask,
                    "overlay": files.overlay,
                    "summary": files.summary,
                    "heat_maps": files.heat_maps,
                },
                "summary": summary,
            }),
            PhotoResult::Tagged { path, tags } => json!({ "image": path, "tags": tags }),
        })
        .collect();
    to_python(
        py,
        &json!({
            "model": report.model,
            "images": report.images,
            "selection": report.selection,
            "results": results,
            "failures": failures_json(&report.failures),
            "tags_file": report.tags_file,
        }),
    )
}

/// Ranks prompt templates by sharpness as `clip-es prompts` does: `templates` is a template
/// file (one per line) or a list of templates; `images`, `split`, `labels`, `annotations`,
/// `dataset` say which images and labels, as the command's options; `json` also writes the
/// ranking to that file.
///
/// Returns the ranking as a dict (the JSON of `--json`), with failures (a list of [id, reason]).
#[pyfunction]
#[pyo3(signature = (images, templates, split=None, labels=None, annotations=None, dataset=None, model=None, json=None, exact_pos_embed=false, threads=None))]
#[allow(clippy::too_many_arguments)]
pub fn prompts<'py>(
    py: Python<'py>,
    images: PathBuf,
    templates: &Bound<'py, PyAny>,
    split: Option<PathBuf>,
    labels: Option<PathBuf>,
    annotations: Option<PathBuf>,
    dataset: Option<String>,
    model: Option<String>,
    json: Option<PathBuf>,
    exact_pos_embed: bool,
    threads: Option<usize>,
) -> PyResult<Bound<'py, PyAny>> {
    let templates = if let Ok(list) = templates.extract::<Vec<String>>() {
        list
    } else if let Ok(file) = templates.extract::<PathBuf>() {
        clip_es::prompts::read_templates(&file).map_err(|e| PyValueError::new_err(e.to_string()))?
    } else {
        return Err(PyTypeError::new_err(
            "templates must be a template file or a list of templates",
        ));
    };
    let data = DatasetConfig {
        images,
        annotations,
        labels,
        split,
    };
    let mut c = PromptsConfig::new(data, templates);
    if let Some(d) = dataset {
        c.dataset = d;
    }
    if let Some(m) = model {
        c.model = m;
    }
    c.json = json;
    c.exact_pos_embed = exact_pos_embed;
    c.threads = threads;
    let report = interruptible(py, move |stop| {
        clip_es::prompts::run_until(&c, &Silent, stop)
    })?
    .map_err(|e| match e {
        PromptsError::Write { .. } => PyOSError::new_err(e.to_string()),
        PromptsError::NoImages(_) => PyRuntimeError::new_err(e.to_string()),
        _ => PyValueError::new_err(e.to_string()),
    })?;
    let mut value = report.to_json();
    value["failures"] = failures_json(&report.failures);
    to_python(py, &value)
}

fn cams_json(r: &CamsReport) -> serde_json::Value {
    json!({
        "images": r.in_split,
        "already_done": r.already_done,
        "written": r.written.iter().map(|t| &t.id).collect::<Vec<_>>(),
        "failures": failures_json(&r.failures),
        "model": r.model,
    })
}

fn masks_json(r: &MasksReport) -> serde_json::Value {
    json!({
        "images": r.images,
        "written": r.written,
        "skipped": r.skipped,
        "failures": failures_json(&r.failures),
    })
}

fn predict_json(r: &PredictReport) -> serde_json::Value {
    json!({
        "images": r.images,
        "written": r.written,
        "skipped": r.skipped,
        "failures": failures_json(&r.failures),
    })
}

fn pipeline_json(r: &PipelineReport) -> serde_json::Value {
    json!({
        "cams": cams_json(&r.cams),
        "masks": masks_json(&r.masks),
        "evaluations": r.evals.iter().map(|e| json!({
            "what": e.what,
            "report": e.report.to_json(),
        })).collect::<Vec<_>>(),
        "train": r.train.as_ref().map(|t| json!({
            "checkpoint": t.checkpoint,
            "final_checkpoint": t.final_checkpoint,
            "log": t.log,
            "curve": t.curve,
            "start": t.start,
            "iters": t.iters,
        })),
        "predictions": r.predict.as_ref().map(predict_json),
        "any_failed": r.any_failed(),
    })
}

/// The whole pipeline as `clip-es run` does: CAMs into `<out>/cams`, pseudo masks into
/// `<out>/masks`, with `gt` the evaluations, and with `train` ("clip-decoder" or "deeplab-v2")
/// stage three into `<out>/train` and `<out>/predictions`. Every keyword is the command's
/// option of the same name (`--template` is `templates`, `--bg-power` is `bg_power`, a list;
/// `memory_limit` in MB).
///
/// Returns a dict with each stage's report: cams, masks, evaluations (each the JSON of
/// `clip-es eval --json`), train, predictions, any_failed.
#[pyfunction]
#[pyo3(signature = (images, out, split=None, labels=None, annotations=None, dataset=None, background=None, model=None, box_threshold=None, templates=None, save_unrefined=false, exact_pos_embed=false, scales=None, flip=false, max_side=None, memory_limit=None, apply_exif_orientation=false, confidence=None, crf_image=None, no_crf=false, palette=false, save_confidence=None, cam_key=None, gt=None, bg_power=None, unlabelled=None, overwrite=false, report=None, threads=None, overlays=false, train=None, train_iters=None, train_lr=None, train_batch=None, train_init=None, train_save_every=None, predict_split=None, predict_crf=false, device=None))]
#[allow(clippy::too_many_arguments)]
pub fn run<'py>(
    py: Python<'py>,
    images: PathBuf,
    out: PathBuf,
    split: Option<PathBuf>,
    labels: Option<PathBuf>,
    annotations: Option<PathBuf>,
    dataset: Option<String>,
    background: Option<String>,
    model: Option<String>,
    box_threshold: Option<f64>,
    templates: Option<Vec<String>>,
    save_unrefined: bool,
    exact_pos_embed: bool,
    scales: Option<Vec<f64>>,
    flip: bool,
    max_side: Option<usize>,
    memory_limit: Option<u64>,
    apply_exif_orientation: bool,
    confidence: Option<f32>,
    crf_image: Option<&str>,
    no_crf: bool,
    palette: bool,
    save_confidence: Option<PathBuf>,
    cam_key: Option<&str>,
    gt: Option<PathBuf>,
    bg_power: Option<Vec<f64>>,
    unlabelled: Option<&str>,
    overwrite: bool,
    report: Option<PathBuf>,
    threads: Option<usize>,
    overlays: bool,
    train: Option<&str>,
    train_iters: Option<usize>,
    train_lr: Option<f64>,
    train_batch: Option<usize>,
    train_init: Option<PathBuf>,
    train_save_every: Option<usize>,
    predict_split: Option<PathBuf>,
    predict_crf: bool,
    device: Option<String>,
) -> PyResult<Bound<'py, PyAny>> {
    let classes = ClassSet::from_specs(dataset.as_deref().unwrap_or("voc"), background.as_deref())
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    let data = DatasetConfig {
        images,
        annotations,
        labels,
        split,
    };
    let mut c = PipelineConfig::new(data, classes, out);
    if let Some(d) = &device {
        c.settings.device = clip_es::cams::parse_device(d).map_err(PyValueError::new_err)?;
    }
    if let Some(m) = model {
        c.model = m;
    }
    c.settings.box_threshold = box_threshold;
    if let Some(t) = templates {
        c.settings.templates = t;
    }
    c.settings.save_unrefined = save_unrefined;
    c.settings.exact_pos_embed = exact_pos_embed;
    if let Some(s) = scales {
        c.settings.augment.scales = s;
    }
    c.settings.augment.flip = flip;
    if let Some(m) = max_side {
        c.settings.max_side = m;
    }
    c.settings.memory_limit = memory_limit.map(|mb| mb.saturating_mul(1_000_000));
    if apply_exif_orientation {
        c.exif = ExifOrientation::Apply;
    }
    if let Some(v) = confidence {
        c.mask.confidence = v;
    }
    if let Some(i) = crf_image {
        c.mask.crf_image = choice(
            "crf_image",
            i,
            &[("reference", CrfImage::Reference), ("rgb", CrfImage::Rgb)],
        )?;
    }
    c.mask.use_crf = !no_crf;
    if let Some(k) = cam_kind(cam_key)? {
        c.mask.cam_kind = k;
    }
    c.palette = palette;
    c.save_confidence = save_confidence;
    c.gt = gt;
    if let Some(b) = bg_power {
        c.bg_powers = b;
    }
    if let Some(u) = unlabelled {
        c.unlabelled = choice(
            "unlabelled",
            u,
            &[
                ("miss", UnlabelledPolicy::Miss),
                ("skip", UnlabelledPolicy::Skip),
            ],
        )?;
    }
    c.overwrite = overwrite;
    c.report = report;
    c.threads = threads;
    c.overlays = overlays;
    if let Some(arch) = train {
        let arch = Arch::parse(arch).ok_or_else(|| {
            PyValueError::new_err(format!(
                "train must be 'clip-decoder' or 'deeplab-v2', got {arch:?}"
            ))
        })?;
        let mut t = Stage3Config::new(arch);
        t.iters = train_iters;
        t.lr = train_lr;
        if let Some(b) = train_batch {
            t.batch = b;
        }
        t.init = train_init;
        if let Some(s) = train_save_every {
            t.save_every = s;
        }
        t.predict_split = predict_split;
        t.predict_crf = predict_crf;
        if let Some(d) = &device {
            t.device = d.clone();
        }
        c.stage3 = Some(t);
    }
    let report = interruptible(py, move |stop| {
        clip_es::pipeline::run_until(&c, &Silent, stop)
    })?
    .map_err(|e| match e {
        PipelineError::Config(_) => PyValueError::new_err(e.to_string()),
        _ => PyRuntimeError::new_err(e.to_string()),
    })?;
    to_python(py, &pipeline_json(&report))
}

/// Registers `run`, `segment` and `prompts`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(run, m)?)?;
    m.add_function(wrap_pyfunction!(segment, m)?)?;
    m.add_function(wrap_pyfunction!(prompts, m)?)?;
    Ok(())
}
