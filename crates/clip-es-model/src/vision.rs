//! CLIP's vision transformer at any input size (reference `clip/model.py` `VisionTransformer`
//! and `CLIP.forward_last_layer`; docs/algorithm.md, "Image side"): the plain forward pass, and
//! a forward pass with the last block's intermediates cached plus the backward pass from a
//! gradient on the patch-mean embedding that a gradient-based explanation (the CLIP-ES method
//! in the `clip-es` crate) needs.
//!
//! The input may be any size that is a multiple of the patch size: the pretrained positional
//! embedding grid is resized bilinearly (`align_corners = false`) to the token grid.

use crate::backend::{cpu, Backend};
use crate::config::VisionConfig;
use crate::kernels::{KeepProbs, LayerNorm, LayerNormCache, Linear};
use crate::tensors::{ModelError, TensorSource};
use crate::transformer::{layer_norm, project_row, BlockCache, ResidualBlock};
use std::sync::Arc;

/// CLIP ViT image encoder.
#[derive(Clone, Debug)]
pub struct VisionTransformer {
    config: VisionConfig,
    /// Output dimension of `proj`.
    embed_dim: usize,
    /// `conv1` as a matrix: width x (3 * patch * patch), columns in (channel, row, col) order.
    patch_embed: Linear,
    class_embedding: Vec<f32>,
    /// (grid * grid + 1) x width.
    positional_embedding: Vec<f32>,
    ln_pre: LayerNorm,
    blocks: Vec<ResidualBlock>,
    ln_post: LayerNorm,
    /// width x embed_dim (`x @ proj`).
    proj: Vec<f32>,
    backend: Arc<dyn Backend>,
}

/// What a forward pass keeps and uses besides the pixels.
#[derive(Clone, Copy, Debug, Default)]
pub struct VisionOptions<'a> {
    /// Keep the head-averaged attention probabilities of blocks `keep_attention_from..`
    /// (0: all blocks; `layers`: none).
    pub keep_attention_from: usize,
    /// The positional embedding to add ((grid_h * grid_w + 1) x width) instead of
    /// [`VisionTransformer::positional_embedding_for`] of the input's grid. A method that
    /// changes it (CLIP-ES rounds it to float16) passes its own.
    pub positional_embedding: Option<&'a [f32]>,
    /// Also project every patch token ([`VisionOutput::patch_embeddings`]); only label-free
    /// tagging needs them.
    pub patch_embeddings: bool,
}

/// Everything the image tower returns for one image.
#[derive(Clone, Debug)]
pub struct VisionOutput {
    pub grid_h: usize,
    pub grid_w: usize,
    /// Head-averaged attention probabilities of blocks `keep_attention_from..layers`, each
    /// tokens x tokens (token 0 is the class token, then the patches in row-major order).
    pub attention: Vec<Vec<f32>>,
    /// Output of the last block's `ln_1` (tokens x width).
    pub last_ln_1: Vec<f32>,
    /// CLIP's classification embedding: `ln_post(x[0]) @ proj`.
    pub cls_embedding: Vec<f32>,
    /// CLIP-ES's embedding: the mean of `ln_post(x)` over the patch tokens, `@ proj`.
    pub patch_mean_embedding: Vec<f32>,
    /// Every patch token's `ln_post(x_i) @ proj` (patches x embed_dim, row-major): the local
    /// embeddings that label-free tagging classifies patch by patch. Empty unless
    /// [`VisionOptions::patch_embeddings`] asked for them.
    pub patch_embeddings: Vec<f32>,
}

impl VisionOutput {
    pub fn tokens(&self) -> usize {
        self.grid_h * self.grid_w + 1
    }
}

/// A forward pass that keeps what a backward pass through the last block needs
/// ([`VisionTransformer::forward_cached`], [`VisionTransformer::backward_patch_mean`]).
#[derive(Clone, Debug)]
pub struct CachedForward {
    pub grid_h: usize,
    pub grid_w: usize,
    /// Head-averaged attention of blocks `keep_attention_from..layers` (tokens x tokens each).
    pub attention: Vec<Vec<f32>>,
    /// The patch-mean pooled embedding: the mean of `ln_post(x)` over the patch tokens,
    /// `@ proj` (not normalised).
    pub patch_mean_embedding: Vec<f32>,
    last: BlockCache,
    post: LayerNormCache,
}

impl CachedForward {
    pub fn tokens(&self) -> usize {
        self.grid_h * self.grid_w + 1
    }

    /// The output of the last block's `ln_1` (tokens x width; row 0 is the class token).
    pub fn last_ln_1(&self) -> &[f32] {
        &self.last.ln_1_out
    }
}

