//! Bindings of the CLIP-ES stages (docs/algorithm.md): the CAM stage of one image
//! (`clip_es::cams::Cams`), the pseudo mask of one image (`clip_es::masks::pseudo_mask`) and the
//! evaluation of a directory (`clip_es::eval::run`). They only convert arguments and results;
//! the computation is the library's, the same code the CLI runs.

use crate::guard::{guard, interruptible};
use clip_es::cam_files::{CamFile, CamKind};
use clip_es::cams::{CamSettings, Cams};
use clip_es::classes::ClassSet;
use clip_es::eval::{EvalConfig, Prediction, UnlabelledPolicy};
use clip_es::masks::{CrfImage, CrfParams, KernelCache, MaskOptions};
use clip_es::progress::Silent;
use clip_es_image::{DecodedImage, Rgb8Image};
use clip_es_model::Clip;
use half::f16;
use numpy::{PyArray1, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray3, PyUntypedArrayMethods};
use pyo3::exceptions::{PyMemoryError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use std::path::PathBuf;
use std::sync::{PoisonError, RwLock};

pub(crate) fn value_error(e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(e.to_string())
}

/// An image argument: a path (str or os.PathLike) or an (H, W, 3) uint8 RGB array.
enum ImageArg {
    Path(PathBuf),
    Rgb(Rgb8Image),
}

fn image_arg(image: &Bound<'_, PyAny>) -> PyResult<ImageArg> {
    if let Ok(a) = image.extract::<PyReadonlyArray3<'_, u8>>() {
        let shape = a.shape().to_vec();
        if shape[2] != 3 || shape[0] == 0 || shape[1] == 0 {
            return Err(PyValueError::new_err(format!(
                "image: an RGB array must have shape (H, W, 3), got {shape:?}"
            )));
        }
        // Any strides (a broadcast view too): the array is copied, once its size is known to
        // fit in memory.
        let bytes = shape[0]
            .checked_mul(shape[1])
            .and_then(|n| n.checked_mul(3));
        let too_large = |detail: String| {
            PyMemoryError::new_err(format!("image: a {}x{} array {detail}", shape[1], shape[0]))
        };
        let bytes =
            bytes.ok_or_else(|| too_large("has more bytes than memory can address".into()))?;
        if shape[0] > u32::MAX as usize || shape[1] > u32::MAX as usize {
            return Err(too_large("is larger than an image can be".into()));
        }
        if let Some(free) = clip_es::budget::available_bytes() {
            if bytes as u64 > free {
                return Err(too_large(format!(
                    "needs {bytes} bytes, more than the {free} bytes of memory available"
                )));
            }
        }
        let mut data: Vec<u8> = Vec::new();
        data.try_reserve_exact(bytes)
            .map_err(|_| too_large(format!("needs {bytes} bytes, which cannot be allocated")))?;
        data.extend(a.as_array().iter().copied());
        return Ok(ImageArg::Rgb(Rgb8Image {
            width: shape[1] as u32,
            height: shape[0] as u32,
            data,
        }));
    }
    if image.hasattr("__array_interface__")? || image.hasattr("__array__")? {
        return Err(PyValueError::new_err(
            "image: an array must be (H, W, 3) uint8 RGB",
        ));
    }
    match image.extract::<PathBuf>() {
        Ok(p) => Ok(ImageArg::Path(p)),
        Err(_) => Err(PyTypeError::new_err(
            "image must be a path or an (H, W, 3) uint8 numpy array",
        )),
    }
}

/// The class set of `dataset` ("voc", "coco" or a class file) or of `classes` (a list of names
/// or a class file), as the CLI's `--dataset` / `--classes`, with `background` (a word list
/// or file, as `--background`) replacing its background words.
fn class_set(
    dataset: Option<&str>,
    classes: Option<&Bound<'_, PyAny>>,
    background: Option<&str>,
) -> PyResult<ClassSet> {
    match (dataset, classes) {
        (Some(_), Some(_)) => Err(PyValueError::new_err(
            "give either dataset or classes, not both",
        )),
        (_, Some(c)) => {
            if let Ok(s) = c.extract::<String>() {
                ClassSet::from_specs(&s, background).map_err(value_error)
            } else if let Ok(p) = c.extract::<PathBuf>() {
                ClassSet::from_specs(&p.to_string_lossy(), background).map_err(value_error)
            } else {
                let names: Vec<String> = c.extract().map_err(|_| {
                    PyTypeError::new_err("classes must be a list of names or a class file path")
                })?;
                let mut set = ClassSet::from_names(&names).map_err(value_error)?;
                if let Some(b) = background {
                    set.background = ClassSet::background_from_spec(b).map_err(value_error)?;
                }
                Ok(set)
            }
        }
        (d, None) => ClassSet::from_specs(d.unwrap_or("voc"), background).map_err(value_error),
    }
}

