//! The pre-norm residual attention block shared by CLIP's image and text towers
//! (reference `clip/model.py`, `ResidualAttentionBlock`):
//! `x = x + attn(ln_1(x)); x = x + mlp(ln_2(x))`, MLP = Linear(d, 4d), QuickGELU, Linear(4d, d).
//!
//! Besides the plain forward pass, [`ResidualBlock::forward_cached`] keeps what the
//! activation-only backward pass of Softmax-GradCAM needs (docs/algorithm.md, "Softmax-GradCAM").
//! The maths runs on a [`Backend`].

use crate::backend::Backend;
use crate::kernels::{AttentionShape, KeepProbs, LayerNorm, LayerNormCache, Linear};
use crate::tensors::{ModelError, TensorSource};

#[derive(Clone, Debug)]
pub struct ResidualBlock {
    ln_1: LayerNorm,
    /// Packed q, k, v projection (3d x d), as `nn.MultiheadAttention.in_proj_weight`.
    in_proj: Linear,
    out_proj: Linear,
    ln_2: LayerNorm,
    c_fc: Linear,
    c_proj: Linear,
    heads: usize,
}

/// `row @ proj` for one row of `proj.len() / e` values (`proj` is rows x e, row-major): the
/// projection into the joint embedding space of both towers.
pub(crate) fn project_row(row: &[f32], proj: &[f32], e: usize) -> Vec<f32> {
    let mut z = vec![0f32; e];
    for (d, &v) in row.iter().enumerate() {
        for (zj, &p) in z.iter_mut().zip(&proj[d * e..(d + 1) * e]) {
            *zj += v * p;
        }
    }
    z
}

pub(crate) fn layer_norm(
    src: &dyn TensorSource,
    prefix: &str,
    d: usize,
    eps: f32,
) -> Result<LayerNorm, ModelError> {
    Ok(LayerNorm::new(
        src.tensor_f32(&format!("{prefix}.weight"), &[d])?,
        src.tensor_f32(&format!("{prefix}.bias"), &[d])?,
        eps,
    ))
}

fn linear(
    src: &dyn TensorSource,
    w: &str,
    b: &str,
    out: usize,
    inp: usize,
) -> Result<Linear, ModelError> {
    Ok(Linear::new(
        src.tensor_f32(w, &[out, inp])?,
        Some(src.tensor_f32(b, &[out])?),
        out,
        inp,
    ))
}

/// Intermediate values of one block's forward pass, for
/// [`ResidualBlock::backward_to_ln_1_row_sum`].
#[derive(Clone, Debug)]
pub struct BlockCache {
    pub tokens: usize,
    /// Output of `ln_1`: the activation Softmax-GradCAM explains (tokens x d).
    pub ln_1_out: Vec<f32>,
    /// Packed q, k, v (tokens x 3d).
    qkv: Vec<f32>,
    /// Every head's attention probabilities (heads x tokens x tokens).
    probs: Vec<f32>,
    ln_2: LayerNormCache,
    /// MLP pre-activation (tokens x 4d).
    fc_pre: Vec<f32>,
}

impl ResidualBlock {
    /// Loads `{prefix}.attn.in_proj_weight`, `{prefix}.ln_1.weight`, ... (OpenAI names).
    pub fn new(
        src: &dyn TensorSource,
        prefix: &str,
        width: usize,
        heads: usize,
        eps: f32,
    ) -> Result<Self, ModelError> {
        if heads == 0 || !width.is_multiple_of(heads) {
            return Err(ModelError::Input(format!(
                "{prefix}: width {width} is not divisible into {heads} heads"
            )));
        }
        let p = |s: &str| format!("{prefix}.{s}");
        Ok(ResidualBlock {
            ln_1: layer_norm(src, &p("ln_1"), width, eps)?,
            in_proj: linear(
                src,
                &p("attn.in_proj_weight"),
                &p("attn.in_proj_bias"),
                3 * width,
                width,
            )?,
            out_proj: linear(
                src,
                &p("attn.out_proj.weight"),
                &p("attn.out_proj.bias"),
                width,
                width,
            )?,
            ln_2: layer_norm(src, &p("ln_2"), width, eps)?,
            c_fc: linear(
                src,
                &p("mlp.c_fc.weight"),
                &p("mlp.c_fc.bias"),
                4 * width,
                width,
            )?,
            c_proj: linear(
                src,
                &p("mlp.c_proj.weight"),
                &p("mlp.c_proj.bias"),
                width,
                4 * width,
            )?,
            heads,
        })
    }

    pub fn width(&self) -> usize {
        self.ln_1.dim()
    }

    /// The block's `ln_1` (its output is the activation Softmax-GradCAM explains).
    pub fn ln_1(&self) -> &LayerNorm {
        &self.ln_1
    }

    fn shape(&self, tokens: usize) -> AttentionShape {
        AttentionShape {
            tokens,
            width: self.width(),
            heads: self.heads,
        }
    }

