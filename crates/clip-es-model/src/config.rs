//! CLIP ViT model sizes: presets, inference from an OpenAI state dict's tensor shapes (as
//! `build_model` in clip/model.py does) and reading a Hugging Face `config.json`
//! (transformers' `CLIPConfig`). The tensor names and shapes every size implies are listed by
//! [`ClipConfig::expected_tensors`], in OpenAI's naming (the reference's `clip/model.py`; docs/algorithm.md, "Text side" and
//! "Image side").

use std::collections::BTreeMap;

use serde_json::Value;

/// Sizes of the image tower (a ViT).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VisionConfig {
    /// Token width D.
    pub width: usize,
    pub layers: usize,
    pub heads: usize,
    pub patch_size: usize,
    /// Side of the pretrained square position grid (14 for ViT-B/16 at 224 pixels).
    pub grid: usize,
    /// Pretrained input side, `patch_size * grid`.
    pub image_size: usize,
}

/// Sizes of the (causal) text transformer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextConfig {
    pub width: usize,
    pub layers: usize,
    pub heads: usize,
    pub context_length: usize,
    pub vocab_size: usize,
}

/// A CLIP ViT model's sizes. The MLP width is always 4 x the token width (as in all OpenAI
/// CLIP ViTs); other ratios are rejected by validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipConfig {
    pub vision: VisionConfig,
    pub text: TextConfig,
    /// Width of the joint image-text embedding.
    pub embed_dim: usize,
    pub layer_norm_eps: f64,
}

/// Why sizes could not be worked out; the caller adds the file name.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("missing tensor `{0}`")]
    MissingTensor(String),
    #[error("{0}")]
    Invalid(String),
    #[error("invalid JSON: {0}")]
    Json(String),
}

/// Heads of an OpenAI CLIP tower: its width / 64, as clip/model.py assumes.
const OPENAI_HEAD_DIM: usize = 64;

impl ClipConfig {
    /// OpenAI ViT-B/32 (224 pixels).
    pub fn vit_b_32() -> Self {
        Self::openai(768, 12, 32, 7, 512, 12, 512)
    }

    /// OpenAI ViT-B/16 (224 pixels), the model of CLIP-ES.
    pub fn vit_b_16() -> Self {
        Self::openai(768, 12, 16, 14, 512, 12, 512)
    }

    /// OpenAI ViT-L/14 (224 pixels).
    pub fn vit_l_14() -> Self {
        Self::openai(1024, 24, 14, 16, 768, 12, 768)
    }

    fn openai(
        vision_width: usize,
        vision_layers: usize,
        patch_size: usize,
        grid: usize,
        text_width: usize,
        text_layers: usize,
        embed_dim: usize,
    ) -> Self {
        ClipConfig {
            vision: VisionConfig {
                width: vision_width,
                layers: vision_layers,
                heads: vision_width / OPENAI_HEAD_DIM,
                patch_size,
                grid,
                image_size: patch_size * grid,
            },
            text: TextConfig {
                width: text_width,
                layers: text_layers,
                heads: text_width / OPENAI_HEAD_DIM,
                context_length: 77,
                vocab_size: 49408,
            },
            embed_dim,
            layer_norm_eps: 1e-5,
        }
    }

