//! Loading CLIP ViT weights from the layouts they are published in, as float32 CPU tensors under
//! OpenAI's names (the names of the reference's `clip/model.py` state dict; docs/algorithm.md, "Image side"):
//!
//! - a Hugging Face model directory (`config.json` + `model.safetensors`, or a sharded
//!   `model.safetensors.index.json`), float32, float16 or bfloat16;
//! - a single `.safetensors` file with OpenAI names (sizes inferred from the shapes), or with HF
//!   names and a `config.json` beside it;
//! - an OpenAI state dict saved with `torch.save` (`.pt`, zip or legacy format);
//! - a TorchScript archive like OpenAI's published `ViT-B-16.pt` (float16);
//! - an HF directory holding `pytorch_model.bin` instead of safetensors.
//!
//! PyTorch files are read by clip-es-pickle (a pickle VM that executes nothing).
//!
//! HF names are mapped to OpenAI's: q/k/v projections concatenated (rows q, k, v) into
//! `attn.in_proj_weight` / `attn.in_proj_bias`, `visual_projection.weight` and
//! `text_projection.weight` transposed into `visual.proj` / `text_projection`, and
//! `pre_layrnorm`, `post_layernorm`, `final_layer_norm`, `layer_norm1/2`, `mlp.fc1/2` renamed.
//! Every tensor the configuration implies must be present with its shape; anything else in the
//! file (HF `position_ids`, OpenAI's `input_resolution`, ...) is ignored.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use safetensors::SafeTensors;

use crate::config::{ClipConfig, ConfigError};

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

/// Which layout the weights were read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightsFormat {
    /// A Hugging Face model directory (config.json + safetensors, or pytorch_model.bin).
    HfDirectory,
    /// A single safetensors file with HF names and a config.json beside it.
    HfSafetensors,
    /// A single safetensors file with OpenAI names.
    OpenAiSafetensors,
    /// A PyTorch file with HF names (`pytorch_model.bin`) and a config.json beside it.
    HfPytorch,
    /// An OpenAI state dict saved with `torch.save`.
    OpenAiStateDict,
    /// A TorchScript archive (`torch.jit.save`), like OpenAI's published files.
    TorchScript,
}

/// Where the weights came from.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightsSource {
    /// The path given to [`ClipWeights::load`].
    pub path: PathBuf,
    pub format: WeightsFormat,
    /// Storage type of the model's tensors in the file (they are converted to F32).
    pub stored_dtype: DType,
}

/// CLIP ViT weights: float32 CPU tensors under OpenAI's names, and the model's sizes.
#[derive(Debug, Clone)]
pub struct ClipWeights {
    config: ClipConfig,
    names: Vec<String>,
    tensors: HashMap<String, Tensor>,
    source: WeightsSource,
}

