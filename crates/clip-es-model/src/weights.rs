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
//! The containers (safetensors, shards, PyTorch archives) are read by [`crate::container`];
//! this module knows CLIP: its key naming, as tables (`HF_NAMES` and the block tables), and
//! the sizes. HF names are mapped to OpenAI's: q/k/v projections concatenated (rows q, k, v) into
//! `attn.in_proj_weight` / `attn.in_proj_bias`, `visual_projection.weight` and
//! `text_projection.weight` transposed into `visual.proj` / `text_projection`, and
//! `pre_layrnorm`, `post_layernorm`, `final_layer_norm`, `layer_norm1/2`, `mlp.fc1/2` renamed.
//! Every tensor the configuration implies must be present with its shape; anything else in the
//! file (HF `position_ids`, OpenAI's `input_resolution`, ...) is ignored.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::config::{ClipConfig, ConfigError};
use crate::container::{
    io_error, read_magic, sniff, Checkpoint, StoredDType, TensorStore, TorchFile,
};
use crate::tensors::{ModelError, Tensor, TensorSource};

/// Re-exported here, where it was defined before it moved to its own module.
pub use crate::error::WeightsError;

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
    pub stored_dtype: StoredDType,
}

/// CLIP ViT weights: float32 host tensors under OpenAI's names, and the model's sizes.
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

    /// Builds weights from tensors already named as OpenAI does (e.g. in tests), checked
    /// against `config` and moved in (not copied).
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
        let mut tensors = tensors;
        let mut out = HashMap::new();
        let mut names = Vec::new();
        for (name, shape) in config.expected_tensors() {
            let t = tensors
                .remove(&name)
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

    /// The tensors, moved out.
    pub fn into_tensors(self) -> HashMap<String, Tensor> {
        self.tensors
    }
}

impl TensorSource for ClipWeights {
    fn tensor_f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, ModelError> {
        self.tensors().tensor_f32(name, shape)
    }

