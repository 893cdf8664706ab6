//! Class-aware attention-based affinity (CAA), CLIP-ES paper section 3.3; docs/algorithm.md,
//! "Class-aware attention affinity"; reference `generate_cams_voc12.py:160-197` and
//! `utils.py:115-142` (`scoremap2bbox`).
//!
//! The mean attention of the last blocks becomes a symmetric, doubly normalised transition
//! matrix; each class's CAM is propagated through it, restricted to the boxes around the
//! class's confident regions.

use clip_es_model::Backend;

/// A square matrix, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct SquareMatrix {
    pub n: usize,
    pub data: Vec<f32>,
}

/// Builds the affinity `A = D @ D` from patch-to-patch attention `w` (n x n, class token
/// already removed): three Sinkhorn rounds (columns then rows), `D = (T + T^T) / 2`.
pub fn affinity_from_attention(backend: &dyn Backend, w: &SquareMatrix) -> SquareMatrix {
    let n = w.n;
    let mut t = w.data.clone();
    for _ in 0..3 {
        normalize_columns(&mut t, n);
        normalize_rows(&mut t, n);
    }
    let mut d = vec![0f32; n * n];
    for i in 0..n {
        for j in 0..n {
            d[i * n + j] = (t[i * n + j] + t[j * n + i]) / 2.0;
        }
    }
    SquareMatrix {
        n,
        data: backend.matmul(&d, &d, n, n, n),
    }
}

fn normalize_columns(t: &mut [f32], n: usize) {
    let mut sums = vec![0f32; n];
    for row in t.chunks_exact(n) {
        for (s, v) in sums.iter_mut().zip(row) {
            *s += v;
        }
    }
    for row in t.chunks_exact_mut(n) {
        for (v, s) in row.iter_mut().zip(&sums) {
            *v /= s;
        }
    }
}

fn normalize_rows(t: &mut [f32], n: usize) {
    for row in t.chunks_exact_mut(n) {
        let s: f32 = row.iter().sum();
        for v in row.iter_mut() {
            *v /= s;
        }
    }
}

/// The mean of several head-averaged attention matrices (tokens x tokens, class token first)
/// with the class row and column dropped: the patch-to-patch attention W.
pub fn mean_patch_attention(blocks: &[Vec<f32>], tokens: usize) -> SquareMatrix {
    let n = tokens - 1;
    let mut w = vec![0f32; n * n];
    for a in blocks {
        assert_eq!(a.len(), tokens * tokens);
        for i in 0..n {
            let src = &a[(i + 1) * tokens + 1..(i + 2) * tokens];
            for (d, s) in w[i * n..(i + 1) * n].iter_mut().zip(src) {
                *d += s;
            }
        }
    }
    let k = blocks.len() as f32;
    for v in &mut w {
        *v /= k;
    }
    SquareMatrix { n, data: w }
}

/// Min-max normalisation as the reference's `scale_cam_image`: `(x - min) / (max(x - min) + 1e-7)`.
pub fn min_max_normalize(x: &mut [f32]) {
    let min = x.iter().cloned().fold(f32::INFINITY, f32::min);
    for v in x.iter_mut() {
        *v -= min;
    }
    let max = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let denom = 1e-7 + max;
    for v in x.iter_mut() {
        *v /= denom;
    }
}

/// The box mask of a normalised CAM (h x w): `u = floor(cam * 255)`, `t = floor(threshold *
/// max(u))`, foreground `u > t`; for each 8-connected foreground component, its bounding box
/// with the reference's end-exclusive, clipped extent (`x1 = min(x0 + bw, w - 1)`, rows and
/// columns `x0..x1`), so the last row and column are never marked.
pub fn box_mask(cam: &[f32], h: usize, w: usize, threshold: f64) -> Vec<bool> {
    assert_eq!(cam.len(), h * w);
    // numpy: (cam * 255).astype(np.uint8) truncates toward zero (values are in [0, 1]).
    let u: Vec<u8> = cam.iter().map(|&v| (v * 255.0) as u8).collect();
    let max = u.iter().copied().max().unwrap_or(0);
    // Python: int(threshold * max) in double precision (0.7 * 10 must give 7, not 6).
    let t = (threshold * max as f64) as u32;
    let fg: Vec<bool> = u.iter().map(|&v| v as u32 > t).collect();
    let mut mask = vec![false; h * w];
    for (x0, y0, x_end, y_end) in component_boxes(&fg, h, w) {
        // OpenCV boundingRect gives width = x_end - x0 + 1; the reference adds it to x0.
        let x1 = (x_end + 1).min(w - 1);
        let y1 = (y_end + 1).min(h - 1);
        for y in y0..y1 {
            mask[y * w + x0..y * w + x1].fill(true);
        }
    }
    mask
}

/// Inclusive bounding boxes `(x0, y0, x_max, y_max)` of the 8-connected components of `fg`.
pub fn component_boxes(fg: &[bool], h: usize, w: usize) -> Vec<(usize, usize, usize, usize)> {
    let mut seen = vec![false; h * w];
    let mut boxes = Vec::new();
    let mut stack = Vec::new();
    for start in 0..h * w {
        if !fg[start] || seen[start] {
            continue;
        }
        seen[start] = true;
        stack.push(start);
        let (mut x0, mut y0, mut x1, mut y1) = (w, h, 0, 0);
        while let Some(p) = stack.pop() {
            let (y, x) = (p / w, p % w);
            x0 = x0.min(x);
            y0 = y0.min(y);
            x1 = x1.max(x);
            y1 = y1.max(y);
            for dy in -1i64..=1 {
                for dx in -1i64..=1 {
                    let (ny, nx) = (y as i64 + dy, x as i64 + dx);
                    if ny < 0 || nx < 0 || ny >= h as i64 || nx >= w as i64 {
                        continue;
                    }
                    let q = ny as usize * w + nx as usize;
                    if fg[q] && !seen[q] {
                        seen[q] = true;
                        stack.push(q);
                    }
                }
            }
        }
        boxes.push((x0, y0, x1, y1));
    }
    boxes
}

