//! CLIP's vision transformer at any input size, and the Softmax-GradCAM gradients of
//! CLIP-ES (paper sections 3.1-3.2; reference `clip/model.py` `VisionTransformer`,
//! `CLIP.forward_last_layer`, and `generate_cams_voc12.py` with `pytorch_grad_cam`).
//!
//! The input may be any size that is a multiple of the patch size: the pretrained positional
//! embedding grid is resized bilinearly (`align_corners = false`) to the token grid.

use crate::config::VisionConfig;
use crate::kernels::{self, KeepProbs, LayerNorm, Linear};
use crate::tensors::{ModelError, TensorSource};
use crate::transformer::{layer_norm, ResidualBlock};

/// CLIP ViT image encoder.
#[derive(Clone, Debug)]
pub struct VisionTransformer {
    pub config: VisionConfig,
    /// Output dimension of `proj`.
    pub embed_dim: usize,
    /// `conv1` as a matrix: width x (3 * patch * patch), columns in (channel, row, col) order.
    patch_embed: Linear,
    class_embedding: Vec<f32>,
    /// (grid * grid + 1) x width.
    positional_embedding: Vec<f32>,
    ln_pre: LayerNorm,
    pub blocks: Vec<ResidualBlock>,
    ln_post: LayerNorm,
    /// width x embed_dim (`x @ proj`).
    proj: Vec<f32>,
}

/// What [`VisionTransformer::encode`] keeps besides the embeddings.
#[derive(Clone, Copy, Debug, Default)]
pub struct VisionOptions {
    /// Keep the head-averaged attention probabilities of blocks `keep_attention_from..`
    /// (0: all blocks; `layers`: none).
    pub keep_attention_from: usize,
    /// Round the resized positional embedding to float16, as the CLIP-ES reference does
    /// (`upsample_pos_emb` returns a half parameter); off gives plain CLIP.
    pub round_pos_embed_f16: bool,
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
    /// embeddings that label-free tagging classifies patch by patch.
    pub patch_embeddings: Vec<f32>,
}

impl VisionOutput {
    pub fn tokens(&self) -> usize {
        self.grid_h * self.grid_w + 1
    }
}

/// The Softmax-GradCAM ingredients for one image and several target classes.
#[derive(Clone, Debug)]
pub struct GradCamOutput {
    pub grid_h: usize,
    pub grid_w: usize,
    /// The last block's `ln_1` output at the patch tokens (patches x width): the activation A.
    pub activation: Vec<f32>,
    /// For each target: the gradient of its softmax probability with respect to A, averaged
    /// over the patch positions (width values): the GradCAM channel weights.
    pub channel_weights: Vec<Vec<f32>>,
    /// Softmax over all given classes.
    pub probabilities: Vec<f32>,
    /// Head-averaged attention of blocks `keep_attention_from..layers`, the last one from the
    /// gradient pass (tokens x tokens each).
    pub attention: Vec<Vec<f32>>,
    /// Seconds spent in the forward pass and in the backward passes.
    pub forward_seconds: f64,
    pub backward_seconds: f64,
}

