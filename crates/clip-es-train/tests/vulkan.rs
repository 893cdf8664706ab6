//! Stage three on a Vulkan device (`--device vulkan`, burn's wgpu backend) against the same
//! computation on `flex`: a tiny DeepLab-v2 with multi-scale inputs at non-integer scales and a
//! tiny clip-decoder take two SGD steps from the same weights on each device (losses and
//! parameters within float tolerance), and predict's label maps are identical. In CI these run
//! on Mesa's lavapipe (.ci/vulkan); each test prints the adapter it ran on.
//!
//! Tolerances: f32 on both sides, summed in other orders by the GPU kernels. Losses agree to
//! 1e-5 relative; each parameter after two steps to 1e-6 plus 1e-4 of the largest change any
//! parameter of that tensor made in the two steps on `flex` (the steps are what the gradients
//! decide; the weights themselves are copied).

#![cfg(feature = "vulkan")]

use burn::tensor::{Tensor, TensorData};
use clip_es_image::Rgb8Image;
use clip_es_train::decoder::DecoderConfig;
use clip_es_train::deeplab::{Backbone, DeepLabConfig};
use clip_es_train::loss::{Labels, LossKind};
use clip_es_train::predict::scores_deeplab;
use clip_es_train::sgd::Sgd;
use clip_es_train::train::{train_step, Batch};
use clip_es_train::{open_device, Device, Network};
use std::collections::BTreeMap;

/// The Vulkan device, with its adapter's name printed (`vulkan (llvmpipe (...))` on lavapipe).
fn vulkan() -> Device {
    let (device, what) = open_device("vulkan").expect("a Vulkan device");
    eprintln!("device: {what}");
    device
}

fn mix(x: usize, y: usize, c: usize) -> u32 {
    let mut v = (x as u32).wrapping_mul(73_856_093)
        ^ (y as u32).wrapping_mul(19_349_663)
        ^ (c as u32).wrapping_mul(83_492_791);
    v ^= v >> 13;
    v = v.wrapping_mul(0x5bd1_e995);
    v ^ (v >> 15)
}

/// A smooth picture with some texture, so that the network's logits are not flat.
fn picture(w: usize, h: usize) -> Rgb8Image {
    let mut data = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                let smooth = (x * 255 / w + y * 128 / h + c * 60) % 256;
                data.push(((smooth as u32 + mix(x, y, c) % 40) % 256) as u8);
            }
        }
    }
    Rgb8Image {
        width: w as u32,
        height: h as u32,
        data,
    }
}

/// Input planes of `picture` (centred), `[1, 3, h, w]`.
fn input(img: &Rgb8Image, device: &Device) -> Tensor<4> {
    let (w, h) = (img.width as usize, img.height as usize);
    let mut x = vec![0f32; 3 * h * w];
    for (i, px) in img.data.chunks_exact(3).enumerate() {
        for c in 0..3 {
            x[c * h * w + i] = px[c] as f32 - 120.0;
        }
    }
    Tensor::<4>::from_data(TensorData::new(x, [1, 3, h, w]), device)
}

/// Labels in blocks of `classes`, with a band of 255 (ignored) across the middle.
fn labels(w: usize, h: usize, classes: usize) -> Labels {
    let data = (0..h)
        .flat_map(|y| {
            (0..w).map(move |x| {
                if y * 3 / h == 1 && x % 5 == 0 {
                    255
                } else {
                    ((x * 3 / w + y * 2 / h) % classes) as u8
                }
            })
        })
        .collect();
    Labels { n: 1, h, w, data }
}

fn tiny_deeplab(device: &Device) -> Network {
    let cfg = DeepLabConfig {
        n_classes: 4,
        width: 2,
        blocks: [1, 1, 1, 1],
        rates: vec![2, 4],
        msc_scales: vec![0.5, 0.75],
        style: Backbone::Caffe,
    };
    Network::deeplab(cfg, device, 7)
}

fn tiny_decoder(device: &Device) -> Network {
    let cfg = DecoderConfig {
        n_classes: 4,
        in_dim: 6,
        hidden: 8,
        upsamplings: 2,
    };
    Network::decoder(cfg, device, 7)
}

