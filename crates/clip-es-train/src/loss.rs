//! The confidence-guided loss of CLIP-ES (paper section 3.4): cross-entropy over the confident
//! pixels of the pseudo masks only; label 255 marks the pixels the CRF step left unconfident and
//! contributes neither loss nor gradient. As deeplab-pytorch `main.py` lines 70-83 and 229-236,
//! the loss is taken at the logit size with the labels shrunk by nearest neighbour (PIL's
//! `NEAREST`: source index floor((i + 0.5) * in / out), accumulated as Pillow does).
//!
//! burn's own cross-entropy indexes with the label and panics on 255, so the loss is a masked
//! one-hot product with the log-softmax, built here.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Tensor, TensorData};

/// The label the loss skips (the one ignore label of every stage).
pub use clip_es_data::IGNORE_LABEL as IGNORE;

/// The most classes (background included): labels are 8-bit and 255 means "ignore".
pub const MAX_CLASSES: usize = 255;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossKind {
    /// Mean over confident pixels (PyTorch `CrossEntropyLoss(ignore_index=255)`).
    Plain,
    /// Class-balanced: each class present in the batch weighs the same; within a class, the
    /// mean over its pixels. Guards against a background-dominated loss.
    Balanced,
}

impl LossKind {
    pub fn name(self) -> &'static str {
        match self {
            LossKind::Plain => "ce",
            LossKind::Balanced => "balanced",
        }
    }
}

/// Labels of `n` maps of `h` x `w`, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Labels {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub data: Vec<u8>,
}

impl Labels {
    /// PIL `Image.resize((out_w, out_h), NEAREST)` of every map.
    pub fn resize_nearest(&self, out_h: usize, out_w: usize) -> Labels {
        let ys = pil_nearest_index(self.h, out_h);
        let xs = pil_nearest_index(self.w, out_w);
        let mut data = Vec::with_capacity(self.n * out_h * out_w);
        for b in 0..self.n {
            let m = &self.data[b * self.h * self.w..(b + 1) * self.h * self.w];
            for &y in &ys {
                data.extend(xs.iter().map(|&x| m[y * self.w + x]));
            }
        }
        Labels {
            n: self.n,
            h: out_h,
            w: out_w,
            data,
        }
    }
}

/// Source indices of PIL's nearest resize from `n` to `m`: the coordinate (i + 0.5) * n / m is
/// accumulated step by step in double precision (Pillow's affine loop), so a value that is an
/// integer in exact arithmetic can fall just below it (64 -> 7: 31, not 32).
pub fn pil_nearest_index(n: usize, m: usize) -> Vec<usize> {
    let scale = n as f64 / m as f64;
    let mut x = 0.5 * scale;
    let mut out = Vec::with_capacity(m);
    for _ in 0..m {
        out.push((x as usize).min(n - 1));
        x += scale;
    }
    out
}

/// Cross-entropy of `logits` [N, C, h, w] against `labels` (resized to h x w here), ignoring 255
/// and any label >= C. Returns `None` when no pixel is confident (PyTorch would return NaN).
pub fn masked_cross_entropy(
    logits: Tensor<4>,
    labels: &Labels,
    kind: LossKind,
    device: &Device,
) -> Option<Tensor<1>> {
    let [n, c, h, w] = logits.dims();
    assert_eq!(n, labels.n, "batch size of logits and labels");
    let lab = if (labels.h, labels.w) == (h, w) {
        labels.clone()
    } else {
        labels.resize_nearest(h, w)
    };
    let hw = h * w;
    let mut counts = vec![0usize; c];
    for &l in &lab.data {
        if (l as usize) < c {
            counts[l as usize] += 1;
        }
    }
    let total: usize = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let present = counts.iter().filter(|&&k| k > 0).count() as f32;
    // weight[n, label, y, x] = -per-pixel weight; zero elsewhere.
    let mut wgt = vec![0f32; n * c * hw];
    for b in 0..n {
        for p in 0..hw {
            let l = lab.data[b * hw + p] as usize;
            if l < c {
                wgt[(b * c + l) * hw + p] = match kind {
                    LossKind::Plain => -1.0 / total as f32,
                    LossKind::Balanced => -1.0 / (present * counts[l] as f32),
                };
            }
        }
    }
    let wgt = Tensor::<4>::from_data(TensorData::new(wgt, [n, c, h, w]), device);
    Some((log_softmax(logits, 1) * wgt).sum())
}