impl ClipWeights {
    /// Loads weights from an HF model directory, a `.safetensors` file (OpenAI names, or HF
    /// names with a config.json beside it), an OpenAI state dict `.pt` or a TorchScript `.pt`,
    /// detected from the path and the file's first bytes.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, WeightsError> {
        let path = path.as_ref();
        let meta = std::fs::metadata(path).map_err(|e| io_error(path, e))?;
        if meta.is_dir() {
            return load_hf_directory(path);
        }
        load_file(path)
    }

    /// Builds weights from tensors already named as OpenAI does (e.g. in tests). The tensors are
    /// converted to F32 on the CPU and checked against `config`.
    pub fn from_tensors(
        config: ClipConfig,
        tensors: HashMap<String, Tensor>,
        source: WeightsSource,
    ) -> Result<Self, WeightsError> {
        let path = source.path.clone();
        config.validate().map_err(|source| WeightsError::Config {
            path: path.clone(),
            source,
        })?;
        let mut out = HashMap::new();
        let mut names = Vec::new();
        for (name, shape) in config.expected_tensors() {
            let t = tensors
                .get(&name)
                .ok_or_else(|| WeightsError::MissingTensor {
                    path: path.clone(),
                    name: name.clone(),
                })?;
            if t.dims() != shape.as_slice() {
                return Err(WeightsError::Shape {
                    path: path.clone(),
                    name,
                    found: t.dims().to_vec(),
                    expected: shape,
                });
            }
            let t = t
                .to_device(&Device::Cpu)
                .and_then(|t| t.to_dtype(DType::F32))
                .map_err(|e| WeightsError::BadTensor {
                    path: path.clone(),
                    name: name.clone(),
                    reason: e.to_string(),
                })?;
            out.insert(name.clone(), t);
            names.push(name);
        }
        Ok(ClipWeights {
            config,
            names,
            tensors: out,
            source,
        })
    }

    /// The model's sizes.
    pub fn config(&self) -> &ClipConfig {
        &self.config
    }

    /// A tensor by its OpenAI name, e.g. `visual.transformer.resblocks.11.attn.in_proj_weight`.
    pub fn get(&self, name: &str) -> Result<&Tensor, WeightsError> {
        self.tensors
            .get(name)
            .ok_or_else(|| WeightsError::NoSuchTensor {
                path: self.source.path.clone(),
                name: name.to_string(),
            })
    }

    /// All tensor names, in [`ClipConfig::expected_tensors`] order (vision tower, then text).
    pub fn names(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.names.iter().map(String::as_str)
    }

    /// The path and layout the weights were read from.
    pub fn source(&self) -> &WeightsSource {
        &self.source
    }

    /// All tensors by OpenAI name.
    pub fn tensors(&self) -> &HashMap<String, Tensor> {
        &self.tensors
    }

    /// A candle `VarBuilder` over the tensors (F32, CPU); tensors are shared, not copied.
    pub fn var_builder(&self) -> candle_nn::VarBuilder<'static> {
        candle_nn::VarBuilder::from_tensors(self.tensors.clone(), DType::F32, &Device::Cpu)
    }
}

// ------------------------------------------------------------------ raw tensors

/// Element type of a stored tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RawDType {
    F64,
    F32,
    F16,
    BF16,
    /// Not a floating-point type (e.g. the int64 `position_ids` of HF checkpoints).
    Other(&'static str),
}

impl RawDType {
    fn size(self) -> Option<usize> {
        match self {
            RawDType::F64 => Some(8),
            RawDType::F32 => Some(4),
            RawDType::F16 | RawDType::BF16 => Some(2),
            RawDType::Other(_) => None,
        }
    }

    fn candle(self) -> DType {
        match self {
            RawDType::F64 => DType::F64,
            RawDType::F16 => DType::F16,
            RawDType::BF16 => DType::BF16,
            RawDType::F32 | RawDType::Other(_) => DType::F32,
        }
    }

    fn name(self) -> &'static str {
        match self {
            RawDType::F64 => "float64",
            RawDType::F32 => "float32",
            RawDType::F16 => "float16",
            RawDType::BF16 => "bfloat16",
            RawDType::Other(n) => n,
        }
    }
}

/// A stored tensor: shape, element type and its bytes in row-major order (little-endian).
pub(crate) struct RawTensor<'a> {
    pub shape: Vec<usize>,
    pub dtype: RawDType,
    pub data: Cow<'a, [u8]>,
    /// The file holding it (a shard of a sharded checkpoint, or the archive).
    pub file: &'a Path,
}

/// A set of named stored tensors, whatever the container.
pub(crate) struct RawStore<'a> {
    tensors: BTreeMap<String, RawTensor<'a>>,
}

impl<'a> RawStore<'a> {
    pub(crate) fn new() -> Self {
        RawStore {
            tensors: BTreeMap::new(),
        }
    }

    pub(crate) fn insert(&mut self, name: String, tensor: RawTensor<'a>) {
        self.tensors.insert(name, tensor);
    }

