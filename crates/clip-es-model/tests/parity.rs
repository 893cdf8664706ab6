//! Parity of the encoders with PyTorch (tools/torch_clip.py) on the tiny random models:
//! attention maps of every block, the last block's ln_1 output, both pooled embeddings and
//! the text embeddings, within 1e-4, for every weights layout.
//! Goldens: tools/golden_clip.py -> tests/data/golden_clip.safetensors.

use clip_es_model::{Checkpoint, ClipWeights, TextTransformer, VisionOptions, VisionTransformer};
use std::collections::HashMap;
use std::path::PathBuf;

const TOL: f32 = 1e-4;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn golden() -> HashMap<String, G> {
    load_golden(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/golden_clip.safetensors"),
    )
}

/// A golden tensor: its shape and values (floating-point ones as f32, int64 ones as i64).
struct G {
    shape: Vec<usize>,
    f32: Vec<f32>,
    i64: Option<Vec<i64>>,
}

impl G {
    fn dims3(&self) -> (usize, usize, usize) {
        (self.shape[0], self.shape[1], self.shape[2])
    }
}

fn load_golden(path: PathBuf) -> HashMap<String, G> {
    let checkpoint = Checkpoint::open(&path).unwrap();
    let store = checkpoint.store().unwrap();
    store
        .iter()
        .map(|(name, t)| {
            (
                name.to_string(),
                G {
                    shape: t.shape.clone(),
                    f32: t.to_f32().unwrap_or_default(),
                    i64: t.to_i64(),
                },
            )
        })
        .collect()
}

fn values(t: &G) -> Vec<f32> {
    t.f32.clone()
}

fn max_diff(what: &str, got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let d = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(d <= TOL, "{what}: max abs diff {d} > {TOL}");
    d
}

fn towers(path: &str) -> (VisionTransformer, TextTransformer) {
    let w = ClipWeights::load(fixture(path)).unwrap();
    let c = w.config().clone();
    (
        VisionTransformer::new(&w, &c.vision, c.embed_dim, c.layer_norm_eps).unwrap(),
        TextTransformer::new(&w, &c.text, c.embed_dim, c.layer_norm_eps).unwrap(),
    )
}

/// Checks every golden image case `{prefix}.{h}x{w}.*` and the text case `{text}.text.*`.
fn check(
    g: &HashMap<String, G>,
    vision: &VisionTransformer,
    text: Option<(&TextTransformer, &str)>,
    prefix: &str,
    round_f16: bool,
) -> usize {
    let mut cases = 0;
    let mut worst = 0f32;
    for key in g
        .keys()
        .filter(|k| k.starts_with(&format!("{prefix}.")) && k.ends_with(".input"))
    {
        let case = key.trim_end_matches(".input");
        let input = &g[key];
        let (_, h, w) = input.dims3();
        // The CLIP-ES variant rounds the resized positional embedding to float16 (but for the
        // class position), as the reference does.
        let pos = round_f16.then(|| {
            let mut pos = vision.positional_embedding_for(h / 16, w / 16);
            for v in &mut pos[vision.width()..] {
                *v = half::f16::from_f32(*v).to_f32();
            }
            pos
        });
        let out = vision
            .encode(
                &values(input),
                h,
                w,
                VisionOptions {
                    keep_attention_from: 0,
                    positional_embedding: pos.as_deref(),
                    patch_embeddings: false,
                },
            )
            .unwrap();
        let want_attn = &g[&format!("{case}.attention")];
        assert_eq!(want_attn.shape[0], out.attention.len());
        let got_attn: Vec<f32> = out.attention.concat();
        worst = worst.max(max_diff(
            &format!("{case} attention"),
            &got_attn,
            &values(want_attn),
        ));
        worst = worst.max(max_diff(
            &format!("{case} last ln_1"),
            &out.last_ln_1,
            &values(&g[&format!("{case}.last_ln_1")]),
        ));
        worst = worst.max(max_diff(
            &format!("{case} cls"),
            &out.cls_embedding,
            &values(&g[&format!("{case}.cls_embedding")]),
        ));
        worst = worst.max(max_diff(
            &format!("{case} patch mean"),
            &out.patch_mean_embedding,
            &values(&g[&format!("{case}.patch_mean_embedding")]),
        ));
        cases += 1;
    }
    if let Some((text, name)) = text {
        let ids = &g[&format!("{name}.text.ids")];
        let flat = ids.i64.as_ref().expect("int64 ids");
        let rows: Vec<Vec<u32>> = flat
            .chunks_exact(ids.shape[1])
            .map(|r| r.iter().map(|&v| v as u32).collect())
            .collect();
        let got: Vec<f32> = text.encode(&rows).unwrap().concat();
        worst = worst.max(max_diff(
            &format!("{name} text"),
            &got,
            &values(&g[&format!("{name}.text.embedding")]),
        ));
        cases += 1;
    }
    println!("{prefix}: {cases} cases, worst max abs diff {worst:e}");
    cases
}

#[test]
fn tiny_openai_matches_pytorch_in_every_layout() {
    let g = golden();
    for layout in ["tiny-openai-hf", "tiny-openai.pt", "tiny-openai-jit.pt"] {
        let (vision, text) = towers(layout);
        // 48x48 (the native grid), 64x96 (non-square, up), 32x80 (down and up) + text.
        assert_eq!(
            check(&g, &vision, Some((&text, "openai")), "openai", false),
            4,
            "{layout}"
        );
        assert_eq!(
            check(&g, &vision, None, "openai_f16pos", true),
            1,
            "{layout}"
        );
    }
}

#[test]
fn tiny_deep_matches_pytorch() {
    let g = golden();
    let (vision, text) = towers("tiny-deep-hf");
    assert_eq!(vision.layers(), 10);
    assert_eq!(check(&g, &vision, Some((&text, "deep")), "deep", false), 3);
}

#[test]
fn rejects_sizes_that_are_not_patch_multiples() {
    let (vision, _) = towers("tiny-deep-hf");
    let err = vision
        .encode(&vec![0.0; 3 * 40 * 48], 40, 48, VisionOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("multiples of the patch size 16"), "{err}");
    let err = vision
        .encode(&[0.0; 5], 48, 48, VisionOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("expected 3 x 48 x 48"), "{err}");
}