    /// Sizes from the tensor shapes of an OpenAI-named ViT state dict, as clip/model.py's
    /// `build_model` infers them (heads = width / 64). `shapes` maps names to shapes.
    pub fn from_openai_shapes(shapes: &BTreeMap<String, Vec<usize>>) -> Result<Self, ConfigError> {
        if !shapes.contains_key("visual.proj") {
            if shapes.keys().any(|k| k.starts_with("visual.layer1.")) {
                return Err(ConfigError::Invalid(
                    "a ResNet CLIP (visual.layer1...); only ViT CLIP models are supported".into(),
                ));
            }
            return Err(ConfigError::Invalid(
                "not a CLIP ViT checkpoint (no tensor `visual.proj`)".into(),
            ));
        }
        let shape = |name: &str, rank: usize| -> Result<&[usize], ConfigError> {
            let s = shapes
                .get(name)
                .ok_or_else(|| ConfigError::MissingTensor(name.to_string()))?;
            if s.len() != rank {
                return Err(ConfigError::Invalid(format!(
                    "tensor `{name}` has shape {s:?}, expected {rank} dimensions"
                )));
            }
            Ok(s)
        };
        let conv = shape("visual.conv1.weight", 4)?;
        let (vision_width, patch_size) = (conv[0], conv[3]);
        if conv[1] != 3 || conv[2] != conv[3] {
            return Err(ConfigError::Invalid(format!(
                "tensor `visual.conv1.weight` has shape {conv:?}, expected [width, 3, patch, patch]"
            )));
        }
        let positions = shape("visual.positional_embedding", 2)?[0];
        let grid = square_side(positions.saturating_sub(1)).ok_or_else(|| {
            ConfigError::Invalid(format!(
                "tensor `visual.positional_embedding` has {positions} rows, not 1 + a square grid"
            ))
        })?;
        let text_width = shape("ln_final.weight", 1)?[0];
        let config = ClipConfig {
            vision: VisionConfig {
                width: vision_width,
                layers: count_blocks(shapes, "visual.transformer.resblocks."),
                heads: vision_width / OPENAI_HEAD_DIM,
                patch_size,
                grid,
                image_size: patch_size * grid,
            },
            text: TextConfig {
                width: text_width,
                layers: count_blocks(shapes, "transformer.resblocks."),
                heads: text_width / OPENAI_HEAD_DIM,
                context_length: shape("positional_embedding", 2)?[0],
                vocab_size: shape("token_embedding.weight", 2)?[0],
            },
            embed_dim: shape("text_projection", 2)?[1],
            layer_norm_eps: 1e-5,
        };
        config.validate()?;
        Ok(config)
    }

    /// Sizes from a Hugging Face `config.json` (a `CLIPModel` config). Missing keys take
    /// transformers' defaults; `text_config_dict` / `vision_config_dict` (older files) take
    /// precedence over `text_config` / `vision_config`, as in transformers.
    pub fn from_hf_json(json: &str) -> Result<Self, ConfigError> {
        let root: Value =
            serde_json::from_str(json).map_err(|e| ConfigError::Json(e.to_string()))?;
        if !root.is_object() {
            return Err(ConfigError::Json("the top level is not an object".into()));
        }
        if let Some(model_type) = root.get("model_type").and_then(Value::as_str) {
            if model_type != "clip" {
                return Err(ConfigError::Invalid(format!(
                    "model_type is \"{model_type}\", expected \"clip\""
                )));
            }
        }
        let section = |name: &str| -> Result<Section<'_>, ConfigError> {
            let pick = |key: String| match root.get(&key) {
                None | Some(Value::Null) => Ok(None),
                Some(v @ Value::Object(_)) => Ok(Some(v)),
                Some(_) => Err(ConfigError::Invalid(format!("`{key}` is not an object"))),
            };
            Ok(Section {
                name: name.to_string(),
                primary: pick(format!("{name}_dict"))?,
                fallback: pick(name.to_string())?,
            })
        };
        let text = section("text_config")?;
        let vision = section("vision_config")?;

