//! Weights loading: the layouts of the tiny fixtures (tools/make_tiny_clip.py) load to identical
//! tensors and sizes; bad inputs give one-line errors naming the file.

mod common;

use std::collections::HashMap;
use std::path::Path;

use clip_es_model::container::write_safetensors;
use clip_es_model::{
    Checkpoint, ClipConfig, ClipWeights, StoredDType, Tensor, TextConfig, VisionConfig,
    WeightsFormat,
};
use common::{copy_dir, fixture, TempDir};

fn values(t: &Tensor) -> Vec<f32> {
    t.values().to_vec()
}

/// A tensor as written to a test file: element type, shape, little-endian bytes.
type Raw = (StoredDType, Vec<usize>, Vec<u8>);

fn f32_raw(shape: &[usize], v: &[f32]) -> Raw {
    (
        StoredDType::F32,
        shape.to_vec(),
        v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    )
}

fn zeros(shape: &[usize], dtype: StoredDType) -> Raw {
    let n: usize = shape.iter().product();
    let size = if dtype == StoredDType::I64 {
        8
    } else {
        dtype.size().unwrap()
    };
    (dtype, shape.to_vec(), vec![0u8; n * size])
}

/// Every tensor of a safetensors file, as stored.
fn load_raw(path: &Path) -> HashMap<String, Raw> {
    let checkpoint = Checkpoint::open(path).unwrap();
    let store = checkpoint.store().unwrap();
    store
        .iter()
        .map(|(k, t)| (k.to_string(), (t.dtype, t.shape.clone(), t.data.to_vec())))
        .collect()
}

fn raw_values(raw: &Raw) -> Vec<f32> {
    clip_es_model::container::decode_f32(&raw.2, raw.0)
}

fn save_raw(tensors: &HashMap<String, Raw>, path: &Path) {
    let list: Vec<(String, StoredDType, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(k, (d, s, b))| (k.clone(), *d, s.clone(), b.clone()))
        .collect();
    write_safetensors(path, &list).unwrap();
}

/// Float32 tensors as written to a test file.
fn raw_of(tensors: &HashMap<String, Tensor>) -> HashMap<String, Raw> {
    tensors
        .iter()
        .map(|(k, t)| (k.clone(), f32_raw(t.dims(), t.values())))
        .collect()
}

/// Every tensor of `a` equals (bit for bit) the tensor of the same name in `b`.
fn assert_same_weights(a: &ClipWeights, b: &ClipWeights) {
    assert_eq!(a.config(), b.config());
    let names_a: Vec<&str> = a.names().collect();
    let names_b: Vec<&str> = b.names().collect();
    assert_eq!(names_a, names_b);
    for name in names_a {
        let (ta, tb) = (a.get(name).unwrap(), b.get(name).unwrap());
        assert_eq!(ta.dims(), tb.dims(), "{name}");
        assert_eq!(values(ta), values(tb), "{name} differs");
    }
}

fn tiny_openai_config() -> ClipConfig {
    ClipConfig {
        vision: VisionConfig {
            width: 128,
            layers: 2,
            heads: 2,
            patch_size: 16,
            grid: 3,
            image_size: 48,
        },
        text: TextConfig {
            width: 64,
            layers: 2,
            heads: 1,
            context_length: 77,
            vocab_size: 600,
        },
        embed_dim: 32,
        layer_norm_eps: 1e-5,
    }
}

/// Writes `weights` as a float32 safetensors file with OpenAI names.
fn save_openai_safetensors(weights: &ClipWeights, path: &Path) {
    save_raw(&raw_of(weights.tensors()), path);
}

/// A float32 copy of an HF directory whose safetensors are float16.
fn hf_dir_as_f32(src: &Path, dst: &Path) {
    copy_dir(src, dst, &["model.safetensors"]);
    let tensors = load_raw(&src.join("model.safetensors"));
    let converted: HashMap<String, Raw> = tensors
        .into_iter()
        .map(|(k, t)| {
            let t = if t.0 == StoredDType::F16 {
                f32_raw(&t.1, &raw_values(&t))
            } else {
                t
            };
            (k, t)
        })
        .collect();
    save_raw(&converted, &dst.join("model.safetensors"));
}