    fn shapes(&self) -> BTreeMap<String, Vec<usize>> {
        self.tensors
            .iter()
            .map(|(k, v)| (k.clone(), v.shape.clone()))
            .collect()
    }

    fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Drops a `module.` prefix (models saved from DataParallel), as OpenAI's loader does.
    fn strip_module_prefix(self) -> Self {
        if !self.tensors.keys().all(|k| k.starts_with("module.")) {
            return self;
        }
        let tensors = self
            .tensors
            .into_iter()
            .map(|(k, v)| (k["module.".len()..].to_string(), v))
            .collect();
        RawStore { tensors }
    }

    /// The tensor `name` as float32 values, checked against `expected` (a shape with the same
    /// number of elements is accepted only for the 0-d `logit_scale`, which some files store
    /// as shape [1]).
    fn read_f32(
        &self,
        name: &str,
        expected: &[usize],
        fallback: &Path,
    ) -> Result<Vec<f32>, WeightsError> {
        let raw = self
            .tensors
            .get(name)
            .ok_or_else(|| WeightsError::MissingTensor {
                path: fallback.to_path_buf(),
                name: name.to_string(),
            })?;
        let path = raw.file;
        let scalar_ok = expected.is_empty() && raw.shape.iter().product::<usize>() == 1;
        if raw.shape != expected && !scalar_ok {
            return Err(WeightsError::Shape {
                path: path.to_path_buf(),
                name: name.to_string(),
                found: raw.shape.clone(),
                expected: expected.to_vec(),
            });
        }
        let Some(size) = raw.dtype.size() else {
            return Err(WeightsError::DType {
                path: path.to_path_buf(),
                name: name.to_string(),
                dtype: raw.dtype.name().to_string(),
            });
        };
        let count: usize = raw.shape.iter().product();
        if raw.data.len() != count * size {
            return Err(WeightsError::BadTensor {
                path: path.to_path_buf(),
                name: name.to_string(),
                reason: format!(
                    "{} bytes of data for {count} {} values",
                    raw.data.len(),
                    raw.dtype.name()
                ),
            });
        }
        Ok(decode_f32(&raw.data, raw.dtype))
    }

    /// Storage type of the model's tensors (that of `probe`, a tensor every CLIP has).
    fn stored_dtype(&self, probe: &str) -> DType {
        self.tensors
            .get(probe)
            .map(|t| t.dtype.candle())
            .unwrap_or(DType::F32)
    }
}

/// Little-endian floats to f32 (f16 / bf16 widen exactly).
fn decode_f32(bytes: &[u8], dtype: RawDType) -> Vec<f32> {
    use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};
    match dtype {
        RawDType::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        RawDType::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8-byte chunk")) as f32)
            .collect(),
        RawDType::F16 | RawDType::BF16 => {
            let bits: Vec<u16> = bytes
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            let mut out = vec![0f32; bits.len()];
            if dtype == RawDType::F16 {
                bits.reinterpret_cast::<half::f16>()
                    .convert_to_f32_slice(&mut out);
            } else {
                bits.reinterpret_cast::<half::bf16>()
                    .convert_to_f32_slice(&mut out);
            }
            out
        }
        RawDType::Other(_) => Vec::new(),
    }
}

// ------------------------------------------------------------------ naming and conversion

