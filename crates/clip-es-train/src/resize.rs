//! Differentiable bilinear resize to a size as two matrix products (docs/training.md, the MSC
//! loss; deeplab-pytorch `libs/models/msc.py`, `F.interpolate(l, size=(H, W), mode="bilinear",
//! align_corners=False)`; the decoder's 2x upsampling).
//!
//! burn's GPU backends differentiate `interpolate` in bilinear mode as if it were nearest, which
//! would train the smaller MSC scales and the decoder on the wrong gradient there. A bilinear
//! resize is linear in its input: `Y = Ry · X · Rxᵀ` for each channel, with `Ry` (`out_h × in_h`)
//! and `Rx` (`out_w × in_w`) holding the two taps of each output pixel. Written as matrix
//! products, its backward pass is autodiff's matrix-product backward, the same on every backend.
//! The matrices are built on the host from PyTorch's taps and are small (one row per output
//! pixel of one axis).

use burn::tensor::{Tensor, TensorData};

/// The two source pixels and weights of each of `n_out` output pixels along an axis of `n_in`
/// pixels, as PyTorch computes them for `F.interpolate(size=..., mode="bilinear",
/// align_corners=False)`: the source coordinate `(i + 0.5) * n_in / n_out - 0.5`, negative ones
/// clamped to 0, the last pixel repeated past the edge. The coordinate is computed in f64, as
/// burn's `flex` kernel does, which the MSC goldens were checked against.
pub fn size_taps(n_in: usize, n_out: usize) -> Vec<(usize, usize, f32, f32)> {
    let scale = n_in as f64 / n_out as f64;
    (0..n_out)
        .map(|i| {
            let src = (scale * (i as f64 + 0.5) - 0.5).max(0.0);
            let i0 = (src.floor() as usize).min(n_in - 1);
            let lambda = (src - i0 as f64).clamp(0.0, 1.0) as f32;
            let i1 = if i0 + 1 < n_in { i0 + 1 } else { i0 };
            (i0, i1, 1.0 - lambda, lambda)
        })
        .collect()
}

/// The interpolation matrix of `taps` over an axis of `n_in` pixels, transposed: `n_in` rows,
/// one column per output pixel, so that a row-major `[.., n_in]` tensor times it is resized.
fn matrix_t(
    taps: &[(usize, usize, f32, f32)],
    n_in: usize,
    device: &burn::tensor::Device,
) -> Tensor<2> {
    let n_out = taps.len();
    let mut m = vec![0f32; n_in * n_out];
    for (o, &(i0, i1, w0, w1)) in taps.iter().enumerate() {
        m[i0 * n_out + o] += w0;
        m[i1 * n_out + o] += w1;
    }
    Tensor::<2>::from_data(TensorData::new(m, [n_in, n_out]), device)
}

/// Bilinear resize of `[n, c, h, w]` to `size` (`[out_h, out_w]`) with PyTorch's
/// `align_corners=False`, differentiable on every backend (see the module header).
pub fn bilinear_resize(x: Tensor<4>, size: [usize; 2]) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    let [oh, ow] = size;
    if [h, w] == size {
        return x;
    }
    if n * c * h * w == 0 || oh * ow == 0 {
        return Tensor::zeros([n, c, oh, ow], &x.device());
    }
    let device = x.device();
    let rx_t = matrix_t(&size_taps(w, ow), w, &device);
    let ry_t = matrix_t(&size_taps(h, oh), h, &device);
    // Along the width: every row of every plane times Rxᵀ.
    let rows = x.reshape([n * c * h, w]).matmul(rx_t);
    // Along the height: the planes transposed, so that their columns are rows, times Ryᵀ.
    let cols = rows
        .reshape([n * c, h, ow])
        .swap_dims(1, 2)
        .reshape([n * c * ow, h])
        .matmul(ry_t);
    cols.reshape([n * c, ow, oh])
        .swap_dims(1, 2)
        .reshape([n, c, oh, ow])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::module::interpolate;
    use burn::tensor::Device;

    fn host(t: Tensor<4>) -> Vec<f32> {
        t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
    }

    fn ramp(n: usize, c: usize, h: usize, w: usize, device: &Device) -> Tensor<4> {
        let v: Vec<f32> = (0..n * c * h * w)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        Tensor::<4>::from_data(TensorData::new(v, [n, c, h, w]), device)
    }

    /// Agrees with burn's own bilinear `interpolate` (align_corners false) on `flex`, down and
    /// up, odd and even sizes.
    #[test]
    fn matches_interpolate_on_flex() {
        let device = Device::flex();
        for (h, w, oh, ow) in [
            (5, 7, 11, 13),
            (41, 41, 21, 21),
            (31, 31, 41, 41),
            (3, 4, 6, 8),
            (9, 6, 9, 6),
            (1, 5, 3, 2),
        ] {
            let x = ramp(2, 3, h, w, &device);
            let want = host(interpolate(x.clone(), crate::deeplab::bilinear([oh, ow])));
            let got = host(bilinear_resize(x, [oh, ow]));
            assert_eq!(got.len(), want.len());
            let err = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(err <= 1e-5, "{h}x{w} -> {oh}x{ow}: max |diff| {err}");
        }
    }

    /// The gradient is the transposed resize of the output gradient: every input pixel gets the
    /// weights it contributed with (here summed against an all-ones output gradient, each
    /// column and row of the matrices sums the input's share), not a nearest-neighbour copy.
    #[test]
    fn gradient_is_the_bilinear_adjoint() {
        let device = Device::flex();
        let (h, w, oh, ow) = (4, 6, 7, 9);
        let x = ramp(1, 1, h, w, &device).autodiff().require_grad();
        let g = ramp(1, 1, oh, ow, &device);
        let y = bilinear_resize(x.clone(), [oh, ow]);
        let grads = (y * g.clone().autodiff()).sum().backward();
        let got = host(x.grad(&grads).unwrap().without_autodiff());
        let gv = host(g);
        let (ty, tx) = (size_taps(h, oh), size_taps(w, ow));
        let mut want = vec![0f32; h * w];
        for (oy, &(y0, y1, wy0, wy1)) in ty.iter().enumerate() {
            for (ox, &(x0, x1, wx0, wx1)) in tx.iter().enumerate() {
                let go = gv[oy * ow + ox];
                want[y0 * w + x0] += go * wy0 * wx0;
                want[y0 * w + x1] += go * wy0 * wx1;
                want[y1 * w + x0] += go * wy1 * wx0;
                want[y1 * w + x1] += go * wy1 * wx1;
            }
        }
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!((a - b).abs() <= 1e-4, "pixel {i}: {a} vs {b}");
        }
    }
}