/// The key of a classifier: what `Cams::new` was built from.
#[derive(Clone, PartialEq)]
struct CamsKey {
    classes: ClassSet,
    settings: CamSettings,
}

enum ModelState {
    Clip(Box<Clip>),
    Cams(CamsKey, Box<Cams>),
    /// While switching, and after a classifier could not be built (the model is loaded again).
    Empty,
}

/// A loaded CLIP model (`clip_es.load_model`). Calls from several threads run at the same time
/// (the weights are only read) as long as they use the same classes and settings; a call with
/// other ones rebuilds the text classifier and waits for the calls in progress, which then wait
/// for it.
#[pyclass(module = "clip_es._native", frozen)]
pub struct Model {
    spec: String,
    /// Where the GradCAM pass runs (`None`: the CPU kernels) and what that device is.
    device: Option<clip_es_gpu::BurnDevice>,
    device_description: String,
    state: RwLock<ModelState>,
}

impl Model {
    /// The CAMs of one image with the classifier of `key`, built (replacing the current one)
    /// when the model holds another.
    fn cams_with(
        &self,
        key: &CamsKey,
        image: &ImageArg,
        labels: &[usize],
    ) -> Result<CamFile, String> {
        {
            let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
            if let ModelState::Cams(k, cams) = &*state {
                if k == key {
                    return image_cams(cams, image, labels);
                }
            }
        }
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        // Unless another call built this classifier meanwhile, build it.
        if !matches!(&*state, ModelState::Cams(k, _) if k == key) {
            let clip = match std::mem::replace(&mut *state, ModelState::Empty) {
                ModelState::Cams(_, cams) => cams.into_clip(),
                ModelState::Clip(clip) => *clip,
                // An earlier classifier could not be built and took the model with it.
                ModelState::Empty => Clip::load(&self.spec).map_err(|e| e.to_string())?,
            };
            let cams =
                Cams::new(clip, key.classes.clone(), &key.settings).map_err(|e| e.to_string())?;
            *state = ModelState::Cams(key.clone(), Box::new(cams));
        }
        // Computed under the write lock: the classifier cannot change before this call used it.
        match &*state {
            ModelState::Cams(_, cams) => image_cams(cams, image, labels),
            _ => Err("the text classifier was not built".into()),
        }
    }
}

fn image_cams(cams: &Cams, image: &ImageArg, labels: &[usize]) -> Result<CamFile, String> {
    match image {
        ImageArg::Path(p) => DecodedImage::open(p)
            .map_err(|e| e.to_string())
            .and_then(|img| cams.image(&img, labels).map_err(|e| e.to_string())),
        ImageArg::Rgb(rgb) => cams
            .image_rgb(rgb.width, rgb.height, rgb.data.clone(), labels)
            .map_err(|e| e.to_string()),
    }
    .map(|(c, _)| c.to_cam_file(labels))
}

#[pymethods]
impl Model {
    /// The name or path the model was loaded from.
    #[getter]
    fn name(&self) -> &str {
        &self.spec
    }

    /// The device the GradCAM pass runs on, e.g. "cpu (clip-es kernels)", "flex (CPU)" or
    /// "vulkan (NVIDIA H100 80GB HBM3)" (the adapter's own name).
    #[getter]
    fn device(&self) -> &str {
        &self.device_description
    }

