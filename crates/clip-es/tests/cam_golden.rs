//! The CAM stage (Softmax-GradCAM + CAA + resize) against tools/torch_cam.py on the tiny
//! 10-block model: the GradCAM maps, the refined maps on the patch grid and `attn_highres` /
//! `highres` at the original size. Goldens: tools/golden_clip.py.

use candle_core::{safetensors, DType, Device, Tensor};
use clip_es::cam::{image_cams, CamOptions, TextClassifier};
use clip_es_image::ClipInput;
use clip_es_model::{ClipWeights, TensorSource, VisionTransformer};
use std::collections::HashMap;
use std::path::PathBuf;

fn values(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
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
    let g: HashMap<String, Tensor> = safetensors::load(
        root.join("tests/data/golden_cams.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
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
        let (_, h, w) = input.dims3().unwrap();
        let k = g[&format!("{key}.labels")].to_vec1::<i64>().unwrap()[0] as usize;
        let size = g[&format!("{key}.original_size")].to_vec1::<i64>().unwrap();
        let (oh, ow) = (size[0] as usize, size[1] as usize);
        let thr = g[&format!("{key}.box_threshold")].to_vec1::<f64>().unwrap()[0];
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
