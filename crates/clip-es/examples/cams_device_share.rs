//! How a CAM's time splits between the image tower on a device (forward, gradients) and the
//! steps that stay on the CPU (CAA, the resize to the image size), with random ViT-B/16 weights
//! at a VOC-sized input (docs/gpu.md, "CAMs on the GPU").
//!
//!     cargo run --release -p clip-es --example cams_device_share -- [cpu|flex|vulkan] [HxW] [reps]

use clip_es::gradcam::{image_cams, CamOptions, TextClassifier, Tower};
use clip_es_image::ClipInput;
use clip_es_model::bench::RandomWeights;
use clip_es_model::{ClipConfig, VisionTransformer};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let device = clip_es::cams::parse_device(args.get(1).map_or("flex", String::as_str))
        .unwrap_or_else(|e| panic!("{e}"));
    let (h, w) = args
        .get(2)
        .and_then(|s| s.split_once('x'))
        .map_or((384, 512), |(h, w)| {
            (h.parse().unwrap(), w.parse().unwrap())
        });
    let reps: usize = args.get(3).map_or(2, |r| r.parse().unwrap());
    let c = ClipConfig::vit_b_16();
    let src = RandomWeights { seed: 7 };
    let eps = c.layer_norm_eps;
    let cpu = VisionTransformer::new(&src, &c.vision, c.embed_dim, eps).unwrap();
    let burn = device.map(|d| {
        clip_es_gpu::VisionTower::new(&src, &c.vision, c.embed_dim, eps, &d.device().unwrap())
            .unwrap()
    });
    let tower = Tower {
        cpu: &cpu,
        burn: burn.as_ref(),
    };
    let e = c.embed_dim;
    let unit = |n: usize, k: usize| -> Vec<f32> {
        (0..n * e)
            .map(|i| ((i * 7919 + k) % 97) as f32 / 97.0 - 0.5)
            .collect()
    };
    let classifier = TextClassifier {
        embed_dim: e,
        classes: unit(20, 1),
        background: unit(27, 2),
        logit_scale: 100.0,
    };
    let input = ClipInput {
        data: (0..3 * h * w)
            .map(|i| ((i % 251) as f32 / 125.0) - 1.0)
            .collect(),
        height: h,
        width: w,
    };
    let opts = CamOptions::default();
    for rep in 0..reps {
        let (_, t) = image_cams(tower, &classifier, &input, (h, w), &[3, 11], &opts).unwrap();
        let total = t.forward + t.backward + t.affinity + t.resize;
        println!(
            "{} {h}x{w} rep {rep}: forward {:.2} s, gradients {:.2} s, CAA {:.2} s ({:.0}%), resize {:.2} s ({:.0}%), total {:.2} s",
            args.get(1).map_or("flex", String::as_str),
            t.forward,
            t.backward,
            t.affinity,
            100.0 * t.affinity / total,
            t.resize,
            100.0 * t.resize / total,
            total
        );
    }
}
