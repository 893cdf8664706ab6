//! Multi-head scaled dot-product attention over a packed `[q | k | v]` buffer, and the row sum
//! of its input gradient that Softmax-GradCAM needs.

use rayon::prelude::*;

use super::activations::{add_assign, scale_inplace, softmax_inplace};
use super::isa::{simd_level, SimdLevel};
use super::matmul::{matmul, matmul_scaled, MatRef};

multiversion! {
    /// dS = P * (dP - rowsum(P * dP)) for one softmax row, written over `dp`.
    fn softmax_backward_row(p: &[f32], dp: &mut [f32]) {
        let mut acc = [0f32; 16];
        let pc = p.chunks_exact(16);
        let pr = pc.remainder();
        let dc = dp.chunks_exact(16);
        let dr = dc.remainder();
        for (a, b) in pc.zip(dc) {
            for i in 0..16 {
                acc[i] += a[i] * b[i];
            }
        }
        let mut dot: f32 = acc.iter().sum();
        dot += pr.iter().zip(dr).map(|(a, b)| a * b).sum::<f32>();
        for (g, &pv) in dp.iter_mut().zip(p) {
            *g = pv * (*g - dot);
        }
    }
}

/// Shape of a multi-head attention over a packed `[q | k | v]` buffer (rows x 3*width).
#[derive(Clone, Copy, Debug)]
pub struct AttentionShape {
    pub tokens: usize,
    pub width: usize,
    pub heads: usize,
}

impl AttentionShape {
    pub fn head_dim(&self) -> usize {
        self.width / self.heads
    }
}

/// What to keep of the attention probabilities.
pub enum KeepProbs<'a> {
    None,
    /// The mean over heads, tokens x tokens.
    HeadMean(&'a mut [f32]),
    /// Every head's matrix, heads x tokens x tokens (for the backward pass).
    AllHeads(&'a mut [f32]),
}

/// A raw pointer that may cross threads; each thread writes a disjoint part.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    // A method (not field access) so closures capture the whole Send + Sync wrapper.
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Rows of queries processed together in [`attention_forward`]: their scores (rows x tokens)
/// stay in the core's cache between the product, the softmax and the product with V.
pub const ATTENTION_ROW_BLOCK: usize = 64;

/// Multi-head scaled dot-product attention, as `torch.nn.MultiheadAttention` computes it
/// (queries scaled by `head_dim^-0.5`). `qkv` is tokens x 3*width; the output is
/// tokens x width with the heads concatenated. `causal` masks j > i (text encoder).
///
/// Work is split by blocks of query rows, each running all heads in order: the scores of a
/// block never leave the cache, nothing of size heads x tokens x tokens is allocated unless
/// asked for, and the head mean is summed in a fixed order (reruns give identical bits).
pub fn attention_forward(
    qkv: &[f32],
    shape: AttentionShape,
    causal: bool,
    keep: KeepProbs,
) -> Vec<f32> {
    let AttentionShape {
        tokens: n,
        width: d,
        heads,
    } = shape;
    let hd = shape.head_dim();
    assert_eq!(qkv.len(), n * 3 * d);
    let scale = (hd as f32).powf(-0.5);
    let mut out = vec![0f32; n * d];
    let out_ptr = SendPtr(out.as_mut_ptr());
    let (mean_ptr, all_ptr) = match keep {
        KeepProbs::None => (None, None),
        KeepProbs::HeadMean(mean) => {
            assert_eq!(mean.len(), n * n);
            (Some(SendPtr(mean.as_mut_ptr())), None)
        }
        KeepProbs::AllHeads(all) => {
            assert_eq!(all.len(), heads * n * n);
            (None, Some(SendPtr(all.as_mut_ptr())))
        }
    };
    let rb = ATTENTION_ROW_BLOCK;
    // K^T of every head, contiguous (heads x head_dim x tokens): the score products then read
    // it as a plain row-major operand instead of repacking a strided view for every block.
    let mut kt = vec![0f32; d * n];
    kt.par_chunks_mut(hd * n).enumerate().for_each(|(h, kth)| {
        for (j, row) in qkv.chunks_exact(3 * d).enumerate() {
            for (t, &v) in row[d + h * hd..d + (h + 1) * hd].iter().enumerate() {
                kth[t * n + j] = v;
            }
        }
    });
    let blocks = n.div_ceil(rb);
    (0..blocks).into_par_iter().for_each_init(
        || vec![0f32; rb * n],
        |scratch, b| {
            let r0 = b * rb;
            let rows = rb.min(n - r0);
            let p = &mut scratch[..rows * n];
            // SAFETY: this task alone writes rows r0..r0+rows of `out`, of the head mean and of
            // every head's probabilities; the buffers outlive the parallel section.
            let out_rows =
                unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add(r0 * d), rows * d) };
            let mut mean_rows = mean_ptr
                .map(|m| unsafe { std::slice::from_raw_parts_mut(m.get().add(r0 * n), rows * n) });
            for h in 0..heads {
                let q = MatRef::rows(qkv, 3 * d).offset(r0 * 3 * d + h * hd);
                let k = MatRef::rows(&kt[h * hd * n..(h + 1) * hd * n], n);
                matmul_scaled(
                    rows,
                    n,
                    hd,
                    p,
                    n,
                    false,
                    q,
                    k,
                    scale,
                    Some(gemm::Parallelism::None),
                );
                for (i, row) in p.chunks_exact_mut(n).enumerate() {
                    let valid = if causal { r0 + i + 1 } else { n };
                    softmax_inplace(&mut row[..valid]);
                    row[valid..].fill(0.0);
                }
                if let Some(mean) = mean_rows.as_deref_mut() {
                    if h == 0 {
                        mean.copy_from_slice(p);
                    } else {
                        add_assign(mean, p);
                    }
                }
                if let Some(all) = all_ptr {
                    let dst = unsafe {
                        std::slice::from_raw_parts_mut(all.get().add(h * n * n + r0 * n), rows * n)
                    };
                    dst.copy_from_slice(p);
                }
                let v = MatRef::rows(qkv, 3 * d).offset(2 * d + h * hd);
                matmul(
                    rows,
                    hd,
                    n,
                    &mut out_rows[h * hd..],
                    d,
                    false,
                    MatRef::rows(p, n),
                    v,
                    Some(gemm::Parallelism::None),
                );
            }
            if let Some(mean) = mean_rows {
                scale_inplace(mean, 1.0 / heads as f32);
            }
        },
    );
    out
}