    /// One sequence of `tokens` rows, updated in place. `keep` receives the attention
    /// probabilities (head mean or all heads) if asked.
    pub fn forward(
        &self,
        be: &dyn Backend,
        x: &mut [f32],
        tokens: usize,
        causal: bool,
        keep: KeepProbs,
    ) {
        let h = be.layer_norm(&self.ln_1, x);
        let qkv = be.linear(&self.in_proj, &h, tokens);
        let attn = be.attention(&qkv, self.shape(tokens), causal, keep);
        let attn = be.linear(&self.out_proj, &attn, tokens);
        be.add_assign(x, &attn);
        self.mlp_residual(be, x, tokens);
    }

    /// Several sequences of `tokens` rows each (the linear layers see all rows at once).
    pub fn forward_batch(
        &self,
        be: &dyn Backend,
        x: &mut [f32],
        batch: usize,
        tokens: usize,
        causal: bool,
    ) {
        let d = self.width();
        let h = be.layer_norm(&self.ln_1, x);
        let qkv = be.linear(&self.in_proj, &h, batch * tokens);
        let mut attn = vec![0f32; batch * tokens * d];
        for b in 0..batch {
            let out = be.attention(
                &qkv[b * tokens * 3 * d..(b + 1) * tokens * 3 * d],
                self.shape(tokens),
                causal,
                KeepProbs::None,
            );
            attn[b * tokens * d..(b + 1) * tokens * d].copy_from_slice(&out);
        }
        let attn = be.linear(&self.out_proj, &attn, batch * tokens);
        be.add_assign(x, &attn);
        self.mlp_residual(be, x, batch * tokens);
    }

    fn mlp_residual(&self, be: &dyn Backend, x: &mut [f32], rows: usize) {
        let h = be.layer_norm(&self.ln_2, x);
        let mut f = be.linear(&self.c_fc, &h, rows);
        be.quick_gelu(&mut f);
        let m = be.linear(&self.c_proj, &f, rows);
        be.add_assign(x, &m);
    }

    /// Forward pass (not causal) keeping every intermediate the backward pass needs.
    pub fn forward_cached(&self, be: &dyn Backend, x: &mut [f32], tokens: usize) -> BlockCache {
        let ln_1_out = be.layer_norm(&self.ln_1, x);
        let qkv = be.linear(&self.in_proj, &ln_1_out, tokens);
        let mut probs = vec![0f32; self.heads * tokens * tokens];
        let attn = be.attention(
            &qkv,
            self.shape(tokens),
            false,
            KeepProbs::AllHeads(&mut probs),
        );
        let attn = be.linear(&self.out_proj, &attn, tokens);
        be.add_assign(x, &attn);
        let (h, ln_2) = be.layer_norm_cached(&self.ln_2, x);
        let fc_pre = be.linear(&self.c_fc, &h, tokens);
        let mut f = fc_pre.clone();
        be.quick_gelu(&mut f);
        let m = be.linear(&self.c_proj, &f, tokens);
        be.add_assign(x, &m);
        BlockCache {
            tokens,
            ln_1_out,
            qkv,
            probs,
            ln_2,
            fc_pre,
        }
    }

    /// The head-averaged attention probabilities of a cached forward pass (tokens x tokens).
    pub fn head_mean_probs(&self, be: &dyn Backend, cache: &BlockCache) -> Vec<f32> {
        let nn = cache.tokens * cache.tokens;
        let mut mean = vec![0f32; nn];
        for p in cache.probs.chunks_exact(nn) {
            be.add_assign(&mut mean, p);
        }
        be.scale(&mut mean, 1.0 / self.heads as f32);
        mean
    }

    /// Gradient of a loss with respect to this block's `ln_1` output, summed over the rows
    /// `sum_from..tokens`, given the gradient `d_out` with respect to the block's output
    /// (tokens x d). Only the attention branch depends on the `ln_1` output, so the gradient
    /// flows through the MLP branch into the attention output and from there into q, k, v.
    pub fn backward_to_ln_1_row_sum(
        &self,
        be: &dyn Backend,
        cache: &BlockCache,
        d_out: &[f32],
        sum_from: usize,
    ) -> Vec<f32> {
        let n = cache.tokens;
        // d x1 = d x2 + LN2^T( W_fc^T (gelu'(f) * (W_proj^T d x2)) )
        let mut dg = be.linear_backward_input(&self.c_proj, d_out, n);
        be.quick_gelu_backward(&mut dg, &cache.fc_pre);
        let du = be.linear_backward_input(&self.c_fc, &dg, n);
        let mut dx1 = be.layer_norm_backward_input(&self.ln_2, &cache.ln_2, &du);
        be.add_assign(&mut dx1, d_out);
        // Attention output projection, then the attention itself.
        let d_attn = be.linear_backward_input(&self.out_proj, &dx1, n);
        let dqkv_sum = be.attention_backward_row_sum(
            &cache.qkv,
            &cache.probs,
            &d_attn,
            self.shape(n),
            sum_from,
        );
        // ln_1 output -> qkv is linear: sum_i dA_i = (sum_i dqkv_i) W_in.
        be.linear_backward_input(&self.in_proj, &dqkv_sum, 1)
    }
}