/// How one OpenAI-named tensor is made from the stored tensors.
enum Recipe {
    /// Same values, possibly under another name.
    Copy(String),
    /// Rows of q, k and v stacked (HF attention projections -> in_proj_*).
    StackRows([String; 3]),
    /// A 2-d tensor transposed (HF projections are Linear weights, OpenAI's are matrices).
    Transpose(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Naming {
    OpenAi,
    HuggingFace,
}

fn detect_naming(store: &RawStore<'_>) -> Option<Naming> {
    let names = || store.tensors.keys();
    if names().any(|k| k.starts_with("visual.") || k == "token_embedding.weight") {
        Some(Naming::OpenAi)
    } else if names().any(|k| k.starts_with("vision_model.") || k.starts_with("text_model.")) {
        Some(Naming::HuggingFace)
    } else {
        None
    }
}

/// The HF source of an OpenAI-named tensor.
fn hf_recipe(openai: &str) -> Recipe {
    let copy = |s: &str| Recipe::Copy(s.to_string());
    let block = |rest: &str, tower: &str, index: &str| -> Recipe {
        let prefix = format!("{tower}.encoder.layers.{index}");
        if let Some(kind) = rest.strip_prefix("attn.in_proj_") {
            return Recipe::StackRows(
                ["q_proj", "k_proj", "v_proj"].map(|p| format!("{prefix}.self_attn.{p}.{kind}")),
            );
        }
        let (module, param) = rest.rsplit_once('.').unwrap_or((rest, ""));
        let hf_module = match module {
            "attn.out_proj" => "self_attn.out_proj",
            "ln_1" => "layer_norm1",
            "ln_2" => "layer_norm2",
            "mlp.c_fc" => "mlp.fc1",
            "mlp.c_proj" => "mlp.fc2",
            other => other,
        };
        Recipe::Copy(format!("{prefix}.{hf_module}.{param}"))
    };
    fn split_block(rest: &str) -> (&str, &str) {
        rest.split_once('.').unwrap_or((rest, ""))
    }
    if let Some(rest) = openai.strip_prefix("visual.transformer.resblocks.") {
        let (index, rest) = split_block(rest);
        return block(rest, "vision_model", index);
    }
    if let Some(rest) = openai.strip_prefix("transformer.resblocks.") {
        let (index, rest) = split_block(rest);
        return block(rest, "text_model", index);
    }
    match openai {
        "visual.conv1.weight" => copy("vision_model.embeddings.patch_embedding.weight"),
        "visual.class_embedding" => copy("vision_model.embeddings.class_embedding"),
        "visual.positional_embedding" => copy("vision_model.embeddings.position_embedding.weight"),
        "visual.ln_pre.weight" => copy("vision_model.pre_layrnorm.weight"),
        "visual.ln_pre.bias" => copy("vision_model.pre_layrnorm.bias"),
        "visual.ln_post.weight" => copy("vision_model.post_layernorm.weight"),
        "visual.ln_post.bias" => copy("vision_model.post_layernorm.bias"),
        "visual.proj" => Recipe::Transpose("visual_projection.weight".into()),
        "token_embedding.weight" => copy("text_model.embeddings.token_embedding.weight"),
        "positional_embedding" => copy("text_model.embeddings.position_embedding.weight"),
        "ln_final.weight" => copy("text_model.final_layer_norm.weight"),
        "ln_final.bias" => copy("text_model.final_layer_norm.bias"),
        "text_projection" => Recipe::Transpose("text_projection.weight".into()),
        other => copy(other),
    }
}

/// Converts a store to F32 tensors under OpenAI names, checking every expected tensor.
fn convert(
    store: &RawStore<'_>,
    naming: Naming,
    config: ClipConfig,
    source: WeightsSource,
    weights_file: &Path,
) -> Result<ClipWeights, WeightsError> {
    // missing tensors are reported against the weights file (the directory when sharded)
    let fallback = weights_file.to_path_buf();
    let expected = config.expected_tensors();
    let make = |(name, shape): &(String, Vec<usize>)| -> Result<Tensor, WeightsError> {
        let recipe = match naming {
            Naming::OpenAi => Recipe::Copy(name.clone()),
            Naming::HuggingFace => hf_recipe(name),
        };
        let values = match &recipe {
            Recipe::Copy(src) => store.read_f32(src, shape, &fallback)?,
            Recipe::StackRows(parts) => {
                let part_shape: Vec<usize> = std::iter::once(shape[0] / 3)
                    .chain(shape[1..].iter().copied())
                    .collect();
                let mut all = Vec::with_capacity(shape.iter().product());
                for p in parts {
                    all.extend(store.read_f32(p, &part_shape, &fallback)?);
                }
                all
            }
            Recipe::Transpose(src) => {
                let (rows, cols) = (shape[0], shape[1]);
                let stored = store.read_f32(src, &[cols, rows], &fallback)?;
                let mut out = vec![0f32; stored.len()];
                for (c, row) in stored.chunks_exact(rows).enumerate() {
                    for (r, v) in row.iter().enumerate() {
                        out[r * cols + c] = *v;
                    }
                }
                out
            }
        };
        Tensor::from_vec(values, shape.clone(), &Device::Cpu).map_err(|e| WeightsError::BadTensor {
            path: fallback.clone(),
            name: name.clone(),
            reason: e.to_string(),
        })
    };
    // tensors are independent: convert them on all cores (the copy is memory-bound)
    use rayon::prelude::*;
    let built: Vec<Tensor> = expected.par_iter().map(make).collect::<Result<_, _>>()?;
    let names: Vec<String> = expected.into_iter().map(|(n, _)| n).collect();
    let tensors = names.iter().cloned().zip(built).collect();
    Ok(ClipWeights {
        config,
        names,
        tensors,
        source,
    })
}

// ------------------------------------------------------------------ containers

enum Container {
    Safetensors,
    /// A zip archive: `torch.save` (state dict) or `torch.jit.save` (TorchScript).
    TorchZip,
    /// The legacy (pre-1.6) non-zip `torch.save` stream.
    LegacyPickle,
    Unknown,
}

fn read_magic(path: &Path) -> Result<Vec<u8>, WeightsError> {
    use std::io::Read;
    let mut f = File::open(path).map_err(|e| io_error(path, e))?;
    let mut buf = Vec::with_capacity(16);
    f.by_ref()
        .take(16)
        .read_to_end(&mut buf)
        .map_err(|e| io_error(path, e))?;
    Ok(buf)
}

fn sniff(magic: &[u8]) -> Container {
    if magic.starts_with(b"PK\x03\x04") {
        return Container::TorchZip;
    }
    if magic.len() >= 9 && magic[8] == b'{' {
        return Container::Safetensors;
    }
    // a pickle stream (protocol 2+) starts with PROTO: torch.save's legacy format
    if magic.len() >= 2 && magic[0] == 0x80 && (2..=5).contains(&magic[1]) {
        return Container::LegacyPickle;
    }
    Container::Unknown
}

fn io_error(path: &Path, source: std::io::Error) -> WeightsError {
    WeightsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A memory-mapped safetensors file.
struct MappedFile {
    path: PathBuf,
    map: memmap2::Mmap,
}

impl MappedFile {
    fn open(path: &Path) -> Result<Self, WeightsError> {
        let file = File::open(path).map_err(|e| io_error(path, e))?;
        // SAFETY: the map is read-only and lives as long as the tensors are decoded from it;
        // a file truncated by another process while mapped could fault, which is the usual
        // caveat of memory-mapped model loading (candle and safetensors users accept it).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| io_error(path, e))?;
        Ok(MappedFile {
            path: path.to_path_buf(),
            map,
        })
    }

    fn parse(&self) -> Result<SafeTensors<'_>, WeightsError> {
        SafeTensors::deserialize(&self.map).map_err(|e| WeightsError::Safetensors {
            path: self.path.clone(),
            reason: e.to_string(),
        })
    }
}

fn add_safetensors<'a>(store: &mut RawStore<'a>, file: &'a MappedFile, parsed: &SafeTensors<'a>) {
    use safetensors::Dtype as S;
    for (name, view) in parsed.iter() {
        let dtype = match view.dtype() {
            S::F64 => RawDType::F64,
            S::F32 => RawDType::F32,
            S::F16 => RawDType::F16,
            S::BF16 => RawDType::BF16,
            S::I64 => RawDType::Other("int64"),
            S::I32 => RawDType::Other("int32"),
            S::I16 => RawDType::Other("int16"),
            S::I8 => RawDType::Other("int8"),
            S::U8 => RawDType::Other("uint8"),
            S::BOOL => RawDType::Other("bool"),
            _ => RawDType::Other("an unsupported type"),
        };
        store.insert(
            name.to_string(),
            RawTensor {
                shape: view.shape().to_vec(),
                dtype,
                data: Cow::Borrowed(view.data()),
                file: &file.path,
            },
        );
    }
}

/// The tensors of a PyTorch archive (read by clip-es-pickle), named as in `state_dict()`.
struct TorchFile {
    path: PathBuf,
    tensors: Vec<(String, clip_es_pickle::TorchTensor)>,
    torchscript: bool,
}

impl TorchFile {
    fn open(path: &Path, container: &Container) -> Result<Self, WeightsError> {
        let tensors = clip_es_pickle::read_torch_archive(path)?;
        let torchscript = matches!(container, Container::TorchZip) && is_torchscript(path)?;
        Ok(TorchFile {
            path: path.to_path_buf(),
            tensors,
            torchscript,
        })
    }