fn params(m: &Network) -> BTreeMap<String, Vec<f32>> {
    m.trainable_host()
        .into_iter()
        .map(|(k, t)| (k, t.data))
        .collect()
}

/// Two SGD steps of `model` on `batch` on each device from the same weights; compares the
/// losses and the parameters (see the module header for the tolerances).
fn two_steps_agree(make: fn(&Device) -> Network, batch: fn(&Device) -> Batch, lr: f64) {
    let (flex, gpu) = (Device::flex(), vulkan());
    let mut on_flex = make(&flex);
    let mut on_gpu = make(&gpu);
    let start = params(&on_flex);
    assert_eq!(start, params(&on_gpu), "the same seed, the same weights");
    let (bf, bg) = ([batch(&flex)], [batch(&gpu)]);
    let (mut sf, mut sg) = (Sgd::new(0.9, 5e-4), Sgd::new(0.9, 5e-4));
    for step in 1..=2 {
        let lf = train_step(&mut on_flex, &mut sf, &bf, lr, LossKind::Plain, step).unwrap();
        let lg = train_step(&mut on_gpu, &mut sg, &bg, lr, LossKind::Plain, step).unwrap();
        let rel = ((lg - lf) / lf).abs();
        eprintln!("loss of step {step}: vulkan {lg} flex {lf} (relative {rel:e})");
        assert!(rel <= 1e-5, "loss of step {step}: vulkan {lg} vs flex {lf}");
    }
    let (pf, pg) = (params(&on_flex), params(&on_gpu));
    let mut worst = 0f32;
    for (name, want) in &pf {
        let got = &pg[name];
        let moved = want
            .iter()
            .zip(&start[name])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(moved > 0.0, "{name} did not change in two steps");
        for (i, (a, b)) in got.iter().zip(want).enumerate() {
            let err = (a - b).abs();
            assert!(
                err <= 1e-6 + 1e-4 * moved,
                "{name}[{i}]: vulkan {a} vs flex {b} (the steps moved it by up to {moved})"
            );
            worst = worst.max(err / moved);
        }
    }
    eprintln!("parameters: largest difference {worst:e} of the tensor's largest step");
}

/// 37x29: its 0.5 and 0.75 multiples are not integers, so the resized logits are interpolated.
fn deeplab_batch(device: &Device) -> Batch {
    Batch {
        x: input(&picture(37, 29), device),
        labels: labels(37, 29, 4),
    }
}

/// CLIP patch features of a 5x7 grid; the decoder upsamples them twice (x4).
fn decoder_batch(device: &Device) -> Batch {
    let (c, h, w) = (6, 5, 7);
    let x: Vec<f32> = (0..c * h * w)
        .map(|i| (mix(i, 3, 1) % 2000) as f32 / 1000.0 - 1.0)
        .collect();
    Batch {
        x: Tensor::<4>::from_data(TensorData::new(x, [1, c, h, w]), device),
        labels: labels(4 * w, 4 * h, 4),
    }
}

#[test]
fn vulkan_adapter_is_named() {
    let (_, what) = open_device("vulkan").expect("a Vulkan device");
    eprintln!("device: {what}");
    let name = what
        .strip_prefix("vulkan (")
        .and_then(|s| s.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not a Vulkan description: {what}"));
    assert!(!name.trim().is_empty(), "no adapter name in {what}");
}

#[test]
fn vulkan_deeplab_two_training_steps_equal_flex() {
    two_steps_agree(tiny_deeplab, deeplab_batch, 1e-3);
}

#[test]
fn vulkan_decoder_two_training_steps_equal_flex() {
    two_steps_agree(tiny_decoder, decoder_batch, 1e-2);
}

#[test]
fn vulkan_deeplab_label_maps_equal_flex() {
    let img = picture(45, 33);
    let want = scores_deeplab(&tiny_deeplab(&Device::flex()), &img)
        .unwrap()
        .argmax();
    let got = scores_deeplab(&tiny_deeplab(&vulkan()), &img)
        .unwrap()
        .argmax();
    let classes: std::collections::BTreeSet<u8> = want.iter().copied().collect();
    assert!(classes.len() > 1, "a flat label map compares nothing");
    let differ = got.iter().zip(&want).filter(|(a, b)| a != b).count();
    assert_eq!(differ, 0, "{differ} of {} labels differ", want.len());
}