    /// The CAMs of one image for its labels, as the CAM stage (`clip-es cams`) computes them.
    ///
    /// image: a path, or an (H, W, 3) uint8 RGB array. labels: class names or indices (of the
    /// class set), duplicates dropped. dataset: "voc" (the default) or "coco"; or classes: a
    /// list of class names or a class file (as `--dataset FILE`). background: background words
    /// (a comma-separated list or a file, as `--background`). box_threshold: CAA box threshold
    /// (default: the class set's, 0.4 for VOC, 0.7 for COCO). templates: prompt templates with
    /// `{}` (default: "a clean origami {}."). save_unrefined: also return `highres`.
    /// exact_pos_embed: keep the resized positional embedding in float32.
    ///
    /// Returns the reference's dict: `keys` (int64 class indices) and `attn_highres` (float16,
    /// K x H x W). The text classifier is kept between calls with the same classes and settings.
    #[pyo3(signature = (image, labels, dataset=None, classes=None, background=None, box_threshold=None, templates=None, save_unrefined=false, exact_pos_embed=false))]
    #[allow(clippy::too_many_arguments)]
    fn cams<'py>(
        &self,
        py: Python<'py>,
        image: &Bound<'py, PyAny>,
        labels: &Bound<'py, PyAny>,
        dataset: Option<&str>,
        classes: Option<&Bound<'py, PyAny>>,
        background: Option<&str>,
        box_threshold: Option<f64>,
        templates: Option<Vec<String>>,
        save_unrefined: bool,
        exact_pos_embed: bool,
    ) -> PyResult<Bound<'py, PyDict>> {
        guard(|| {
            let classes = class_set(dataset, classes, background)?;
            let mut settings = CamSettings {
                box_threshold,
                save_unrefined,
                exact_pos_embed,
                device: self.device,
                ..CamSettings::default()
            };
            if let Some(t) = templates {
                settings.templates = t;
            }
            let label_ids = resolve_labels(&classes, labels)?;
            let image = image_arg(image)?;
            let key = CamsKey { classes, settings };
            let cam = interruptible(py, |_| self.cams_with(&key, &image, &label_ids))?
                .map_err(PyValueError::new_err)?;
            cam_dict(py, &cam)
        })
    }
}

/// Class indices of `labels` (names or indices), distinct, in order of first appearance (as
/// the dataset readers give them).
fn resolve_labels(classes: &ClassSet, labels: &Bound<'_, PyAny>) -> PyResult<Vec<usize>> {
    if labels.cast::<PyString>().is_ok() {
        return Err(PyTypeError::new_err(
            "labels must be a list of class names or indices, not a string",
        ));
    }
    let mut out: Vec<usize> = Vec::new();
    for item in labels.try_iter()? {
        let item = item?;
        let id = if let Ok(i) = item.extract::<i64>() {
            if i < 0 || i as usize >= classes.len() {
                return Err(PyValueError::new_err(format!(
                    "label {i} is not one of the {} classes",
                    classes.len()
                )));
            }
            i as usize
        } else if let Ok(name) = item.extract::<String>() {
            classes.resolve(&name).ok_or_else(|| {
                PyValueError::new_err(format!(
                    "unknown class {name:?} (classes: {})",
                    classes.names.join(", ")
                ))
            })?
        } else {
            return Err(PyTypeError::new_err(
                "labels must be class names (str) or indices (int)",
            ));
        };
        if !out.contains(&id) {
            out.push(id);
        }
    }
    if out.is_empty() {
        return Err(PyValueError::new_err("no labels"));
    }
    Ok(out)
}

/// The reference's CAM dict: `keys` (int64) and `attn_highres` (float16, K x H x W), plus
/// `highres` when kept.
fn cam_dict<'py>(py: Python<'py>, cam: &CamFile) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    let k = cam.keys.len();
    d.set_item("keys", PyArray1::from_vec(py, cam.keys.clone()))?;
    let maps = |v: &[f16]| PyArray1::from_vec(py, v.to_vec()).reshape([k, cam.height, cam.width]);
    d.set_item("attn_highres", maps(&cam.attn_highres)?)?;
    if let Some(h) = &cam.highres {
        d.set_item("highres", maps(h)?)?;
    }
    Ok(d)
}

