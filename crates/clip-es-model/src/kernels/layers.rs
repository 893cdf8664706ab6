//! The layers with parameters: [`Linear`] (`nn.Linear`) and [`LayerNorm`] with its
//! activation-only backward pass.

use super::isa::{simd_level, SimdLevel};
use super::matmul::{matmul, MatRef};

/// A fully connected layer `y = x W^T + b` (PyTorch's `nn.Linear`). The weight is kept
/// transposed (in x out, row-major): the GEMM then reads it without repacking, which measured
/// 1.05-2.5x faster than reading PyTorch's out x in layout through a transposed view.
#[derive(Clone, Debug)]
pub struct Linear {
    /// `W^T`, in_features x out_features.
    weight_t: Vec<f32>,
    pub bias: Option<Vec<f32>>,
    pub in_features: usize,
    pub out_features: usize,
}

impl Linear {
    /// `weight` in PyTorch's layout, out_features x in_features.
    pub fn new(
        weight: Vec<f32>,
        bias: Option<Vec<f32>>,
        out_features: usize,
        in_features: usize,
    ) -> Self {
        assert_eq!(weight.len(), out_features * in_features);
        if let Some(b) = &bias {
            assert_eq!(b.len(), out_features);
        }
        let mut weight_t = vec![0f32; weight.len()];
        for (o, row) in weight.chunks_exact(in_features).enumerate() {
            for (i, &v) in row.iter().enumerate() {
                weight_t[i * out_features + o] = v;
            }
        }
        Linear {
            weight_t,
            bias,
            in_features,
            out_features,
        }
    }

    /// `x` holds `rows` rows of `in_features`.
    pub fn forward(&self, x: &[f32], rows: usize) -> Vec<f32> {
        let mut y = vec![0f32; rows * self.out_features];
        self.forward_into(x, rows, &mut y);
        y
    }

    pub fn forward_into(&self, x: &[f32], rows: usize, y: &mut [f32]) {
        assert_eq!(x.len(), rows * self.in_features);
        assert_eq!(y.len(), rows * self.out_features);
        let accumulate = if let Some(b) = &self.bias {
            for row in y.chunks_exact_mut(self.out_features) {
                row.copy_from_slice(b);
            }
            true
        } else {
            false
        };
        matmul(
            rows,
            self.out_features,
            self.in_features,
            y,
            self.out_features,
            accumulate,
            MatRef::rows(x, self.in_features),
            MatRef::rows(&self.weight_t, self.out_features),
            None,
        );
    }

    /// Gradient with respect to the input: `dx = dy W` (no weight gradients: CLIP is frozen).
    pub fn backward_input(&self, dy: &[f32], rows: usize) -> Vec<f32> {
        assert_eq!(dy.len(), rows * self.out_features);
        let mut dx = vec![0f32; rows * self.in_features];
        matmul(
            rows,
            self.in_features,
            self.out_features,
            &mut dx,
            self.in_features,
            false,
            MatRef::rows(dy, self.out_features),
            MatRef::transposed(&self.weight_t, self.out_features),
            None,
        );
        dx
    }
}

/// Layer normalisation over the last dimension, `y = (x - mean) / sqrt(var + eps) * w + b`.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub eps: f32,
}

/// Per-row statistics kept for the backward pass.
#[derive(Clone, Debug, Default)]
pub struct LayerNormCache {
    /// Normalised input `(x - mean) * rstd`, rows x dim.
    pub xhat: Vec<f32>,
    /// `1 / sqrt(var + eps)` per row.
    pub rstd: Vec<f32>,
}

impl LayerNorm {
    pub fn new(weight: Vec<f32>, bias: Vec<f32>, eps: f32) -> Self {
        assert_eq!(weight.len(), bias.len());
        LayerNorm { weight, bias, eps }
    }

    pub fn dim(&self) -> usize {
        self.weight.len()
    }

    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        let mut y = vec![0f32; x.len()];
        self.forward_into(x, &mut y, None);
        y
    }

    pub fn forward_cached(&self, x: &[f32]) -> (Vec<f32>, LayerNormCache) {
        let mut y = vec![0f32; x.len()];
        let mut cache = LayerNormCache {
            xhat: vec![0f32; x.len()],
            rstd: vec![0f32; x.len() / self.dim()],
        };
        self.forward_into(x, &mut y, Some(&mut cache));
        (y, cache)
    }

    fn forward_into(&self, x: &[f32], y: &mut [f32], mut cache: Option<&mut LayerNormCache>) {
        let d = self.dim();
        assert_eq!(x.len() % d, 0);
        for (r, (xr, yr)) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)).enumerate() {
            let (mean, rstd) = row_stats(xr, self.eps);
            normalize_row(xr, yr, mean, rstd, &self.weight, &self.bias);
            if let Some(c) = cache.as_deref_mut() {
                c.rstd[r] = rstd;
                for (h, &v) in c.xhat[r * d..(r + 1) * d].iter_mut().zip(xr) {
                    *h = (v - mean) * rstd;
                }
            }
        }
    }

    /// `dx` for upstream `dy` (the cached rows x dim).
    pub fn backward_input(&self, cache: &LayerNormCache, dy: &[f32]) -> Vec<f32> {
        let d = self.dim();
        assert_eq!(dy.len(), cache.rstd.len() * d);
        let mut dx = vec![0f32; dy.len()];
        let inv_d = 1.0 / d as f32;
        for (r, (dyr, dxr)) in dy.chunks_exact(d).zip(dx.chunks_exact_mut(d)).enumerate() {
            let xhat = &cache.xhat[r * d..(r + 1) * d];
            let (mut s1, mut s2) = (0f32, 0f32);
            for j in 0..d {
                let g = dyr[j] * self.weight[j];
                s1 += g;
                s2 += g * xhat[j];
            }
            let (m1, m2) = (s1 * inv_d, s2 * inv_d);
            let rstd = cache.rstd[r];
            for j in 0..d {
                dxr[j] = rstd * (dyr[j] * self.weight[j] - m1 - xhat[j] * m2);
            }
        }
        dx
    }
}

multiversion! {
    /// Mean and `1/sqrt(var + eps)` of one row (two-pass, like PyTorch's CPU kernel).
    fn row_stats(x: &[f32], eps: f32) -> (f32, f32) {
        let n = x.len() as f32;
        let mut acc = [0f32; 16];
        let chunks = x.chunks_exact(16);
        let rest = chunks.remainder();
        for c in chunks {
            for i in 0..16 {
                acc[i] += c[i];
            }
        }
        let mut sum: f32 = acc.iter().sum();
        sum += rest.iter().sum::<f32>();
        let mean = sum / n;
        let mut acc = [0f32; 16];
        let chunks = x.chunks_exact(16);
        let rest = chunks.remainder();
        for c in chunks {
            for i in 0..16 {
                let d = c[i] - mean;
                acc[i] += d * d;
            }
        }
        let mut var: f32 = acc.iter().sum();
        var += rest.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>();
        let var = var / n;
        (mean, 1.0 / (var + eps).sqrt())
    }
}

multiversion! {
    fn normalize_row(x: &[f32], y: &mut [f32], mean: f32, rstd: f32, w: &[f32], b: &[f32]) {
        for (((yv, &xv), &wv), &bv) in y.iter_mut().zip(x).zip(w).zip(b) {
            *yv = (xv - mean) * rstd * wv + bv;
        }
    }
}