    fn store(&self) -> RawStore<'_> {
        use clip_es_pickle::DType as P;
        let mut store = RawStore::new();
        for (name, t) in &self.tensors {
            let dtype = match t.dtype {
                P::F64 => RawDType::F64,
                P::F32 => RawDType::F32,
                P::F16 => RawDType::F16,
                P::BF16 => RawDType::BF16,
                other => RawDType::Other(other.name()),
            };
            store.insert(
                name.clone(),
                RawTensor {
                    shape: t.shape.clone(),
                    dtype,
                    data: t.contiguous_le_bytes(),
                    file: &self.path,
                },
            );
        }
        store
    }
}

/// A `torch.jit.save` archive holds the module's code (`<root>/code/`) and `constants.pkl`
/// next to `data.pkl`; a `torch.save` archive holds only data.
fn is_torchscript(path: &Path) -> Result<bool, WeightsError> {
    let file = File::open(path).map_err(|e| io_error(path, e))?;
    let zip =
        zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(|e| WeightsError::Torch {
            path: path.to_path_buf(),
            reason: format!("not a valid zip archive: {e}"),
        })?;
    let found = zip.file_names().flatten().any(|n| {
        let n: &str = &n;
        n.ends_with("/constants.pkl") || n.contains("/code/")
    });
    Ok(found)
}