/// A CAM dict (`keys`, `attn_highres`, optionally `highres`) as a `CamFile`.
fn cam_file(cams: &Bound<'_, PyAny>) -> PyResult<CamFile> {
    let get = |name: &str| -> PyResult<Option<Bound<'_, PyAny>>> {
        match cams.get_item(name) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_instance_of::<pyo3::exceptions::PyKeyError>(cams.py()) => Ok(None),
            Err(e) => Err(e),
        }
    };
    let keys_obj = get("keys")?.ok_or_else(|| PyValueError::new_err("cams: no 'keys' entry"))?;
    let keys: Vec<i64> = if let Ok(a) = keys_obj.extract::<PyReadonlyArray1<'_, i64>>() {
        a.as_array().to_vec()
    } else {
        keys_obj
            .extract()
            .map_err(|_| PyValueError::new_err("cams: 'keys' must be integers"))?
    };
    let f16_maps = |name: &str, v: Bound<'_, PyAny>| -> PyResult<(Vec<f16>, usize, usize)> {
        let a = v.extract::<PyReadonlyArray3<'_, f16>>().map_err(|_| {
            PyValueError::new_err(format!(
                "cams: '{name}' must be a float16 array of shape (K, H, W), as the reference saves it"
            ))
        })?;
        let s = a.shape().to_vec();
        if s[0] != keys.len() {
            return Err(PyValueError::new_err(format!(
                "cams: '{name}' has {} maps for {} keys",
                s[0],
                keys.len()
            )));
        }
        Ok((a.as_array().iter().copied().collect(), s[1], s[2]))
    };
    let attn = get("attn_highres")?
        .ok_or_else(|| PyValueError::new_err("cams: no 'attn_highres' entry"))?;
    let (attn_highres, height, width) = f16_maps("attn_highres", attn)?;
    let highres = match get("highres")? {
        Some(h) if !h.is_none() => {
            let (v, hh, ww) = f16_maps("highres", h)?;
            if (hh, ww) != (height, width) {
                return Err(PyValueError::new_err(
                    "cams: 'highres' and 'attn_highres' differ in size",
                ));
            }
            Some(v)
        }
        _ => None,
    };
    Ok(CamFile {
        keys,
        height,
        width,
        attn_highres,
        highres,
    })
}

fn cam_kind(name: &str) -> PyResult<CamKind> {
    match name {
        "attn_highres" => Ok(CamKind::AttnHighres),
        "highres" => Ok(CamKind::Highres),
        _ => Err(PyValueError::new_err(format!(
            "cam_key must be 'attn_highres' or 'highres', got {name:?}"
        ))),
    }
}

/// Loads a CLIP model: a Hugging Face id, a local directory or weights file, or an OpenAI name
/// (as the CLI's `--model`). device: where `Model.cams` runs the GradCAM pass, as
/// `clip-es cams --device`: "cpu" (clip-es' CPU kernels, the default), "flex" (burn's CPU
/// backend) or "vulkan" (a Vulkan GPU, in wheels built with the `vulkan` feature; docs/gpu.md).
/// A device the wheel or the machine lacks raises ValueError saying what to build or install.
#[pyfunction]
#[pyo3(signature = (name_or_path, device="cpu"))]
pub fn load_model(py: Python<'_>, name_or_path: PathBuf, device: &str) -> PyResult<Model> {
    let burn_device = clip_es::cams::parse_device(device).map_err(PyValueError::new_err)?;
    let device_description = clip_es::cams::open_device(burn_device).map_err(value_error)?;
    let spec = name_or_path.to_string_lossy().into_owned();
    let s = spec.clone();
    let clip = interruptible(py, move |_| Clip::load(&s))?.map_err(value_error)?;
    Ok(Model {
        spec,
        device: burn_device,
        device_description,
        state: RwLock::new(ModelState::Clip(Box::new(clip))),
    })
}

