//! The CAM stage (Softmax-GradCAM + CAA + resize) against tools/torch_cam.py on the tiny
//! 10-block model: the GradCAM maps, the refined maps on the patch grid and `attn_highres` /
//! `highres` at the original size. Goldens: tools/golden_clip.py.

use clip_es::gradcam::{image_cams, CamOptions, TextClassifier};
use clip_es_image::ClipInput;
use clip_es_model::{Checkpoint, ClipWeights, TensorSource, VisionTransformer};
use std::collections::HashMap;
use std::path::PathBuf;

/// A golden tensor: its shape and values (floating-point ones as f32, integers as i64).
struct G {
    shape: Vec<usize>,
    f32: Vec<f32>,
    i64: Option<Vec<i64>>,
    f64: Option<Vec<f64>>,
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
                    f64: t.to_f64(),
                },
            )
        })
        .collect()
}

fn values(t: &G) -> Vec<f32> {
    t.f32.clone()
}

fn compare(what: &str, got: &[f32], want: &[f32], tol: f32) -> f32 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let d = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(d <= tol, "{what}: max abs diff {d} > {tol}");
    d
}

#[test]
fn cam_stage_matches_python_reference() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let g = load_golden(root.join("tests/data/golden_cams.safetensors"));
    let weights =
        ClipWeights::load(root.join("../clip-es-model/tests/fixtures/tiny-deep-hf")).unwrap();
    let c = weights.config().clone();
    let vision =
        VisionTransformer::new(&weights, &c.vision, c.embed_dim, c.layer_norm_eps).unwrap();
    let logit_scale = weights.scalar_f32("logit_scale").unwrap().exp();
    let mut cases = 0;
    for i in 0.. {
        let key = format!("case{i}");
        let Some(input) = g.get(&format!("{key}.input")) else {
            break;
        };
        let (_, h, w) = input.dims3();
        let k = g[&format!("{key}.labels")].i64.as_ref().unwrap()[0] as usize;
        let size = g[&format!("{key}.original_size")].i64.clone().unwrap();
        let (oh, ow) = (size[0] as usize, size[1] as usize);
        let thr = g[&format!("{key}.box_threshold")].f64.as_ref().unwrap()[0];
        let text = values(&g[&format!("{key}.text")]);
        let e = c.embed_dim;
        let classifier = TextClassifier {
            embed_dim: e,
            classes: text[..k * e].to_vec(),
            background: text[k * e..].to_vec(),
            logit_scale,
        };
        let labels: Vec<usize> = (0..k).collect();
        let opts = CamOptions {
            box_threshold: thr,
            unrefined: true,
            ..CamOptions::default()
        };
        let input = ClipInput {
            data: values(input),
            height: h,
            width: w,
        };
        let (cams, _) = image_cams(&vision, &classifier, &input, (oh, ow), &labels, &opts).unwrap();
        let d1 = compare(
            &format!("{key} attn_highres"),
            &cams.refined,
            &values(&g[&format!("{key}.attn_highres")]),
            1e-4,
        );
        let d2 = compare(
            &format!("{key} highres"),
            cams.unrefined.as_ref().unwrap(),
            &values(&g[&format!("{key}.highres")]),
            1e-4,
        );
        println!("{key}: {k} labels, {h}x{w} -> {oh}x{ow}: attn_highres {d1:e}, highres {d2:e}");
        cases += 1;
    }
    assert_eq!(cases, 3);
}