fn error_of(path: &Path) -> String {
    match ClipWeights::load(path) {
        Ok(_) => panic!("{} loaded but should not", path.display()),
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "multi-line error: {msg}");
            eprintln!("error: {msg}"); // visible with --nocapture
            msg
        }
    }
}

#[test]
fn tiny_openai_hf_directory_loads() {
    let w = ClipWeights::load(fixture("tiny-openai-hf")).unwrap();
    assert_eq!(w.config(), &tiny_openai_config());
    assert_eq!(w.source().format, WeightsFormat::HfDirectory);
    assert_eq!(w.source().stored_dtype, StoredDType::F16);
    assert_eq!(
        w.names().len(),
        tiny_openai_config().expected_tensors().len()
    );
    assert_eq!(w.get("visual.proj").unwrap().dims(), &[128, 32]);
    assert_eq!(w.get("text_projection").unwrap().dims(), &[64, 32]);
    assert_eq!(w.get("logit_scale").unwrap().dims(), &[] as &[usize]);
    // ln(100) rounded to float16, as make_tiny_clip.py stores it
    let scale = w.get("logit_scale").unwrap().scalar().unwrap();
    assert_eq!(scale, half::f16::from_f32(100f32.ln()).to_f32());
    let e = w.get("visual.nope").unwrap_err().to_string();
    assert!(
        e.contains("visual.nope") && e.contains("tiny-openai-hf"),
        "{e}"
    );
}

#[test]
fn tiny_openai_three_layouts_agree() {
    let hf = ClipWeights::load(fixture("tiny-openai-hf")).unwrap();
    let state_dict = ClipWeights::load(fixture("tiny-openai.pt")).unwrap();
    assert_eq!(state_dict.source().format, WeightsFormat::OpenAiStateDict);
    assert_eq!(state_dict.source().stored_dtype, StoredDType::F32);
    let jit = ClipWeights::load(fixture("tiny-openai-jit.pt")).unwrap();
    assert_eq!(jit.source().format, WeightsFormat::TorchScript);
    assert_eq!(jit.source().stored_dtype, StoredDType::F16);
    // sizes inferred from the OpenAI shapes equal config.json's
    assert_eq!(state_dict.config(), &tiny_openai_config());
    assert_same_weights(&hf, &state_dict);
    assert_same_weights(&hf, &jit);
}

#[test]
fn truncated_and_corrupt_pytorch_files() {
    let tmp = TempDir::new("model-bad-pt");
    for name in ["tiny-openai.pt", "tiny-openai-jit.pt"] {
        let bytes = std::fs::read(fixture(name)).unwrap();
        for (tag, data) in [
            ("half", bytes[..bytes.len() / 2].to_vec()),
            ("tail", bytes[..bytes.len() - 100].to_vec()),
            ("head", bytes[..200].to_vec()),
        ] {
            let path = tmp.join(format!("{tag}-{name}"));
            std::fs::write(&path, &data).unwrap();
            let e = error_of(&path);
            assert!(e.contains(&format!("{tag}-{name}")), "{e}");
        }
        // bytes flipped inside the archive's first entry (the pickle)
        let mut corrupt = bytes.clone();
        for b in &mut corrupt[100..400] {
            *b ^= 0x5a;
        }
        let path = tmp.join(format!("corrupt-{name}"));
        std::fs::write(&path, &corrupt).unwrap();
        let e = error_of(&path);
        assert!(e.contains(&format!("corrupt-{name}")), "{e}");
    }
}