fn read_config_json(path: &Path) -> Result<ClipConfig, WeightsError> {
    let text = std::fs::read_to_string(path).map_err(|e| io_error(path, e))?;
    ClipConfig::from_hf_json(&text).map_err(|source| WeightsError::Config {
        path: path.to_path_buf(),
        source,
    })
}

/// The weight files of an HF directory: `model.safetensors`, the shards listed by
/// `model.safetensors.index.json`, or else `pytorch_model.bin`.
fn hf_weight_files(dir: &Path) -> Result<Vec<PathBuf>, WeightsError> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text = std::fs::read_to_string(&index).map_err(|e| io_error(&index, e))?;
        let bad = |reason: String| WeightsError::MissingFile {
            path: index.clone(),
            reason,
        };
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| bad("no `weight_map` object".into()))?;
        let mut files: Vec<PathBuf> = Vec::new();
        for v in map.values() {
            let f = v
                .as_str()
                .filter(|f| !f.contains(['/', '\\']))
                .ok_or_else(|| bad(format!("weight_map entry {v} is not a file name")))?;
            let p = dir.join(f);
            if !files.contains(&p) {
                files.push(p);
            }
        }
        if files.is_empty() {
            return Err(bad("empty `weight_map`".into()));
        }
        return Ok(files);
    }
    let bin = dir.join("pytorch_model.bin");
    if bin.is_file() {
        return Ok(vec![bin]);
    }
    Err(WeightsError::MissingFile {
        path: dir.to_path_buf(),
        reason: "no model.safetensors (nor pytorch_model.bin) in this model directory".into(),
    })
}