impl VisionTransformer {
    /// Builds the tower from OpenAI-named weights (`visual.*`) on the CPU backend.
    pub fn new(
        src: &dyn TensorSource,
        config: &VisionConfig,
        embed_dim: usize,
        eps: f64,
    ) -> Result<Self, ModelError> {
        let (w, p, g) = (config.width, config.patch_size, config.grid);
        let eps = eps as f32;
        let blocks = (0..config.layers)
            .map(|i| {
                ResidualBlock::new(
                    src,
                    &format!("visual.transformer.resblocks.{i}"),
                    w,
                    config.heads,
                    eps,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(VisionTransformer {
            config: config.clone(),
            embed_dim,
            patch_embed: Linear::new(
                src.tensor_f32("visual.conv1.weight", &[w, 3, p, p])?,
                None,
                w,
                3 * p * p,
            ),
            class_embedding: src.tensor_f32("visual.class_embedding", &[w])?,
            positional_embedding: src.tensor_f32("visual.positional_embedding", &[g * g + 1, w])?,
            ln_pre: layer_norm(src, "visual.ln_pre", w, eps)?,
            blocks,
            ln_post: layer_norm(src, "visual.ln_post", w, eps)?,
            proj: src.tensor_f32("visual.proj", &[w, embed_dim])?,
            backend: cpu(),
        })
    }

    /// The same tower running on another backend.
    pub fn with_backend(mut self, backend: Arc<dyn Backend>) -> Self {
        self.backend = backend;
        self
    }

    /// The backend the tower runs on.
    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    pub fn config(&self) -> &VisionConfig {
        &self.config
    }

    /// Output dimension of the projection (the joint embedding space).
    pub fn embed_dim(&self) -> usize {
        self.embed_dim
    }

    pub fn width(&self) -> usize {
        self.config.width
    }

    /// Number of residual blocks.
    pub fn layers(&self) -> usize {
        self.blocks.len()
    }

    pub fn patch_size(&self) -> usize {
        self.config.patch_size
    }

    /// Checks an input size and returns its token grid.
    pub fn grid_for(&self, height: usize, width: usize) -> Result<(usize, usize), ModelError> {
        let p = self.config.patch_size;
        if height < p || width < p || !height.is_multiple_of(p) || !width.is_multiple_of(p) {
            return Err(ModelError::Input(format!(
                "image input is {width}x{height}; both sides must be positive multiples of the patch size {p}"
            )));
        }
        Ok((height / p, width / p))
    }

    /// The positional embedding for a grid_h x grid_w token grid: the class position as it
    /// is, the pretrained grid resized bilinearly (`align_corners = false`).
    pub fn positional_embedding_for(&self, grid_h: usize, grid_w: usize) -> Vec<f32> {
        let w = self.width();
        let g = self.config.grid;
        let mut out = vec![0f32; (grid_h * grid_w + 1) * w];
        out[..w].copy_from_slice(&self.positional_embedding[..w]);
        let resized =
            resize_bilinear_channels_last(&self.positional_embedding[w..], g, g, grid_h, grid_w, w);
        out[w..].copy_from_slice(&resized);
        out
    }

    /// Patch embedding, class token, positional embedding and `ln_pre`: tokens x width.
    /// `pixels` is the normalised image, CHW (3 x height x width).
    pub fn embed(
        &self,
        pixels: &[f32],
        height: usize,
        width: usize,
        positional_embedding: Option<&[f32]>,
    ) -> Result<Vec<f32>, ModelError> {
        let (gh, gw) = self.grid_for(height, width)?;
        if pixels.len() != 3 * height * width {
            return Err(ModelError::Input(format!(
                "image input has {} values, expected 3 x {height} x {width}",
                pixels.len()
            )));
        }
        let p = self.config.patch_size;
        let d = self.width();
        let tokens = gh * gw + 1;
        if let Some(pos) = positional_embedding {
            if pos.len() != tokens * d {
                return Err(ModelError::Input(format!(
                    "positional embedding has {} values, expected {tokens} x {d}",
                    pos.len()
                )));
            }
        }
        // im2col: one row per patch, (channel, ky, kx) order like conv1's weight.
        let mut cols = vec![0f32; gh * gw * 3 * p * p];
        for gy in 0..gh {
            for gx in 0..gw {
                let row = &mut cols[(gy * gw + gx) * 3 * p * p..][..3 * p * p];
                for c in 0..3 {
                    for ky in 0..p {
                        let src =
                            &pixels[c * height * width + (gy * p + ky) * width + gx * p..][..p];
                        row[(c * p + ky) * p..][..p].copy_from_slice(src);
                    }
                }
            }
        }
        let be = self.backend();
        let patches = be.linear(&self.patch_embed, &cols, gh * gw);
        let mut x = vec![0f32; tokens * d];
        x[..d].copy_from_slice(&self.class_embedding);
        x[d..].copy_from_slice(&patches);
        match positional_embedding {
            Some(pos) => be.add_assign(&mut x, pos),
            None => be.add_assign(&mut x, &self.positional_embedding_for(gh, gw)),
        }
        Ok(be.layer_norm(&self.ln_pre, &x))
    }

    /// Runs blocks `0..last` over `x`, returning the head-mean attention of blocks
    /// `keep_from..last`.
    fn run_blocks(
        &self,
        x: &mut [f32],
        tokens: usize,
        last: usize,
        keep_from: usize,
    ) -> Vec<Vec<f32>> {
        let be = self.backend();
        let mut kept = Vec::new();
        for (i, block) in self.blocks[..last].iter().enumerate() {
            if i >= keep_from {
                let mut mean = vec![0f32; tokens * tokens];
                block.forward(be, x, tokens, false, KeepProbs::HeadMean(&mut mean));
                kept.push(mean);
            } else {
                block.forward(be, x, tokens, false, KeepProbs::None);
            }
        }
        kept
    }

    /// `@ proj` of one row of width values.
    fn project(&self, row: &[f32]) -> Vec<f32> {
        project_row(row, &self.proj, self.embed_dim)
    }

    /// Encodes one image (normalised CHW pixels whose sides are multiples of the patch size).
    pub fn encode(
        &self,
        pixels: &[f32],
        height: usize,
        width: usize,
        opts: VisionOptions,
    ) -> Result<VisionOutput, ModelError> {
        let (gh, gw) = self.grid_for(height, width)?;
        let tokens = gh * gw + 1;
        let d = self.width();
        let layers = self.blocks.len();
        let be = self.backend();
        let mut x = self.embed(pixels, height, width, opts.positional_embedding)?;
        let mut attention = self.run_blocks(&mut x, tokens, layers - 1, opts.keep_attention_from);
        let last = &self.blocks[layers - 1];
        let last_ln_1 = be.layer_norm(last.ln_1(), &x);
        if layers > opts.keep_attention_from {
            let mut mean = vec![0f32; tokens * tokens];
            last.forward(be, &mut x, tokens, false, KeepProbs::HeadMean(&mut mean));
            attention.push(mean);
        } else {
            last.forward(be, &mut x, tokens, false, KeepProbs::None);
        }
        let y = be.layer_norm(&self.ln_post, &x);
        let cls_embedding = self.project(&y[..d]);
        let mean = mean_rows(be, &y[d..], d);
        let patch_mean_embedding = self.project(&mean);
        let patch_embeddings = if opts.patch_embeddings {
            y[d..]
                .chunks_exact(d)
                .flat_map(|r| self.project(r))
                .collect()
        } else {
            Vec::new()
        };
        Ok(VisionOutput {
            grid_h: gh,
            grid_w: gw,
            attention,
            last_ln_1,
            cls_embedding,
            patch_mean_embedding,
            patch_embeddings,
        })
    }

    /// The forward pass up to the patch-mean embedding, keeping the last block's
    /// intermediates for [`VisionTransformer::backward_patch_mean`]. The frozen blocks run
    /// once without caches; the last one caches what its backward pass needs.
    pub fn forward_cached(
        &self,
        pixels: &[f32],
        height: usize,
        width: usize,
        opts: VisionOptions,
    ) -> Result<CachedForward, ModelError> {
        let (gh, gw) = self.grid_for(height, width)?;
        let tokens = gh * gw + 1;
        let d = self.width();
        let layers = self.blocks.len();
        let be = self.backend();
        let mut x = self.embed(pixels, height, width, opts.positional_embedding)?;
        let mut attention = self.run_blocks(&mut x, tokens, layers - 1, opts.keep_attention_from);
        let last_block = &self.blocks[layers - 1];
        let last = last_block.forward_cached(be, &mut x, tokens);
        if layers > opts.keep_attention_from {
            attention.push(last_block.head_mean_probs(be, &last));
        }
        let (y, post) = be.layer_norm_cached(&self.ln_post, &x);
        let patch_mean_embedding = self.project(&mean_rows(be, &y[d..], d));
        Ok(CachedForward {
            grid_h: gh,
            grid_w: gw,
            attention,
            patch_mean_embedding,
            last,
            post,
        })
    }

    /// Backward pass from a gradient on the patch-mean embedding (`d_embedding`, embed_dim
    /// values) to the output of the last block's `ln_1`, summed over the patch tokens (width
    /// values): through `@ proj`, the mean over the patches, `ln_post` and the last block
    /// (activations only: the weights are frozen).
    pub fn backward_patch_mean(&self, fwd: &CachedForward, d_embedding: &[f32]) -> Vec<f32> {
        let (d, e) = (self.width(), self.embed_dim);
        assert_eq!(d_embedding.len(), e, "gradient of the embedding");
        let tokens = fwd.tokens();
        let patches = tokens - 1;
        let be = self.backend();
        // Through `@ proj` and the mean over patches: every patch row gets de / patches.
        let mut dy = vec![0f32; tokens * d];
        for dd in 0..d {
            let pr = &self.proj[dd * e..(dd + 1) * e];
            dy[d + dd] = dot(pr, d_embedding) / patches as f32;
        }
        let (first, rest) = dy.split_at_mut(2 * d);
        let row = first[d..].to_vec();
        for r in rest.chunks_exact_mut(d) {
            r.copy_from_slice(&row);
        }
        let dx = be.layer_norm_backward_input(&self.ln_post, &fwd.post, &dy);
        self.blocks[self.blocks.len() - 1].backward_to_ln_1_row_sum(be, &fwd.last, &dx, 1)
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Mean of the rows of a rows x d matrix.
fn mean_rows(be: &dyn Backend, x: &[f32], d: usize) -> Vec<f32> {
    let rows = x.len() / d;
    let mut m = vec![0f32; d];
    for r in x.chunks_exact(d) {
        be.add_assign(&mut m, r);
    }
    be.scale(&mut m, 1.0 / rows as f32);
    m
}

/// Bilinear resize of an `in_h x in_w` grid of `c`-vectors (channels last) to `out_h x out_w`,
/// as `torch.nn.functional.interpolate(mode="bilinear", align_corners=False)` computes it:
/// source coordinate `(o + 0.5) * in / out - 0.5`, clamped at 0, neighbours clamped at the edge.
pub fn resize_bilinear_channels_last(
    src: &[f32],
    in_h: usize,
    in_w: usize,
    out_h: usize,
    out_w: usize,
    c: usize,
) -> Vec<f32> {
    assert_eq!(src.len(), in_h * in_w * c);
    let taps = |inp: usize, out: usize| -> Vec<(usize, usize, f32, f32)> {
        let scale = inp as f32 / out as f32;
        (0..out)
            .map(|o| {
                let s = (scale * (o as f32 + 0.5) - 0.5).max(0.0);
                let i0 = (s as usize).min(inp - 1);
                let i1 = if i0 + 1 < inp { i0 + 1 } else { i0 };
                let l1 = s - i0 as f32;
                (i0, i1, 1.0 - l1, l1)
            })
            .collect()
    };
    let (ty, tx) = (taps(in_h, out_h), taps(in_w, out_w));
    let mut out = vec![0f32; out_h * out_w * c];
    for (oy, &(y0, y1, wy0, wy1)) in ty.iter().enumerate() {
        for (ox, &(x0, x1, wx0, wx1)) in tx.iter().enumerate() {
            let dst = &mut out[(oy * out_w + ox) * c..][..c];
            let p00 = &src[(y0 * in_w + x0) * c..][..c];
            let p01 = &src[(y0 * in_w + x1) * c..][..c];
            let p10 = &src[(y1 * in_w + x0) * c..][..c];
            let p11 = &src[(y1 * in_w + x1) * c..][..c];
            for k in 0..c {
                dst[k] = wy0 * (wx0 * p00[k] + wx1 * p01[k]) + wy1 * (wx0 * p10[k] + wx1 * p11[k]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_to_same_size_is_identity() {
        let src: Vec<f32> = (0..3 * 4 * 2).map(|v| v as f32 * 0.37).collect();
        assert_eq!(resize_bilinear_channels_last(&src, 3, 4, 3, 4, 2), src);
    }

    #[test]
    fn resize_matches_hand_computed_values() {
        // 2x2 -> 4x4, one channel: torch gives rows [1, 1.25, 1.75, 2] for input [[1, 2], [3, 4]].
        let out = resize_bilinear_channels_last(&[1.0, 2.0, 3.0, 4.0], 2, 2, 4, 4, 1);
        let want = [
            1.0, 1.25, 1.75, 2.0, 1.5, 1.75, 2.25, 2.5, 2.5, 2.75, 3.25, 3.5, 3.0, 3.25, 3.75, 4.0,
        ];
        for (a, b) in out.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{out:?}");
        }
    }
}