#[test]
fn hf_names_map_to_openai_names() {
    // the mapping checked against the HF file's own tensors
    let dir = fixture("tiny-deep-hf");
    let w = ClipWeights::load(&dir).unwrap();
    let raw = load_raw(&dir.join("model.safetensors"));
    let hf = |name: &str| raw_values(&raw[name]);
    let in_proj = w
        .get("visual.transformer.resblocks.9.attn.in_proj_weight")
        .unwrap();
    assert_eq!(in_proj.dims(), &[96, 32]);
    for (i, part) in ["q_proj", "k_proj", "v_proj"].iter().enumerate() {
        let rows = &in_proj.values()[32 * 32 * i..32 * 32 * (i + 1)];
        let src = hf(&format!(
            "vision_model.encoder.layers.9.self_attn.{part}.weight"
        ));
        assert_eq!(rows, &src[..], "{part}");
        let bias = w.get("transformer.resblocks.1.attn.in_proj_bias").unwrap();
        let src = hf(&format!(
            "text_model.encoder.layers.1.self_attn.{part}.bias"
        ));
        assert_eq!(
            &bias.values()[32 * i..32 * (i + 1)],
            &src[..],
            "{part} bias"
        );
    }
    let transpose = |name: &str, rows: usize, cols: usize| -> Vec<f32> {
        // the stored matrix is cols x rows; its transpose rows x cols
        let v = hf(name);
        let mut out = vec![0f32; v.len()];
        for c in 0..cols {
            for r in 0..rows {
                out[r * cols + c] = v[c * rows + r];
            }
        }
        out
    };
    let proj = w.get("visual.proj").unwrap();
    let (r, c) = (proj.dims()[0], proj.dims()[1]);
    assert_eq!(values(proj), transpose("visual_projection.weight", r, c));
    let text_proj = w.get("text_projection").unwrap();
    let (r, c) = (text_proj.dims()[0], text_proj.dims()[1]);
    assert_eq!(values(text_proj), transpose("text_projection.weight", r, c));
    let pairs = [
        ("visual.ln_pre.weight", "vision_model.pre_layrnorm.weight"),
        ("visual.ln_post.bias", "vision_model.post_layernorm.bias"),
        ("ln_final.weight", "text_model.final_layer_norm.weight"),
        (
            "visual.transformer.resblocks.4.ln_1.bias",
            "vision_model.encoder.layers.4.layer_norm1.bias",
        ),
        (
            "visual.transformer.resblocks.4.ln_2.weight",
            "vision_model.encoder.layers.4.layer_norm2.weight",
        ),
        (
            "transformer.resblocks.0.mlp.c_fc.weight",
            "text_model.encoder.layers.0.mlp.fc1.weight",
        ),
        (
            "transformer.resblocks.0.mlp.c_proj.bias",
            "text_model.encoder.layers.0.mlp.fc2.bias",
        ),
        (
            "transformer.resblocks.1.attn.out_proj.weight",
            "text_model.encoder.layers.1.self_attn.out_proj.weight",
        ),
        (
            "visual.conv1.weight",
            "vision_model.embeddings.patch_embedding.weight",
        ),
        (
            "visual.class_embedding",
            "vision_model.embeddings.class_embedding",
        ),
        (
            "visual.positional_embedding",
            "vision_model.embeddings.position_embedding.weight",
        ),
        (
            "token_embedding.weight",
            "text_model.embeddings.token_embedding.weight",
        ),
        (
            "positional_embedding",
            "text_model.embeddings.position_embedding.weight",
        ),
    ];
    for (openai, hf_name) in pairs {
        assert_eq!(values(w.get(openai).unwrap()), hf(hf_name), "{openai}");
    }
}

#[test]
fn tiny_deep_config_comes_from_config_json() {
    let w = ClipWeights::load(fixture("tiny-deep-hf")).unwrap();
    let c = w.config();
    // heads are not width / 64 here: only config.json knows them
    assert_eq!(
        (c.vision.width, c.vision.heads, c.vision.layers),
        (32, 4, 10)
    );
    assert_eq!(
        (c.vision.patch_size, c.vision.grid, c.vision.image_size),
        (16, 4, 64)
    );
    assert_eq!((c.text.width, c.text.heads, c.text.layers), (32, 4, 2));
    assert_eq!(
        (c.text.context_length, c.text.vocab_size, c.embed_dim),
        (77, 600, 16)
    );
}