        let vision_width = vision.usize("hidden_size", 768)?;
        let patch_size = vision.usize("patch_size", 32)?;
        let image_size = vision.usize("image_size", 224)?;
        if patch_size == 0 || image_size % patch_size != 0 {
            return Err(ConfigError::Invalid(format!(
                "vision_config: image_size {image_size} is not a multiple of patch_size {patch_size}"
            )));
        }
        let text_width = text.usize("hidden_size", 512)?;
        for (sec, width) in [(&vision, vision_width), (&text, text_width)] {
            let mlp = sec.usize("intermediate_size", 4 * width)?;
            if mlp != 4 * width {
                return Err(ConfigError::Invalid(format!(
                    "{}: intermediate_size {mlp} is not 4 x hidden_size {width}",
                    sec.name
                )));
            }
            let act = sec.str("hidden_act", "quick_gelu")?;
            if act != "quick_gelu" {
                return Err(ConfigError::Invalid(format!(
                    "{}: hidden_act \"{act}\" (OpenAI CLIP uses quick_gelu)",
                    sec.name
                )));
            }
        }
        let embed_dim = match root.get("projection_dim") {
            None | Some(Value::Null) => 512,
            Some(v) => as_usize(v).ok_or_else(|| {
                ConfigError::Invalid(format!("projection_dim is not a non-negative integer: {v}"))
            })?,
        };
        let eps_v = vision.f64("layer_norm_eps", 1e-5)?;
        let eps_t = text.f64("layer_norm_eps", 1e-5)?;
        if eps_v != eps_t {
            return Err(ConfigError::Invalid(format!(
                "layer_norm_eps differs between the towers ({eps_v} and {eps_t})"
            )));
        }
        let config = ClipConfig {
            vision: VisionConfig {
                width: vision_width,
                layers: vision.usize("num_hidden_layers", 12)?,
                heads: vision.usize("num_attention_heads", 12)?,
                patch_size,
                grid: image_size / patch_size,
                image_size,
            },
            text: TextConfig {
                width: text_width,
                layers: text.usize("num_hidden_layers", 12)?,
                heads: text.usize("num_attention_heads", 8)?,
                context_length: text.usize("max_position_embeddings", 77)?,
                vocab_size: text.usize("vocab_size", 49408)?,
            },
            embed_dim,
            layer_norm_eps: eps_v,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks that the sizes describe a buildable model (heads divide widths, nothing zero).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let v = &self.vision;
        let t = &self.text;
        let sizes = [
            ("vision width", v.width),
            ("vision layers", v.layers),
            ("vision heads", v.heads),
            ("patch size", v.patch_size),
            ("position grid", v.grid),
            ("text width", t.width),
            ("text layers", t.layers),
            ("text heads", t.heads),
            ("context length", t.context_length),
            ("vocabulary size", t.vocab_size),
            ("embedding width", self.embed_dim),
        ];
        if let Some((what, _)) = sizes.iter().find(|(_, n)| *n == 0) {
            return Err(ConfigError::Invalid(format!("{what} is 0")));
        }
        for (tower, width, heads) in [("vision", v.width, v.heads), ("text", t.width, t.heads)] {
            if width % heads != 0 {
                return Err(ConfigError::Invalid(format!(
                    "{tower} width {width} is not divisible by {heads} heads"
                )));
            }
        }
        if v.image_size != v.patch_size * v.grid {
            return Err(ConfigError::Invalid(format!(
                "image size {} is not patch size {} x grid {}",
                v.image_size, v.patch_size, v.grid
            )));
        }
        if !(self.layer_norm_eps > 0.0 && self.layer_norm_eps.is_finite()) {
            return Err(ConfigError::Invalid(format!(
                "layer_norm_eps {} is not a positive number",
                self.layer_norm_eps
            )));
        }
        Ok(())
    }

    /// Every tensor of the model in OpenAI's naming, with its shape, in a fixed order
    /// (vision tower, then text tower).
    pub fn expected_tensors(&self) -> Vec<(String, Vec<usize>)> {
        let v = &self.vision;
        let t = &self.text;
        let mut out: Vec<(String, Vec<usize>)> = Vec::new();
        let mut push = |name: String, shape: &[usize]| out.push((name, shape.to_vec()));
        push(
            "visual.conv1.weight".into(),
            &[v.width, 3, v.patch_size, v.patch_size],
        );
        push("visual.class_embedding".into(), &[v.width]);
        push(
            "visual.positional_embedding".into(),
            &[v.grid * v.grid + 1, v.width],
        );
        push("visual.ln_pre.weight".into(), &[v.width]);
        push("visual.ln_pre.bias".into(), &[v.width]);
        for i in 0..v.layers {
            for (name, shape) in block_tensors(v.width) {
                push(format!("visual.transformer.resblocks.{i}.{name}"), &shape);
            }
        }
        push("visual.ln_post.weight".into(), &[v.width]);
        push("visual.ln_post.bias".into(), &[v.width]);
        push("visual.proj".into(), &[v.width, self.embed_dim]);
        push("token_embedding.weight".into(), &[t.vocab_size, t.width]);
        push("positional_embedding".into(), &[t.context_length, t.width]);
        for i in 0..t.layers {
            for (name, shape) in block_tensors(t.width) {
                push(format!("transformer.resblocks.{i}.{name}"), &shape);
            }
        }
        push("ln_final.weight".into(), &[t.width]);
        push("ln_final.bias".into(), &[t.width]);
        push("text_projection".into(), &[t.width, self.embed_dim]);
        push("logit_scale".into(), &[]);
        out
    }
}