fn load_hf_directory(dir: &Path) -> Result<ClipWeights, WeightsError> {
    let config_path = dir.join("config.json");
    if !config_path.is_file() {
        return Err(WeightsError::MissingFile {
            path: dir.to_path_buf(),
            reason: "no config.json in this model directory".into(),
        });
    }
    let config = read_config_json(&config_path)?;
    let paths = hf_weight_files(dir)?;
    let weights_path = match paths.as_slice() {
        [single] => single.clone(),
        _ => dir.to_path_buf(),
    };
    let formats = Formats {
        openai: WeightsFormat::HfDirectory,
        hf: WeightsFormat::HfDirectory,
    };
    if paths.len() == 1 && paths[0].file_name() == Some("pytorch_model.bin".as_ref()) {
        let container = sniff(&read_magic(&paths[0])?);
        let torch = TorchFile::open(&paths[0], &container)?;
        return finish(torch.store(), &weights_path, dir, Some(config), formats);
    }
    let files = paths
        .iter()
        .map(|p| MappedFile::open(p))
        .collect::<Result<Vec<_>, _>>()?;
    let parsed = files
        .iter()
        .map(MappedFile::parse)
        .collect::<Result<Vec<_>, _>>()?;
    let mut store = RawStore::new();
    for (file, st) in files.iter().zip(&parsed) {
        add_safetensors(&mut store, file, st);
    }
    finish(store, &weights_path, dir, Some(config), formats)
}

/// Loads a single weights file (safetensors or PyTorch).
fn load_file(path: &Path) -> Result<ClipWeights, WeightsError> {
    let container = sniff(&read_magic(path)?);
    match container {
        Container::Safetensors => {
            let file = MappedFile::open(path)?;
            let parsed = file.parse()?;
            let mut store = RawStore::new();
            add_safetensors(&mut store, &file, &parsed);
            let formats = Formats {
                openai: WeightsFormat::OpenAiSafetensors,
                hf: WeightsFormat::HfSafetensors,
            };
            finish(store, path, path, None, formats)
        }
        Container::TorchZip | Container::LegacyPickle => {
            let torch = TorchFile::open(path, &container)?;
            let openai = if torch.torchscript {
                WeightsFormat::TorchScript
            } else {
                WeightsFormat::OpenAiStateDict
            };
            let formats = Formats {
                openai,
                hf: WeightsFormat::HfPytorch,
            };
            finish(torch.store(), path, path, None, formats)
        }
        Container::Unknown => Err(WeightsError::UnknownFormat {
            path: path.to_path_buf(),
            reason: "neither a safetensors file, a PyTorch .pt archive nor a directory".into(),
        }),
    }
}

/// The format reported for each naming of a container.
struct Formats {
    openai: WeightsFormat,
    hf: WeightsFormat,
}

/// Works out the naming, the sizes (from `config`, a config.json beside a lone HF-named file,
/// or OpenAI shapes) and converts. `weights_file` names missing tensors; `source_path` is
/// the path the caller gave.
fn finish(
    store: RawStore<'_>,
    weights_file: &Path,
    source_path: &Path,
    config: Option<ClipConfig>,
    formats: Formats,
) -> Result<ClipWeights, WeightsError> {
    let store = store.strip_module_prefix();
    match detect_naming(&store) {
        Some(Naming::OpenAi) => finish_openai(store, weights_file, source_path, formats.openai),
        Some(Naming::HuggingFace) => {
            let config = match config {
                Some(c) => c,
                None => {
                    let config_path = weights_file.with_file_name("config.json");
                    if !config_path.is_file() {
                        return Err(WeightsError::MissingFile {
                            path: weights_file.to_path_buf(),
                            reason: format!(
                                "Hugging Face tensor names but no config.json beside it (looked for {})",
                                config_path.display()
                            ),
                        });
                    }
                    read_config_json(&config_path)?
                }
            };
            let source = WeightsSource {
                path: source_path.to_path_buf(),
                format: formats.hf,
                stored_dtype: store.stored_dtype("vision_model.embeddings.patch_embedding.weight"),
            };
            convert(&store, Naming::HuggingFace, config, source, weights_file)
        }
        None => Err(not_clip(weights_file, &store)),
    }
}