#[test]
fn openai_named_safetensors_matches_hf_directory() {
    let hf = ClipWeights::load(fixture("tiny-openai-hf")).unwrap();
    let tmp = TempDir::new("model-openai-st");
    let file = tmp.join("tiny-openai.safetensors");
    save_openai_safetensors(&hf, &file);
    let st = ClipWeights::load(&file).unwrap();
    assert_eq!(st.source().format, WeightsFormat::OpenAiSafetensors);
    assert_eq!(st.source().stored_dtype, StoredDType::F32);
    // sizes inferred from shapes (heads = width / 64) agree with config.json
    assert_same_weights(&hf, &st);
}

#[test]
fn float32_and_float16_hf_directories_agree() {
    let tmp = TempDir::new("model-hf-f32");
    for name in ["tiny-openai-hf", "tiny-deep-hf"] {
        let dst = tmp.join(name);
        hf_dir_as_f32(&fixture(name), &dst);
        let f32_weights = ClipWeights::load(&dst).unwrap();
        assert_eq!(f32_weights.source().stored_dtype, StoredDType::F32);
        assert_same_weights(&ClipWeights::load(fixture(name)).unwrap(), &f32_weights);
        // a lone HF-named safetensors file takes config.json from beside it
        let single = ClipWeights::load(dst.join("model.safetensors")).unwrap();
        assert_eq!(single.source().format, WeightsFormat::HfSafetensors);
        assert_same_weights(&f32_weights, &single);
    }
}

#[test]
fn sharded_hf_directory_loads() {
    let src = fixture("tiny-deep-hf");
    let tmp = TempDir::new("model-sharded");
    let dir = tmp.join("model");
    copy_dir(&src, &dir, &["model.safetensors"]);
    let tensors = load_raw(&src.join("model.safetensors"));
    let (mut vision, mut rest) = (HashMap::new(), HashMap::new());
    let mut index = serde_json::Map::new();
    for (k, t) in tensors {
        let shard = if k.starts_with("vision_model.") {
            "model-00001-of-00002.safetensors"
        } else {
            "model-00002-of-00002.safetensors"
        };
        index.insert(k.clone(), serde_json::Value::String(shard.into()));
        if k.starts_with("vision_model.") {
            vision.insert(k, t);
        } else {
            rest.insert(k, t);
        }
    }
    save_raw(&vision, &dir.join("model-00001-of-00002.safetensors"));
    save_raw(&rest, &dir.join("model-00002-of-00002.safetensors"));
    let json = serde_json::json!({"metadata": {}, "weight_map": index});
    std::fs::write(dir.join("model.safetensors.index.json"), json.to_string()).unwrap();
    assert_same_weights(
        &ClipWeights::load(&src).unwrap(),
        &ClipWeights::load(&dir).unwrap(),
    );
}

// ------------------------------------------------------------------ bad inputs

#[test]
fn missing_path_and_foreign_files() {
    let tmp = TempDir::new("model-bad-files");
    let missing = tmp.join("nothing-here.safetensors");
    let e = error_of(&missing);
    assert!(e.contains("nothing-here.safetensors"), "{e}");

    let empty = tmp.join("empty.pt");
    std::fs::write(&empty, b"").unwrap();
    let e = error_of(&empty);
    assert!(e.contains("empty.pt") && e.contains("unrecognised"), "{e}");

    let text = tmp.join("notes.bin");
    std::fs::write(&text, b"these are not weights at all").unwrap();
    let e = error_of(&text);
    assert!(e.contains("notes.bin") && e.contains("unrecognised"), "{e}");

    let legacy = tmp.join("old.pt");
    std::fs::write(&legacy, b"\x80\x02\x8a\x0alegacy torch").unwrap();
    let e = error_of(&legacy);
    assert!(e.starts_with(legacy.to_str().unwrap()), "{e}");
}