impl VisionTransformer {
    /// Builds the tower from OpenAI-named weights (`visual.*`).
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
        })
    }

    pub fn width(&self) -> usize {
        self.config.width
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

    /// The positional embedding for a grid_h x grid_w token grid (class position kept).
    pub fn positional_embedding_for(
        &self,
        grid_h: usize,
        grid_w: usize,
        round_f16: bool,
    ) -> Vec<f32> {
        let w = self.width();
        let g = self.config.grid;
        let mut out = vec![0f32; (grid_h * grid_w + 1) * w];
        out[..w].copy_from_slice(&self.positional_embedding[..w]);
        let resized =
            resize_bilinear_channels_last(&self.positional_embedding[w..], g, g, grid_h, grid_w, w);
        out[w..].copy_from_slice(&resized);
        if round_f16 {
            for v in &mut out[w..] {
                *v = half::f16::from_f32(*v).to_f32();
            }
        }
        out
    }

    /// Patch embedding, class token, positional embedding and `ln_pre`: tokens x width.
    /// `pixels` is the normalised image, CHW (3 x height x width).
    pub fn embed(
        &self,
        pixels: &[f32],
        height: usize,
        width: usize,
        round_pos_f16: bool,
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
        let patches = self.patch_embed.forward(&cols, gh * gw);
        let mut x = vec![0f32; (gh * gw + 1) * d];
        x[..d].copy_from_slice(&self.class_embedding);
        x[d..].copy_from_slice(&patches);
        let pos = self.positional_embedding_for(gh, gw, round_pos_f16);
        kernels::add_assign(&mut x, &pos);
        Ok(self.ln_pre.forward(&x))
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
        let mut kept = Vec::new();
        for (i, block) in self.blocks[..last].iter().enumerate() {
            if i >= keep_from {
                let mut mean = vec![0f32; tokens * tokens];
                block.forward(x, tokens, false, KeepProbs::HeadMean(&mut mean));
                kept.push(mean);
            } else {
                block.forward(x, tokens, false, KeepProbs::None);
            }
        }
        kept
    }

    /// `ln_post` then `@ proj` of one row of width values.
    fn project(&self, row: &[f32]) -> Vec<f32> {
        let e = self.embed_dim;
        let mut z = vec![0f32; e];
        for (d, &v) in row.iter().enumerate() {
            let pr = &self.proj[d * e..(d + 1) * e];
            for j in 0..e {
                z[j] += v * pr[j];
            }
        }
        z
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
        let mut x = self.embed(pixels, height, width, opts.round_pos_embed_f16)?;
        let mut attention = self.run_blocks(&mut x, tokens, layers - 1, opts.keep_attention_from);
        let last = &self.blocks[layers - 1];
        let last_ln_1 = last.ln_1.forward(&x);
        if layers > opts.keep_attention_from {
            let mut mean = vec![0f32; tokens * tokens];
            last.forward(&mut x, tokens, false, KeepProbs::HeadMean(&mut mean));
            attention.push(mean);
        } else {
            last.forward(&mut x, tokens, false, KeepProbs::None);
        }
        let y = self.ln_post.forward(&x);
        let cls_embedding = self.project(&y[..d]);
        let mean = mean_rows(&y[d..], d);
        let patch_mean_embedding = self.project(&mean);
        let patch_embeddings = y[d..]
            .chunks_exact(d)
            .flat_map(|r| self.project(r))
            .collect();
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

    /// Softmax-GradCAM at the last block's `ln_1` output (CLIP-ES section 3.2).
    ///
    /// The image embedding is the patch-mean pooling, L2-normalised; the logits are
    /// `logit_scale * cos(image, class)` for the rows of `class_features` (classes x embed_dim,
    /// each normalised here again as the reference does), and softmax runs over all of them.
    /// For each index in `targets` the gradient of that class's softmax probability with
    /// respect to A (the `ln_1` output) is averaged over the patch positions. The frozen blocks
    /// run once; the last block runs once with its intermediates cached, and each target costs
    /// one activation-only backward pass through it.
    #[allow(clippy::too_many_arguments)]
    pub fn softmax_gradcam(
        &self,
        pixels: &[f32],
        height: usize,
        width: usize,
        class_features: &[f32],
        logit_scale: f32,
        targets: &[usize],
        opts: VisionOptions,
    ) -> Result<GradCamOutput, ModelError> {
        let (gh, gw) = self.grid_for(height, width)?;
        let (d, e) = (self.width(), self.embed_dim);
        if class_features.is_empty() || !class_features.len().is_multiple_of(e) {
            return Err(ModelError::Input(format!(
                "class features must be classes x {e} values"
            )));
        }
        let classes = class_features.len() / e;
        if let Some(&t) = targets.iter().find(|&&t| t >= classes) {
            return Err(ModelError::Input(format!(
                "target class {t} out of range for {classes} classes"
            )));
        }
        let tokens = gh * gw + 1;
        let patches = tokens - 1;
        let layers = self.blocks.len();

        let start = std::time::Instant::now();
        let mut x = self.embed(pixels, height, width, opts.round_pos_embed_f16)?;
        let mut attention = self.run_blocks(&mut x, tokens, layers - 1, opts.keep_attention_from);
        let last = &self.blocks[layers - 1];
        let cache = last.forward_cached(&mut x, tokens);
        if layers > opts.keep_attention_from {
            attention.push(last.head_mean_probs(&cache));
        }

        // Image embedding: mean of ln_post over the patch tokens, projected, normalised.
        let (y, post_cache) = self.ln_post.forward_cached(&x);
        let z = self.project(&mean_rows(&y[d..], d));
        let z_norm = norm(&z);
        let zn: Vec<f32> = z.iter().map(|v| v / z_norm).collect();
        let text: Vec<Vec<f32>> = class_features
            .chunks_exact(e)
            .map(|t| {
                let n = norm(t);
                t.iter().map(|v| v / n).collect()
            })
            .collect();
        let mut probabilities: Vec<f32> = text.iter().map(|t| logit_scale * dot(&zn, t)).collect();
        kernels::softmax_inplace(&mut probabilities);
        let forward_seconds = start.elapsed().as_secs_f64();

        let start = std::time::Instant::now();
        let channel_weights = targets
            .iter()
            .map(|&k| {
                // d p_k / d logit_c = p_k (delta_kc - p_c)
                let pk = probabilities[k];
                let mut dzn = vec![0f32; e];
                for (c, t) in text.iter().enumerate() {
                    let g = pk * (f32::from(c == k) - probabilities[c]) * logit_scale;
                    for j in 0..e {
                        dzn[j] += g * t[j];
                    }
                }
                // Through the normalisation z / |z|.
                let along = dot(&zn, &dzn);
                let dz: Vec<f32> = dzn
                    .iter()
                    .zip(&zn)
                    .map(|(g, u)| (g - u * along) / z_norm)
                    .collect();
                // Through `@ proj` and the mean over patches: every patch row gets de / patches.
                let mut dy = vec![0f32; tokens * d];
                for dd in 0..d {
                    let pr = &self.proj[dd * e..(dd + 1) * e];
                    dy[d + dd] = dot(pr, &dz) / patches as f32;
                }
                let (first, rest) = dy.split_at_mut(2 * d);
                let row = first[d..].to_vec();
                for r in rest.chunks_exact_mut(d) {
                    r.copy_from_slice(&row);
                }
                let dx = self.ln_post.backward_input(&post_cache, &dy);
                let mut w = last.backward_to_ln_1_row_sum(&cache, &dx, 1);
                kernels::scale_inplace(&mut w, 1.0 / patches as f32);
                w
            })
            .collect();

        let backward_seconds = start.elapsed().as_secs_f64();
        let activation = cache.ln_1_out[d..].to_vec();
        Ok(GradCamOutput {
            grid_h: gh,
            grid_w: gw,
            activation,
            channel_weights,
            probabilities,
            attention,
            forward_seconds,
            backward_seconds,
        })
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm(a: &[f32]) -> f32 {
    dot(a, a).sqrt()
}

/// Mean of the rows of a rows x d matrix.
fn mean_rows(x: &[f32], d: usize) -> Vec<f32> {
    let rows = x.len() / d;
    let mut m = vec![0f32; d];
    for r in x.chunks_exact(d) {
        kernels::add_assign(&mut m, r);
    }
    kernels::scale_inplace(&mut m, 1.0 / rows as f32);
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
