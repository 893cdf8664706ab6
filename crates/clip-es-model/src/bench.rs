//! Throughput measurement of the image tower against the machine's own matrix-product speed
//! (used by `clip-es bench` and `examples/bench_vision.rs`).

use crate::config::VisionConfig;
use crate::kernels::{matmul, MatRef};
use crate::tensors::{ModelError, TensorSource};
use crate::vision::{VisionOptions, VisionTransformer};
use std::time::Instant;

/// Deterministic pseudo-random weights of the right shapes for any OpenAI-named tensor: the
/// benchmark needs realistic shapes, not trained values.
pub struct RandomWeights {
    pub seed: u64,
}

impl TensorSource for RandomWeights {
    fn tensor_f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, ModelError> {
        let n: usize = shape.iter().product();
        let mut s = self.seed
            ^ name.bytes().fold(0xcbf29ce484222325u64, |h, b| {
                (h ^ b as u64).wrapping_mul(0x100000001b3)
            });
        let fan_in = *shape.last().unwrap_or(&1) as f32;
        // Layer-norm gains of one keep the activations in a realistic range.
        if name.ends_with("ln_1.weight")
            || name.ends_with("ln_2.weight")
            || name.contains("ln_pre.weight")
            || name.contains("ln_post.weight")
        {
            return Ok(vec![1.0; n]);
        }
        let std = fan_in.powf(-0.5);
        Ok((0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0) * std * 1.7
            })
            .collect())
    }

    fn scalar_f32(&self, _name: &str) -> Result<f32, ModelError> {
        Ok(100f32.ln())
    }
}

/// Floating-point operations of one image-tower forward pass (multiply-add = 2).
pub fn vision_flops(cfg: &VisionConfig, height: usize, width: usize) -> f64 {
    let p = cfg.patch_size;
    let n = (height / p) * (width / p);
    let t = (n + 1) as f64;
    let d = cfg.width as f64;
    let per_block = 24.0 * t * d * d + 4.0 * t * t * d;
    2.0 * n as f64 * d * (3 * p * p) as f64 + cfg.layers as f64 * per_block
}

/// Best-of-`reps` GFLOP/s of an m x k by k x n product on the current rayon pool.
pub fn matmul_gflops(m: usize, n: usize, k: usize, reps: usize) -> f64 {
    let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
    let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
    let mut c = vec![0f32; m * n];
    let mut best = f64::MAX;
    for _ in 0..reps {
        let t = Instant::now();
        matmul(
            m,
            n,
            k,
            &mut c,
            n,
            false,
            MatRef::rows(&a, k),
            MatRef::rows(&b, n),
            None,
        );
        best = best.min(t.elapsed().as_secs_f64());
    }
    2.0 * (m * n * k) as f64 / best / 1e9
}

pub struct VisionBenchResult {
    pub height: usize,
    pub width: usize,
    pub seconds: f64,
    pub gflops: f64,
}

/// Times `encode` (best of `reps`, after one warm-up) at each size, keeping the attention
/// maps of the last `attention_blocks` blocks as a CAM method does.
pub fn bench_vision(
    cfg: &VisionConfig,
    sizes: &[(usize, usize)],
    reps: usize,
    attention_blocks: usize,
) -> Result<Vec<VisionBenchResult>, ModelError> {
    let src = RandomWeights { seed: 7 };
    let model = VisionTransformer::new(&src, cfg, 512, 1e-5)?;
    let mut out = Vec::new();
    for &(h, w) in sizes {
        let pixels: Vec<f32> = (0..3 * h * w)
            .map(|i| ((i * 31 % 255) as f32 / 255.0 - 0.5) * 3.0)
            .collect();
        let opts = VisionOptions {
            keep_attention_from: cfg.layers.saturating_sub(attention_blocks),
            positional_embedding: None,
            patch_embeddings: false,
        };
        model.encode(&pixels, h, w, opts)?;
        let mut best = f64::MAX;
        for _ in 0..reps {
            let t = Instant::now();
            model.encode(&pixels, h, w, opts)?;
            best = best.min(t.elapsed().as_secs_f64());
        }
        out.push(VisionBenchResult {
            height: h,
            width: w,
            seconds: best,
            gflops: vision_flops(cfg, h, w) / best / 1e9,
        });
    }
    Ok(out)
}