#[test]
fn truncated_and_corrupt_safetensors() {
    let tmp = TempDir::new("model-truncated");
    let bytes = std::fs::read(fixture("tiny-openai-hf/model.safetensors")).unwrap();
    let truncated = tmp.join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let e = error_of(&truncated);
    assert!(
        e.contains("truncated.safetensors") && e.contains("safetensors"),
        "{e}"
    );

    let mut corrupt = bytes.clone();
    corrupt[9..40].fill(b'#'); // inside the JSON header
    let corrupt_path = tmp.join("corrupt.safetensors");
    std::fs::write(&corrupt_path, &corrupt).unwrap();
    let e = error_of(&corrupt_path);
    assert!(e.contains("corrupt.safetensors"), "{e}");

    // the same truncation inside an HF directory names the weights file
    let dir = tmp.join("hf");
    copy_dir(&fixture("tiny-openai-hf"), &dir, &["model.safetensors"]);
    std::fs::write(dir.join("model.safetensors"), &bytes[..bytes.len() - 10]).unwrap();
    let e = error_of(&dir);
    assert!(e.contains("hf/model.safetensors"), "{e}");
}

#[test]
fn hf_directory_without_config_or_weights() {
    let tmp = TempDir::new("model-hf-missing");
    let no_config = tmp.join("no-config");
    copy_dir(&fixture("tiny-openai-hf"), &no_config, &["config.json"]);
    let e = error_of(&no_config);
    assert!(e.contains("no-config") && e.contains("config.json"), "{e}");

    let no_weights = tmp.join("no-weights");
    copy_dir(
        &fixture("tiny-openai-hf"),
        &no_weights,
        &["model.safetensors"],
    );
    let e = error_of(&no_weights);
    assert!(
        e.contains("no-weights") && e.contains("model.safetensors"),
        "{e}"
    );

    // an HF-named file alone, without config.json beside it
    let lone = tmp.join("lone");
    std::fs::create_dir_all(&lone).unwrap();
    std::fs::copy(
        fixture("tiny-openai-hf/model.safetensors"),
        lone.join("clip.safetensors"),
    )
    .unwrap();
    let e = error_of(&lone.join("clip.safetensors"));
    assert!(
        e.contains("clip.safetensors") && e.contains("config.json"),
        "{e}"
    );

    let bad_json = tmp.join("bad-json");
    copy_dir(&fixture("tiny-openai-hf"), &bad_json, &[]);
    std::fs::write(bad_json.join("config.json"), "{ not json").unwrap();
    let e = error_of(&bad_json);
    assert!(
        e.contains("bad-json/config.json") && e.contains("JSON"),
        "{e}"
    );
}

/// A copy of tiny-openai-hf whose config.json is edited by `edit`.
fn with_config(
    tmp: &TempDir,
    tag: &str,
    edit: impl Fn(&mut serde_json::Value),
) -> std::path::PathBuf {
    let dir = tmp.join(tag);
    copy_dir(&fixture("tiny-openai-hf"), &dir, &[]);
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    dir
}

#[test]
fn config_disagreeing_with_the_weights() {
    let tmp = TempDir::new("model-cfg-mismatch");
    let more_layers = with_config(&tmp, "layers", |c| {
        c["vision_config"]["num_hidden_layers"] = 3.into()
    });
    let e = error_of(&more_layers);
    assert!(e.contains("layers/model.safetensors"), "{e}");
    assert!(e.contains("vision_model.encoder.layers.2."), "{e}");

    let wider = with_config(&tmp, "width", |c| {
        c["text_config"]["hidden_size"] = 128.into();
        c["text_config"]["intermediate_size"] = 512.into();
    });
    let e = error_of(&wider);
    assert!(
        e.contains("width/model.safetensors") && e.contains("shape"),
        "{e}"
    );

    let bad_heads = with_config(&tmp, "heads", |c| {
        c["vision_config"]["num_attention_heads"] = 3.into()
    });
    let e = error_of(&bad_heads);
    assert!(
        e.contains("heads/config.json") && e.contains("divisible"),
        "{e}"
    );
}