/// The tensors of one residual attention block (names after `resblocks.{i}.`).
pub(crate) fn block_tensors(width: usize) -> [(&'static str, Vec<usize>); 12] {
    let d = width;
    [
        ("attn.in_proj_weight", vec![3 * d, d]),
        ("attn.in_proj_bias", vec![3 * d]),
        ("attn.out_proj.weight", vec![d, d]),
        ("attn.out_proj.bias", vec![d]),
        ("ln_1.weight", vec![d]),
        ("ln_1.bias", vec![d]),
        ("mlp.c_fc.weight", vec![4 * d, d]),
        ("mlp.c_fc.bias", vec![4 * d]),
        ("mlp.c_proj.weight", vec![d, 4 * d]),
        ("mlp.c_proj.bias", vec![d]),
        ("ln_2.weight", vec![d]),
        ("ln_2.bias", vec![d]),
    ]
}

/// Number of distinct block indices under `prefix` (e.g. `transformer.resblocks.`).
fn count_blocks(shapes: &BTreeMap<String, Vec<usize>>, prefix: &str) -> usize {
    let mut seen = std::collections::BTreeSet::new();
    for name in shapes.keys() {
        if let Some(rest) = name.strip_prefix(prefix) {
            if let Some(index) = rest.split('.').next() {
                seen.insert(index.to_string());
            }
        }
    }
    seen.len()
}

fn square_side(n: usize) -> Option<usize> {
    let side = (n as f64).sqrt().round() as usize;
    (side > 0 && side * side == n).then_some(side)
}

fn as_usize(v: &Value) -> Option<usize> {
    v.as_u64().and_then(|n| usize::try_from(n).ok())
}

/// One tower's section of an HF config: `{name}_dict` first, then `{name}`, then the default.
struct Section<'a> {
    name: String,
    primary: Option<&'a Value>,
    fallback: Option<&'a Value>,
}