/// Gradient of a scalar loss with respect to the `[q | k | v]` input of
/// [`attention_forward`], reduced to its sum over a set of rows: Softmax-GradCAM only needs
/// the mean gradient over the patch positions, so the three per-head products that would
/// build every row of dq, dk and dv collapse into matrix-vector products.
///
/// `probs` are all heads' probabilities from the forward pass, `d_out` the upstream gradient
/// (tokens x width). Rows `sum_from..tokens` are summed. Returns 3*width values.
pub fn attention_backward_row_sum(
    qkv: &[f32],
    probs: &[f32],
    d_out: &[f32],
    shape: AttentionShape,
    sum_from: usize,
) -> Vec<f32> {
    let AttentionShape {
        tokens: n,
        width: d,
        heads,
    } = shape;
    let hd = shape.head_dim();
    assert_eq!(probs.len(), heads * n * n);
    assert_eq!(d_out.len(), n * d);
    let scale = (hd as f32).powf(-0.5);
    let per_head: Vec<Vec<f32>> = (0..heads)
        .into_par_iter()
        .map(|h| {
            let p = &probs[h * n * n..(h + 1) * n * n];
            // dP = dO_h V_h^T (n x n)
            let mut ds = vec![0f32; n * n];
            matmul(
                n,
                n,
                hd,
                &mut ds,
                n,
                false,
                MatRef::rows(d_out, d).offset(h * hd),
                MatRef::transposed(qkv, 3 * d).offset(2 * d + h * hd),
                Some(gemm::Parallelism::None),
            );
            for (pr, dr) in p.chunks_exact(n).zip(ds.chunks_exact_mut(n)) {
                softmax_backward_row(pr, dr);
            }
            // Sums over the selected rows i of dq_i = s * dS_i K, dk_i = s * dS^T_i Q_raw,
            // dv_i = P^T_i dO: weights per source row j, then one vector-matrix product each.
            let mut col_ds = vec![0f32; n]; // sum_{i in rows} dS[i, j]
            for row in ds.chunks_exact(n).skip(sum_from) {
                add_assign(&mut col_ds, row);
            }
            let mut row_ds = vec![0f32; n]; // sum_{i in rows} dS[j, i]
            let mut row_p = vec![0f32; n]; // sum_{i in rows} P[j, i]
            for j in 0..n {
                row_ds[j] = ds[j * n + sum_from..(j + 1) * n].iter().sum();
                row_p[j] = p[j * n + sum_from..(j + 1) * n].iter().sum();
            }
            let mut g = vec![0f32; 3 * hd];
            for j in 0..n {
                let q = &qkv[j * 3 * d + h * hd..j * 3 * d + (h + 1) * hd];
                let k = &qkv[j * 3 * d + d + h * hd..j * 3 * d + d + (h + 1) * hd];
                let o = &d_out[j * d + h * hd..j * d + (h + 1) * hd];
                for t in 0..hd {
                    g[t] += col_ds[j] * k[t];
                    g[hd + t] += row_ds[j] * q[t];
                    g[2 * hd + t] += row_p[j] * o[t];
                }
            }
            for v in &mut g[..2 * hd] {
                *v *= scale;
            }
            g
        })
        .collect();
    let mut out = vec![0f32; 3 * d];
    for (h, g) in per_head.iter().enumerate() {
        for part in 0..3 {
            out[part * d + h * hd..part * d + (h + 1) * hd]
                .copy_from_slice(&g[part * hd..(part + 1) * hd]);
        }
    }
    out
}