#[test]
fn non_clip_and_resnet_safetensors() {
    let tmp = TempDir::new("model-not-clip");
    let mut other = HashMap::new();
    other.insert(
        "encoder.layer.0.weight".to_string(),
        zeros(&[4, 4], StoredDType::F32),
    );
    let path = tmp.join("bert.safetensors");
    save_raw(&other, &path);
    let e = error_of(&path);
    assert!(
        e.contains("bert.safetensors") && e.contains("not a CLIP"),
        "{e}"
    );

    let mut resnet = HashMap::new();
    resnet.insert(
        "visual.layer1.0.conv1.weight".to_string(),
        zeros(&[64, 64, 1, 1], StoredDType::F32),
    );
    resnet.insert(
        "visual.attnpool.positional_embedding".to_string(),
        zeros(&[50, 2048], StoredDType::F32),
    );
    let path = tmp.join("RN50.safetensors");
    save_raw(&resnet, &path);
    let e = error_of(&path);
    assert!(
        e.contains("RN50.safetensors") && e.contains("ResNet"),
        "{e}"
    );
}

#[test]
fn openai_safetensors_with_a_missing_or_malformed_tensor() {
    let hf = ClipWeights::load(fixture("tiny-openai-hf")).unwrap();
    let tmp = TempDir::new("model-openai-bad");

    let mut missing = raw_of(hf.tensors());
    missing.remove("transformer.resblocks.1.ln_2.bias");
    let path = tmp.join("missing.safetensors");
    save_raw(&missing, &path);
    let e = error_of(&path);
    assert!(
        e.contains("missing.safetensors") && e.contains("transformer.resblocks.1.ln_2.bias"),
        "{e}"
    );

    let mut reshaped = raw_of(hf.tensors());
    reshaped.insert(
        "visual.ln_post.weight".into(),
        zeros(&[100], StoredDType::F32),
    );
    let path = tmp.join("reshaped.safetensors");
    save_raw(&reshaped, &path);
    let e = error_of(&path);
    assert!(
        e.contains("reshaped.safetensors")
            && e.contains("visual.ln_post.weight")
            && e.contains("[100]"),
        "{e}"
    );

    let mut integer = raw_of(hf.tensors());
    integer.insert("visual.ln_pre.bias".into(), zeros(&[128], StoredDType::I64));
    let path = tmp.join("integer.safetensors");
    save_raw(&integer, &path);
    let e = error_of(&path);
    assert!(
        e.contains("integer.safetensors")
            && e.contains("visual.ln_pre.bias")
            && e.contains("int64"),
        "{e}"
    );
}

#[test]
fn hf_directory_with_pytorch_model_bin() {
    // a directory holding pytorch_model.bin instead of safetensors is read with the pickle
    // reader (here the OpenAI-named state dict, so the sizes come from its shapes)
    let tmp = TempDir::new("model-hf-bin");
    let dir = tmp.join("model");
    copy_dir(&fixture("tiny-openai-hf"), &dir, &["model.safetensors"]);
    std::fs::copy(fixture("tiny-openai.pt"), dir.join("pytorch_model.bin")).unwrap();
    let w = ClipWeights::load(&dir).unwrap();
    assert_eq!(w.source().format, WeightsFormat::HfDirectory);
    assert_same_weights(&ClipWeights::load(fixture("tiny-openai-hf")).unwrap(), &w);
}

#[test]
fn from_tensors_checks_and_moves() {
    let hf = ClipWeights::load(fixture("tiny-openai-hf")).unwrap();
    let source = hf.source().clone();
    let tensors = hf.tensors().clone();
    let rebuilt =
        ClipWeights::from_tensors(hf.config().clone(), tensors.clone(), source.clone()).unwrap();
    assert_same_weights(&hf, &rebuilt);
    let mut reshaped = tensors.clone();
    reshaped.insert("visual.proj".into(), Tensor::new(vec![4], vec![0.0; 4]));
    let e = ClipWeights::from_tensors(hf.config().clone(), reshaped, source.clone())
        .unwrap_err()
        .to_string();
    assert!(e.contains("visual.proj") && e.contains("[4]"), "{e}");
    let mut missing = tensors;
    missing.remove("visual.proj");
    let e = ClipWeights::from_tensors(hf.config().clone(), missing, source)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("visual.proj") && e.contains("tiny-openai-hf"),
        "{e}"
    );
}
