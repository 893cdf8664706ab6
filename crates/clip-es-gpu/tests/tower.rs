//! The burn tower against the CPU kernels of `clip_es_model` on the tiny 10-block model: the
//! explained activation, the kept attention maps, the class probabilities and the GradCAM
//! channel weights (the gradient of each target's softmax probability, worked out here on the
//! host from the CPU tower's backward pass). `flex` everywhere; `vulkan_*` with the `vulkan`
//! feature on a Vulkan driver.

use clip_es_gpu::{BurnDevice, GradCamRequest, VisionTower};
use clip_es_model::{ClipWeights, TensorSource, VisionOptions, VisionTransformer};
use std::path::PathBuf;

fn weights() -> ClipWeights {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    ClipWeights::load(root.join("../clip-es-model/tests/fixtures/tiny-deep-hf")).unwrap()
}

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn check_against_cpu(device: BurnDevice) {
    let w = weights();
    let c = w.config().clone();
    let cpu = VisionTransformer::new(&w, &c.vision, c.embed_dim, c.layer_norm_eps).unwrap();
    let tower = VisionTower::new(
        &w,
        &c.vision,
        c.embed_dim,
        c.layer_norm_eps,
        &device.device().unwrap(),
    )
    .unwrap();
    let logit_scale = w.scalar_f32("logit_scale").unwrap().exp();
    // 48 x 80 pixels: a 3 x 5 grid, resized from the 4 x 4 pretrained one.
    let (h, wd) = (48, 80);
    let pixels = values(3 * h * wd, 1);
    let e = c.embed_dim;
    let classes = 5;
    let text = values(classes * e, 2);
    let targets = [3, 0, 1];
    let keep_from = cpu.layers() - 4;
    let g = tower
        .softmax_gradcam(&GradCamRequest {
            pixels: &pixels,
            height: h,
            width: wd,
            positional_embedding: None,
            keep_attention_from: keep_from,
            class_features: &text,
            logit_scale,
            targets: &targets,
        })
        .unwrap();
    assert_eq!((g.grid_h, g.grid_w), (3, 5));

    let fwd = cpu
        .forward_cached(
            &pixels,
            h,
            wd,
            VisionOptions {
                keep_attention_from: keep_from,
                ..VisionOptions::default()
            },
        )
        .unwrap();
    let d = cpu.width();
    let act = max_diff(&g.activation, &fwd.last_ln_1()[d..]);
    assert!(act < 1e-4, "activation: max diff {act}");
    assert_eq!(g.attention.len(), fwd.attention.len());
    for (i, (a, b)) in g.attention.iter().zip(&fwd.attention).enumerate() {
        let m = max_diff(a, b);
        assert!(m < 1e-5, "attention map {i}: max diff {m}");
    }
    // The softmax and its gradient on the host (as clip_es::gradcam computes them).
    let z = &fwd.patch_mean_embedding;
    let zl = dot(z, z).sqrt();
    let zn: Vec<f32> = z.iter().map(|v| v / zl).collect();
    let rows: Vec<Vec<f32>> = text
        .chunks_exact(e)
        .map(|t| t.iter().map(|v| v / dot(t, t).sqrt()).collect())
        .collect();
    let logits: Vec<f32> = rows.iter().map(|t| logit_scale * dot(&zn, t)).collect();
    let top = logits.iter().cloned().fold(f32::MIN, f32::max);
    let exp: Vec<f32> = logits.iter().map(|l| (l - top).exp()).collect();
    let sum: f32 = exp.iter().sum();
    let p: Vec<f32> = exp.iter().map(|v| v / sum).collect();
    let pm = max_diff(&g.probabilities, &p);
    assert!(pm < 1e-5, "probabilities {:?} vs {p:?}", g.probabilities);
    let patches = (g.grid_h * g.grid_w) as f32;
    assert_eq!(g.channel_weights.len(), targets.len());
    for (&k, got) in targets.iter().zip(&g.channel_weights) {
        let mut dzn = vec![0f32; e];
        for (cls, t) in rows.iter().enumerate() {
            let gk = p[k] * (f32::from(cls == k) - p[cls]) * logit_scale;
            for j in 0..e {
                dzn[j] += gk * t[j];
            }
        }
        let along = dot(&zn, &dzn);
        let dz: Vec<f32> = dzn
            .iter()
            .zip(&zn)
            .map(|(g, u)| (g - u * along) / zl)
            .collect();
        let want: Vec<f32> = cpu
            .backward_patch_mean(&fwd, &dz)
            .iter()
            .map(|v| v / patches)
            .collect();
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let m = max_diff(got, &want);
        assert!(
            m <= 1e-4 * scale.max(1e-3),
            "target {k}: channel weights max diff {m} (largest {scale})"
        );
    }
}

#[test]
fn flex_tower_matches_cpu_kernels() {
    check_against_cpu(BurnDevice::Flex);
}

#[test]
fn bad_inputs_are_refused_with_the_problem() {
    let w = weights();
    let c = w.config().clone();
    let tower = VisionTower::new(
        &w,
        &c.vision,
        c.embed_dim,
        c.layer_norm_eps,
        &BurnDevice::Flex.device().unwrap(),
    )
    .unwrap();
    let text = values(2 * c.embed_dim, 3);
    let pixels = values(3 * 40 * 32, 4);
    let req = GradCamRequest {
        pixels: &pixels,
        height: 40,
        width: 32,
        positional_embedding: None,
        keep_attention_from: 0,
        class_features: &text,
        logit_scale: 100.0,
        targets: &[0],
    };
    let e = tower.softmax_gradcam(&req).unwrap_err().to_string();
    assert!(e.contains("multiples of the patch size 16"), "{e}");
    let e = tower
        .softmax_gradcam(&GradCamRequest {
            height: 32,
            targets: &[2],
            ..req
        })
        .unwrap_err()
        .to_string();
    assert!(e.contains("target class 2 out of range"), "{e}");
}

#[cfg(feature = "vulkan")]
#[test]
fn vulkan_tower_matches_cpu_kernels() {
    check_against_cpu(BurnDevice::Vulkan);
}