    fn scalar_f32(&self, name: &str) -> Result<f32, ModelError> {
        self.tensors().scalar_f32(name)
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

/// How a tensor named in [`HF_NAMES`] is stored on the Hugging Face side.
#[derive(Clone, Copy)]
enum Layout {
    Same,
    Transposed,
}

/// OpenAI name -> Hugging Face name of the tensors outside the residual blocks.
const HF_NAMES: &[(&str, &str, Layout)] = &[
    (
        "visual.conv1.weight",
        "vision_model.embeddings.patch_embedding.weight",
        Layout::Same,
    ),
    (
        "visual.class_embedding",
        "vision_model.embeddings.class_embedding",
        Layout::Same,
    ),
    (
        "visual.positional_embedding",
        "vision_model.embeddings.position_embedding.weight",
        Layout::Same,
    ),
    (
        "visual.ln_pre.weight",
        "vision_model.pre_layrnorm.weight",
        Layout::Same,
    ),
    (
        "visual.ln_pre.bias",
        "vision_model.pre_layrnorm.bias",
        Layout::Same,
    ),
    (
        "visual.ln_post.weight",
        "vision_model.post_layernorm.weight",
        Layout::Same,
    ),
    (
        "visual.ln_post.bias",
        "vision_model.post_layernorm.bias",
        Layout::Same,
    ),
    (
        "visual.proj",
        "visual_projection.weight",
        Layout::Transposed,
    ),
    (
        "token_embedding.weight",
        "text_model.embeddings.token_embedding.weight",
        Layout::Same,
    ),
    (
        "positional_embedding",
        "text_model.embeddings.position_embedding.weight",
        Layout::Same,
    ),
    (
        "ln_final.weight",
        "text_model.final_layer_norm.weight",
        Layout::Same,
    ),
    (
        "ln_final.bias",
        "text_model.final_layer_norm.bias",
        Layout::Same,
    ),
    (
        "text_projection",
        "text_projection.weight",
        Layout::Transposed,
    ),
];

/// The residual blocks of each tower: OpenAI prefix -> Hugging Face tower (whose blocks are
/// `{tower}.encoder.layers.{i}`).
const HF_TOWERS: &[(&str, &str)] = &[
    ("visual.transformer.resblocks.", "vision_model"),
    ("transformer.resblocks.", "text_model"),
];

/// Modules inside a residual block: OpenAI -> Hugging Face.
const HF_BLOCK_MODULES: &[(&str, &str)] = &[
    ("attn.out_proj", "self_attn.out_proj"),
    ("ln_1", "layer_norm1"),
    ("ln_2", "layer_norm2"),
    ("mlp.c_fc", "mlp.fc1"),
    ("mlp.c_proj", "mlp.fc2"),
];

/// OpenAI's packed `attn.in_proj_{weight,bias}` is the rows of these HF projections stacked.
const HF_QKV: [&str; 3] = ["q_proj", "k_proj", "v_proj"];

fn detect_naming(store: &TensorStore<'_>) -> Option<Naming> {
    let names = || store.names();
    if names().any(|k| k.starts_with("visual.") || k == "token_embedding.weight") {
        Some(Naming::OpenAi)
    } else if names().any(|k| k.starts_with("vision_model.") || k.starts_with("text_model.")) {
        Some(Naming::HuggingFace)
    } else {
        None
    }
}

/// The HF source of an OpenAI-named tensor, from the tables above.
fn hf_recipe(openai: &str) -> Recipe {
    for (prefix, tower) in HF_TOWERS {
        if let Some(rest) = openai.strip_prefix(prefix) {
            let (index, rest) = rest.split_once('.').unwrap_or((rest, ""));
            let layer = format!("{tower}.encoder.layers.{index}");
            if let Some(kind) = rest.strip_prefix("attn.in_proj_") {
                return Recipe::StackRows(HF_QKV.map(|p| format!("{layer}.self_attn.{p}.{kind}")));
            }
            let (module, param) = rest.rsplit_once('.').unwrap_or((rest, ""));
            let hf_module = HF_BLOCK_MODULES
                .iter()
                .find(|(o, _)| *o == module)
                .map_or(module, |(_, h)| h);
            return Recipe::Copy(format!("{layer}.{hf_module}.{param}"));
        }
    }
    match HF_NAMES.iter().find(|(o, _, _)| *o == openai) {
        Some((_, hf, Layout::Same)) => Recipe::Copy(hf.to_string()),
        Some((_, hf, Layout::Transposed)) => Recipe::Transpose(hf.to_string()),
        None => Recipe::Copy(openai.to_string()),
    }
}

/// Converts a store to F32 tensors under OpenAI names, checking every expected tensor.
fn convert(
    store: &TensorStore<'_>,
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
        Ok(Tensor::new(shape.clone(), values))
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
    let checkpoint = Checkpoint::open_shards(&paths)?;
    finish(
        checkpoint.store()?,
        &weights_path,
        dir,
        Some(config),
        formats,
    )
}

/// Loads a single weights file (safetensors or PyTorch).
fn load_file(path: &Path) -> Result<ClipWeights, WeightsError> {
    let checkpoint = Checkpoint::open(path)?;
    let formats = match &checkpoint {
        Checkpoint::Safetensors(_) => Formats {
            openai: WeightsFormat::OpenAiSafetensors,
            hf: WeightsFormat::HfSafetensors,
        },
        Checkpoint::Torch(torch) => Formats {
            openai: if torch.is_torchscript() {
                WeightsFormat::TorchScript
            } else {
                WeightsFormat::OpenAiStateDict
            },
            hf: WeightsFormat::HfPytorch,
        },
    };
    finish(checkpoint.store()?, path, path, None, formats)
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
    store: TensorStore<'_>,
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

fn not_clip(path: &Path, store: &TensorStore<'_>) -> WeightsError {
    let first: Vec<&str> = store.names().take(3).collect();
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
    store: TensorStore<'_>,
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
        match hf_recipe("visual.transformer.resblocks.0.ln_1.bias") {
            Recipe::Copy(s) => assert_eq!(s, "vision_model.encoder.layers.0.layer_norm1.bias"),
            _ => panic!("expected a copy"),
        }
        match hf_recipe("visual.proj") {
            Recipe::Transpose(s) => assert_eq!(s, "visual_projection.weight"),
            _ => panic!("expected a transpose"),
        }
        match hf_recipe("logit_scale") {
            Recipe::Copy(s) => assert_eq!(s, "logit_scale"),
            _ => panic!("expected a copy"),
        }
    }
}