/// The pseudo mask of one image from its CAMs, as the masks stage (`clip-es masks`) makes it.
///
/// cams: a CAM dict (`keys`, float16 `attn_highres`, optionally `highres`): the result of
/// `Model.cams`, or `np.load(path, allow_pickle=True).item()` of the reference's `.npy`.
/// image: a path (read as OpenCV reads it), or an (H, W, 3) uint8 RGB array of the CAMs' size.
/// confidence: pixels whose CRF marginal is below it become 255. crf: False takes the argmax of
/// [background, CAMs] instead. crf_image: "reference" (BGR minus the mean, wrapped to uint8, as
/// the reference feeds its CRF) or "rgb". The CRF parameters default to the reference's.
///
/// Returns (labels, confidence): (H, W) uint8 (0 background, key + 1 for a class, 255 not
/// confident) and (H, W) float32.
#[pyfunction]
#[pyo3(signature = (cams, image, confidence=0.95, crf=true, crf_image="reference", cam_key="attn_highres", iterations=10, gaussian_sxy=1.0, gaussian_weight=3.0, bilateral_sxy=67.0, bilateral_srgb=3.0, bilateral_weight=4.0))]
#[allow(clippy::too_many_arguments)]
pub fn pseudo_mask<'py>(
    py: Python<'py>,
    cams: &Bound<'py, PyAny>,
    image: &Bound<'py, PyAny>,
    confidence: f32,
    crf: bool,
    crf_image: &str,
    cam_key: &str,
    iterations: usize,
    gaussian_sxy: f32,
    gaussian_weight: f32,
    bilateral_sxy: f32,
    bilateral_srgb: f32,
    bilateral_weight: f32,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let cam = cam_file(cams)?;
    let crf_image = match crf_image {
        "reference" => CrfImage::Reference,
        "rgb" => CrfImage::Rgb,
        _ => {
            return Err(PyValueError::new_err(format!(
                "crf_image must be 'reference' or 'rgb', got {crf_image:?}"
            )))
        }
    };
    let options = MaskOptions {
        confidence,
        crf_image,
        use_crf: crf,
        crf: CrfParams {
            iterations,
            gaussian_sxy,
            gaussian_weight,
            bilateral_sxy,
            bilateral_srgb,
            bilateral_weight,
        },
        cam_kind: cam_kind(cam_key)?,
        num_classes: None,
    };
    let image = image_arg(image)?;
    let mask = interruptible(py, move |stop| {
        let rgb = match image {
            ImageArg::Path(p) => clip_es_image::load_rgb(&p).map_err(|e| e.to_string())?,
            ImageArg::Rgb(rgb) => rgb,
        };
        clip_es::masks::pseudo_mask_until(&cam, &rgb, &options, &KernelCache::default(), stop)
    })?
    .map_err(PyValueError::new_err)?;
    let (h, w) = (mask.height, mask.width);
    let labels = PyArray1::from_vec(py, mask.labels).reshape([h, w])?;
    let conf = PyArray1::from_vec(py, mask.confidence).reshape([h, w])?;
    Ok((labels.into_any(), conf.into_any()))
}

/// Evaluates a directory of CAMs (`cams=`, `<id>.npz` or the reference's `<id>.npy`) or of
/// masks (`masks=`, `<id>.png`) against the ground-truth PNGs in `gt` for the ids of `split`,
/// as `clip-es eval` does. dataset / classes: the class set (default VOC). bg_powers: the
/// background exponents tried for CAMs (default [1, 2]). unlabelled: "miss" or "skip" for
/// pixels a mask leaves at 255. threads: worker threads (default: all cores).
///
/// Returns the report as a dict (the JSON of `clip-es eval --json`).
#[pyfunction]
#[pyo3(signature = (gt, split, cams=None, masks=None, dataset=None, classes=None, bg_powers=None, cam_key="attn_highres", unlabelled="miss", threads=None))]
#[allow(clippy::too_many_arguments)]
pub fn evaluate<'py>(
    py: Python<'py>,
    gt: PathBuf,
    split: PathBuf,
    cams: Option<PathBuf>,
    masks: Option<PathBuf>,
    dataset: Option<&str>,
    classes: Option<&Bound<'py, PyAny>>,
    bg_powers: Option<Vec<f64>>,
    cam_key: &str,
    unlabelled: &str,
    threads: Option<usize>,
) -> PyResult<Bound<'py, PyAny>> {
    let prediction = match (cams, masks) {
        (Some(c), None) => Prediction::Cams(c),
        (None, Some(m)) => Prediction::Masks(m),
        _ => {
            return Err(PyValueError::new_err(
                "give exactly one of cams (a CAM directory) or masks (a mask directory)",
            ))
        }
    };
    let mut config = EvalConfig::new(prediction, gt, split, class_set(dataset, classes, None)?);
    if let Some(p) = bg_powers {
        config.bg_powers = p;
    }
    config.cam_kind = cam_kind(cam_key)?;
    config.unlabelled = match unlabelled {
        "miss" => UnlabelledPolicy::Miss,
        "skip" => UnlabelledPolicy::Skip,
        _ => {
            return Err(PyValueError::new_err(format!(
                "unlabelled must be 'miss' or 'skip', got {unlabelled:?}"
            )))
        }
    };
    config.threads = threads;
    let report = interruptible(py, move |_| {
        clip_es::eval::run(&config, &Silent).map(|r| r.to_json().to_string())
    })?
    .map_err(value_error)?;
    let json = py.import("json")?;
    json.call_method1("loads", (report,))
}

/// Registers the pipeline functions and classes.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Model>()?;
    m.add_function(wrap_pyfunction!(load_model, m)?)?;
    m.add_function(wrap_pyfunction!(pseudo_mask, m)?)?;
    m.add_function(wrap_pyfunction!(evaluate, m)?)?;
    Ok(())
}
