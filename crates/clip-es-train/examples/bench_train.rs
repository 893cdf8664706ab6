//! Seconds per training iteration (forward, loss, backward, SGD step) on random data:
//! DeepLab-v2 ResNet-101 with MSC at crop 321, and the clip-decoder on a 20x20 patch grid of
//! 768-d features. Run by tools/bench_train.py next to PyTorch, and by tools/gpu_check.sh on
//! `vulkan` (a build with `--features vulkan`).
//!
//!     cargo run --release -p clip-es-train --example bench_train -- [deeplab|decoder] ITERS BATCH [DEVICE]

use burn::tensor::{Tensor, TensorData};
use clip_es_train::decoder::DecoderConfig;
use clip_es_train::deeplab::DeepLabConfig;
use clip_es_train::loss::{Labels, LossKind};
use clip_es_train::rng::Rng;
use clip_es_train::sgd::Sgd;
use clip_es_train::train::{train_step, Batch};
use clip_es_train::Network;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let which = args.get(1).map(String::as_str).unwrap_or("deeplab");
    let iters: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3);
    let batch: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1);
    let device_name = args.get(4).map(String::as_str).unwrap_or("flex");
    let (device, what) = match clip_es_train::open_device(device_name) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    println!("device: {what}");
    let mut rng = Rng::new(1);
    let (mut model, c, side, lside) = match which {
        "deeplab" => (
            Network::deeplab(DeepLabConfig::resnet101(21), &device, 0),
            3,
            321,
            321,
        ),
        _ => (
            Network::decoder(
                DecoderConfig {
                    n_classes: 21,
                    in_dim: 768,
                    hidden: 256,
                    upsamplings: 1,
                },
                &device,
                0,
            ),
            768,
            20,
            40,
        ),
    };
    let x: Vec<f32> = (0..batch * c * side * side)
        .map(|_| rng.normal() as f32)
        .collect();
    let labels: Vec<u8> = (0..batch * lside * lside)
        .map(|i| if i % 7 == 0 { 255 } else { (i / 97 % 21) as u8 })
        .collect();
    let b = [Batch {
        x: Tensor::<4>::from_data(TensorData::new(x, [batch, c, side, side]), &device),
        labels: Labels {
            n: batch,
            h: lside,
            w: lside,
            data: labels,
        },
    }];
    let mut sgd = Sgd::new(0.9, 5e-4);
    // LR 0: the random ResNet-101 without trained BN statistics diverges after one real step;
    // the work per iteration (momentum, weight decay, update) is the same. One warm-up
    // iteration (on a GPU also its shader compilation), then timed ones. Each step reads its
    // loss back, which waits for the device.
    train_step(&mut model, &mut sgd, &b, 0.0, LossKind::Plain, 1).unwrap();
    let t = std::time::Instant::now();
    for i in 0..iters {
        train_step(&mut model, &mut sgd, &b, 0.0, LossKind::Plain, i + 2).unwrap();
    }
    println!(
        "{which} batch {batch}: {:.3} s/iter",
        t.elapsed().as_secs_f64() / iters as f64
    );
}
