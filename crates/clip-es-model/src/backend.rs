//! The backend seam: every operation the CLIP towers run goes through a [`Backend`].
//!
//! The layers ([`Linear`], [`LayerNorm`], the residual blocks) hold parameters only; the
//! maths is the backend's. [`Cpu`] is the first implementation: the hand-written kernels of
//! [`crate::kernels`] (the `gemm` crate for products, loops compiled for AVX-512 / AVX2 and
//! picked at run time for the rest). A GPU backend implements the same trait; a second model
//! family builds its layers on the same trait (see docs/DEVELOPING.md, "Adding a backend" and
//! "Adding a model").
//!
//! Buffers are host `f32` slices, row-major, with explicit shapes. A backend that keeps its
//! data on a device can hold device copies of the parameters (keyed by the layer) and move
//! activations at the boundaries of the calls it accelerates.

use crate::kernels::{self, AttentionShape, KeepProbs, LayerNorm, LayerNormCache, Linear, MatRef};
use std::sync::Arc;

/// The operations of a CLIP-style transformer, forward and (input-only) backward.
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// A short name for messages and benchmarks.
    fn name(&self) -> &'static str;

    /// `x W^T + b` for `rows` rows of `layer.in_features`.
    fn linear(&self, layer: &Linear, x: &[f32], rows: usize) -> Vec<f32>;

    /// The gradient with respect to a linear layer's input: `dy W`.
    fn linear_backward_input(&self, layer: &Linear, dy: &[f32], rows: usize) -> Vec<f32>;

    /// Layer normalisation of every row.
    fn layer_norm(&self, ln: &LayerNorm, x: &[f32]) -> Vec<f32>;

    /// [`Backend::layer_norm`] keeping what [`Backend::layer_norm_backward_input`] needs.
    fn layer_norm_cached(&self, ln: &LayerNorm, x: &[f32]) -> (Vec<f32>, LayerNormCache);

    /// The gradient with respect to a layer norm's input.
    fn layer_norm_backward_input(
        &self,
        ln: &LayerNorm,
        cache: &LayerNormCache,
        dy: &[f32],
    ) -> Vec<f32>;

    /// Multi-head attention over a packed `[q | k | v]` buffer (tokens x 3 width); `keep`
    /// receives the probabilities if asked.
    fn attention(
        &self,
        qkv: &[f32],
        shape: AttentionShape,
        causal: bool,
        keep: KeepProbs,
    ) -> Vec<f32>;

    /// The gradient with respect to `qkv`, summed over the query rows `sum_from..tokens`
    /// (one row of 3 width values), given every head's probabilities.
    fn attention_backward_row_sum(
        &self,
        qkv: &[f32],
        probs: &[f32],
        d_out: &[f32],
        shape: AttentionShape,
        sum_from: usize,
    ) -> Vec<f32>;

    /// QuickGELU in place: `x * sigmoid(1.702 x)`.
    fn quick_gelu(&self, x: &mut [f32]);

    /// `dy *= QuickGELU'(x)` in place.
    fn quick_gelu_backward(&self, dy: &mut [f32], x: &[f32]);

    /// Softmax of one vector in place.
    fn softmax(&self, x: &mut [f32]);

    /// `acc += x`.
    fn add_assign(&self, acc: &mut [f32], x: &[f32]);

    /// `acc *= s`.
    fn scale(&self, acc: &mut [f32], s: f32);

    /// The product of row-major `a` (m x k) and `b` (k x n): m x n.
    fn matmul(&self, a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32>;
}

/// The CPU backend: the kernels of [`crate::kernels`], parallel over rayon's current pool.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu;

/// The CPU backend, shared.
pub fn cpu() -> Arc<dyn Backend> {
    Arc::new(Cpu)
}

impl Backend for Cpu {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn linear(&self, layer: &Linear, x: &[f32], rows: usize) -> Vec<f32> {
        layer.forward(x, rows)
    }

    fn linear_backward_input(&self, layer: &Linear, dy: &[f32], rows: usize) -> Vec<f32> {
        layer.backward_input(dy, rows)
    }

    fn layer_norm(&self, ln: &LayerNorm, x: &[f32]) -> Vec<f32> {
        ln.forward(x)
    }

    fn layer_norm_cached(&self, ln: &LayerNorm, x: &[f32]) -> (Vec<f32>, LayerNormCache) {
        ln.forward_cached(x)
    }

    fn layer_norm_backward_input(
        &self,
        ln: &LayerNorm,
        cache: &LayerNormCache,
        dy: &[f32],
    ) -> Vec<f32> {
        ln.backward_input(cache, dy)
    }

    fn attention(
        &self,
        qkv: &[f32],
        shape: AttentionShape,
        causal: bool,
        keep: KeepProbs,
    ) -> Vec<f32> {
        kernels::attention_forward(qkv, shape, causal, keep)
    }

    fn attention_backward_row_sum(
        &self,
        qkv: &[f32],
        probs: &[f32],
        d_out: &[f32],
        shape: AttentionShape,
        sum_from: usize,
    ) -> Vec<f32> {
        kernels::attention_backward_row_sum(qkv, probs, d_out, shape, sum_from)
    }

    fn quick_gelu(&self, x: &mut [f32]) {
        kernels::quick_gelu_inplace(x)
    }

    fn quick_gelu_backward(&self, dy: &mut [f32], x: &[f32]) {
        kernels::quick_gelu_backward_inplace(dy, x)
    }

    fn softmax(&self, x: &mut [f32]) {
        kernels::softmax_inplace(x)
    }

    fn add_assign(&self, acc: &mut [f32], x: &[f32]) {
        kernels::add_assign(acc, x)
    }

    fn scale(&self, acc: &mut [f32], s: f32) {
        kernels::scale_inplace(acc, s)
    }

    fn matmul(&self, a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        kernels::matmul(
            m,
            n,
            k,
            &mut out,
            n,
            false,
            MatRef::rows(a, k),
            MatRef::rows(b, n),
            None,
        );
        out
    }
}