/// CAA refinement of one class: `r = (A * mask[column]) @ cam`, min-max normalised.
pub fn refine(affinity: &SquareMatrix, cam: &[f32], mask: &[bool]) -> Vec<f32> {
    let n = affinity.n;
    assert_eq!(cam.len(), n);
    assert_eq!(mask.len(), n);
    // Masking column j of A is the same as zeroing cam[j] in the product.
    let masked: Vec<f32> = cam
        .iter()
        .zip(mask)
        .map(|(&c, &m)| if m { c } else { 0.0 })
        .collect();
    let mut r: Vec<f32> = affinity
        .data
        .chunks_exact(n)
        .map(|row| row.iter().zip(&masked).map(|(a, c)| a * c).sum())
        .collect();
    min_max_normalize(&mut r);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sinkhorn_result_is_symmetric_and_nearly_doubly_stochastic() {
        let n = 5;
        let data: Vec<f32> = (0..n * n)
            .map(|i| 0.1 + ((i * 37 % 11) as f32) / 7.0)
            .collect();
        let a = affinity_from_attention(&clip_es_model::Cpu, &SquareMatrix { n, data });
        for i in 0..n {
            for j in 0..n {
                assert!((a.data[i * n + j] - a.data[j * n + i]).abs() < 1e-6);
            }
            let row: f32 = a.data[i * n..(i + 1) * n].iter().sum();
            assert!((row - 1.0).abs() < 0.05, "row sum {row}");
        }
    }

    #[test]
    fn box_mask_is_end_exclusive_and_clipped() {
        // 4x5 map with one hot pixel at (row 1, col 1) and one at the last corner.
        let (h, w) = (4, 5);
        let mut cam = vec![0f32; h * w];
        cam[w + 1] = 1.0;
        cam[h * w - 1] = 1.0;
        let m = box_mask(&cam, h, w, 0.4);
        // Box of (1,1): x0=1, bw=1 -> x1=2: marks row 1, column 1 only.
        // Box of (3,4): x1 = min(5, 4) = 4, y1 = min(4, 3) = 3: rows 3..3 -> nothing.
        let marked: Vec<usize> = (0..h * w).filter(|&i| m[i]).collect();
        assert_eq!(marked, vec![w + 1]);
    }

    #[test]
    fn threshold_is_computed_in_double_precision() {
        // max u = 10: int(0.7 * 10) = 7 (in f32, 0.7 * 10 would truncate to 6).
        let mut cam = vec![0f32; 9];
        cam[0] = 10.0 / 255.0 + 1e-6;
        cam[1] = 7.0 / 255.0 + 1e-6;
        let m = box_mask(&cam, 3, 3, 0.7);
        // u = [10, 7, 0, ...]: only pixel 0 is > 7, so only column 0 of row 0 is marked (with a
        // threshold of 6, pixel 1 would join and column 1 would be marked too).
        let marked: Vec<usize> = (0..9).filter(|&i| m[i]).collect();
        assert_eq!(marked, vec![0]);
    }

    #[test]
    fn diagonal_neighbours_are_one_component() {
        let (h, w) = (3, 3);
        let fg = vec![true, false, false, false, true, false, false, false, true];
        assert_eq!(component_boxes(&fg, h, w), vec![(0, 0, 2, 2)]);
        let fg = vec![true, false, true, false, false, false, true, false, true];
        assert_eq!(component_boxes(&fg, h, w).len(), 4);
    }

    #[test]
    fn threshold_uses_truncated_uint8_values() {
        // max u = 255, t = floor(0.4 * 255) = 102; u = floor(0.4 * 255) = 102 is not > 102.
        let cam = vec![1.0, 0.4, 0.41, 0.0];
        let u: Vec<u8> = cam.iter().map(|&v: &f32| (v * 255.0) as u8).collect();
        assert_eq!(u, vec![255, 102, 104, 0]);
        let m = box_mask(&cam, 2, 2, 0.4);
        // Foreground u > 102: pixels 0 and 2 (one column, 8-connected): box x 0..=0, y 0..=1;
        // x1 = min(0 + 1, 1) = 1, y1 = min(1 + 1, 1) = 1 -> row 0, column 0 only.
        assert_eq!(m, vec![true, false, false, false]);
    }

    #[test]
    fn refine_keeps_only_masked_sources() {
        let n = 3;
        let a = SquareMatrix {
            n,
            data: vec![1.0, 0.5, 0.0, 0.5, 1.0, 0.5, 0.0, 0.5, 1.0],
        };
        let r = refine(&a, &[1.0, 1.0, 1.0], &[true, false, false]);
        // A @ [1, 0, 0] = [1, 0.5, 0] -> normalised.
        assert!((r[0] - 1.0).abs() < 1e-6 && (r[1] - 0.5).abs() < 1e-6 && r[2].abs() < 1e-6);
    }
}