impl Section<'_> {
    fn lookup(&self, key: &str) -> Option<&Value> {
        [self.primary, self.fallback]
            .into_iter()
            .flatten()
            .filter_map(|s| s.get(key))
            .find(|v| !v.is_null())
    }

    fn usize(&self, key: &str, default: usize) -> Result<usize, ConfigError> {
        match self.lookup(key) {
            None => Ok(default),
            Some(v) => as_usize(v).ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "{}.{key} is not a non-negative integer: {v}",
                    self.name
                ))
            }),
        }
    }

    fn f64(&self, key: &str, default: f64) -> Result<f64, ConfigError> {
        match self.lookup(key) {
            None => Ok(default),
            Some(v) => v.as_f64().ok_or_else(|| {
                ConfigError::Invalid(format!("{}.{key} is not a number: {v}", self.name))
            }),
        }
    }

    fn str(&self, key: &str, default: &str) -> Result<String, ConfigError> {
        match self.lookup(key) {
            None => Ok(default.to_string()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(v) => Err(ConfigError::Invalid(format!(
                "{}.{key} is not a string: {v}",
                self.name
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shapes_of(config: &ClipConfig) -> BTreeMap<String, Vec<usize>> {
        config.expected_tensors().into_iter().collect()
    }

    #[test]
    fn presets_round_trip_through_shape_inference() {
        for preset in [
            ClipConfig::vit_b_32(),
            ClipConfig::vit_b_16(),
            ClipConfig::vit_l_14(),
        ] {
            let inferred = ClipConfig::from_openai_shapes(&shapes_of(&preset)).unwrap();
            assert_eq!(inferred, preset);
        }
    }

    #[test]
    fn vit_b_16_sizes() {
        let c = ClipConfig::vit_b_16();
        assert_eq!(
            (c.vision.width, c.vision.heads, c.vision.layers),
            (768, 12, 12)
        );
        assert_eq!((c.vision.grid, c.vision.image_size), (14, 224));
        assert_eq!(
            (c.text.width, c.text.heads, c.text.vocab_size),
            (512, 8, 49408)
        );
        // 86 M vision + 63 M text parameters, the published ViT-B/16 count (149.6 M)
        let params: usize = c
            .expected_tensors()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum();
        assert_eq!(params, 149_620_737);
    }

    #[test]
    fn resnet_and_foreign_state_dicts_are_rejected() {
        let mut resnet = BTreeMap::new();
        resnet.insert(
            "visual.layer1.0.conv1.weight".to_string(),
            vec![64, 64, 1, 1],
        );
        let e = ClipConfig::from_openai_shapes(&resnet).unwrap_err();
        assert!(e.to_string().contains("ResNet"), "{e}");
        let mut other = BTreeMap::new();
        other.insert("encoder.weight".to_string(), vec![3, 3]);
        let e = ClipConfig::from_openai_shapes(&other).unwrap_err();
        assert!(e.to_string().contains("visual.proj"), "{e}");
    }

    #[test]
    fn odd_position_grid_is_rejected() {
        let mut s = shapes_of(&ClipConfig::vit_b_16());
        s.insert("visual.positional_embedding".into(), vec![190, 768]);
        let e = ClipConfig::from_openai_shapes(&s).unwrap_err();
        assert!(e.to_string().contains("square"), "{e}");
    }

    #[test]
    fn hf_json_defaults_and_dict_precedence() {
        let json = r#"{"model_type": "clip", "projection_dim": 512,
            "text_config": {"hidden_size": 1, "num_attention_heads": 8},
            "text_config_dict": {"hidden_size": 512, "intermediate_size": 2048},
            "vision_config": {"hidden_size": 768, "intermediate_size": 3072,
                              "num_attention_heads": 12, "patch_size": 16}}"#;
        assert_eq!(
            ClipConfig::from_hf_json(json).unwrap(),
            ClipConfig::vit_b_16()
        );
    }

    #[test]
    fn hf_json_as_transformers_writes_it() {
        // CLIPConfig(...).to_json_string() (transformers 5) for ViT-B/16 sizes, plus the
        // `*_config_dict` keys older files such as openai/clip-vit-base-patch16's carry
        let json = r#"{
          "architectures": ["CLIPModel"], "initializer_factor": 1.0,
          "logit_scale_init_value": 2.6592, "model_type": "clip", "projection_dim": 512,
          "text_config": {"attention_dropout": 0.0, "bos_token_id": 0, "eos_token_id": 2,
            "hidden_act": "quick_gelu", "hidden_size": 512, "initializer_factor": 1.0,
            "initializer_range": 0.02, "intermediate_size": 2048, "layer_norm_eps": 1e-05,
            "max_position_embeddings": 77, "model_type": "clip_text_model",
            "num_attention_heads": 8, "num_hidden_layers": 12, "pad_token_id": 1,
            "projection_dim": 512, "vocab_size": 49408},
          "text_config_dict": null,
          "torch_dtype": "float32", "transformers_version": "5.24.0",
          "vision_config": {"attention_dropout": 0.0, "hidden_act": "quick_gelu",
            "hidden_size": 768, "image_size": 224, "initializer_factor": 1.0,
            "initializer_range": 0.02, "intermediate_size": 3072, "layer_norm_eps": 1e-05,
            "model_type": "clip_vision_model", "num_attention_heads": 12, "num_channels": 3,
            "num_hidden_layers": 12, "patch_size": 16, "projection_dim": 512},
          "vision_config_dict": {"hidden_size": 768, "intermediate_size": 3072,
            "num_attention_heads": 12, "num_hidden_layers": 12, "patch_size": 16}
        }"#;
        assert_eq!(
            ClipConfig::from_hf_json(json).unwrap(),
            ClipConfig::vit_b_16()
        );
    }

    #[test]
    fn hf_json_errors() {
        let cases = [
            ("{", "invalid JSON"),
            ("[1]", "not an object"),
            (r#"{"model_type": "siglip"}"#, "siglip"),
            (r#"{"vision_config": {"hidden_act": "gelu"}}"#, "hidden_act"),
            (
                r#"{"vision_config": {"hidden_size": 100, "num_attention_heads": 3, "intermediate_size": 400}}"#,
                "divisible",
            ),
            (
                r#"{"vision_config": {"image_size": 100, "patch_size": 16}}"#,
                "multiple",
            ),
            (
                r#"{"text_config": {"num_hidden_layers": -1}}"#,
                "num_hidden_layers",
            ),
            (r#"{"text_config": "x"}"#, "text_config"),
        ];
        for (json, needle) in cases {
            let e = ClipConfig::from_hf_json(json).unwrap_err().to_string();
            assert!(e.contains(needle), "{json}: {e}");
        }
    }
}