fn not_clip(path: &Path, store: &RawStore<'_>) -> WeightsError {
    let first: Vec<&str> = store.tensors.keys().take(3).map(String::as_str).collect();
    WeightsError::NotClip {
        path: path.to_path_buf(),
        reason: if first.is_empty() {
            "no tensors".into()
        } else {
            format!("no CLIP tensor names; found e.g. {}", first.join(", "))
        },
    }
}

/// OpenAI-named tensors: sizes from the shapes, then conversion.
fn finish_openai(
    store: RawStore<'_>,
    weights_file: &Path,
    source_path: &Path,
    format: WeightsFormat,
) -> Result<ClipWeights, WeightsError> {
    let path = weights_file;
    let config = ClipConfig::from_openai_shapes(&store.shapes()).map_err(|e| match e {
        ConfigError::MissingTensor(name) => WeightsError::MissingTensor {
            path: path.to_path_buf(),
            name,
        },
        ConfigError::Invalid(reason) if !store.contains("visual.proj") => WeightsError::NotClip {
            path: path.to_path_buf(),
            reason,
        },
        other => WeightsError::Config {
            path: path.to_path_buf(),
            source: other,
        },
    })?;
    let source = WeightsSource {
        path: source_path.to_path_buf(),
        format,
        stored_dtype: store.stored_dtype("visual.conv1.weight"),
    };
    convert(&store, Naming::OpenAi, config, source, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_and_bf16_decode_exactly() {
        let values = [0.0f32, 1.0, -2.5, 65504.0, 6.1035156e-5];
        let f16: Vec<u8> = values
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_bits().to_le_bytes())
            .collect();
        assert_eq!(decode_f32(&f16, RawDType::F16), values);
        let bf16: Vec<u8> = [1.0f32, -2.5, 3.0e38]
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_bits().to_le_bytes())
            .collect();
        let back = decode_f32(&bf16, RawDType::BF16);
        assert_eq!(&back[..2], &[1.0, -2.5]);
        assert_eq!(back[2], half::bf16::from_f32(3.0e38).to_f32());
    }

    #[test]
    fn hf_recipes() {
        match hf_recipe("visual.transformer.resblocks.3.attn.in_proj_bias") {
            Recipe::StackRows(p) => {
                assert_eq!(p[1], "vision_model.encoder.layers.3.self_attn.k_proj.bias")
            }
            _ => panic!("expected stacked rows"),
        }
        match hf_recipe("transformer.resblocks.11.mlp.c_proj.weight") {
            Recipe::Copy(s) => assert_eq!(s, "text_model.encoder.layers.11.mlp.fc2.weight"),
            _ => panic!("expected a copy"),
        }
        match hf_recipe("visual.proj") {
            Recipe::Transpose(s) => assert_eq!(s, "visual_projection.weight"),
            _ => panic!("expected a transpose"),
        }
    }

    #[test]
    fn sniffing() {
        assert!(matches!(sniff(b"PK\x03\x04rest"), Container::TorchZip));
        assert!(matches!(
            sniff(b"\x10\0\0\0\0\0\0\0{\"a\""),
            Container::Safetensors
        ));
        assert!(matches!(
            sniff(b"\x80\x02\x8a\x0a"),
            Container::LegacyPickle
        ));
        assert!(matches!(sniff(b"hello world"), Container::Unknown));
        assert!(matches!(sniff(b""), Container::Unknown));
    }
}
