//! Tests of the kernels against naive implementations and finite differences.

use super::*;

fn lcg(seed: &mut u64) -> f32 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n).map(|_| lcg(&mut s)).collect()
}

#[test]
fn fast_exp_matches_std() {
    let mut worst = 0f32;
    let mut x = -87.0f32;
    while x < 88.0 {
        let rel = ((fast_exp(x) - x.exp()) / x.exp()).abs();
        worst = worst.max(rel);
        x += 0.0137;
    }
    assert!(worst < 3e-7, "relative error {worst}");
    assert_eq!(fast_exp(f32::NEG_INFINITY), 0.0);
    assert_eq!(fast_exp(-100.0), 0.0);
}

#[test]
fn matmul_matches_naive_with_strides() {
    let (m, n, k) = (7, 5, 9);
    let a = rand_vec(m * k, 1);
    let bt = rand_vec(n * k, 2); // b stored transposed (n x k)
    let mut c = vec![1f32; m * n];
    matmul(
        m,
        n,
        k,
        &mut c,
        n,
        true,
        MatRef::rows(&a, k),
        MatRef::transposed(&bt, k),
        None,
    );
    for i in 0..m {
        for j in 0..n {
            let want: f32 = 1.0 + (0..k).map(|t| a[i * k + t] * bt[j * k + t]).sum::<f32>();
            assert!((c[i * n + j] - want).abs() < 1e-5);
        }
    }
}

#[test]
fn softmax_rows_sum_to_one_and_match_std() {
    let mut x = rand_vec(37, 3);
    let want: Vec<f32> = {
        let m = x.iter().cloned().fold(f32::MIN, f32::max);
        let e: Vec<f32> = x.iter().map(|v| (v - m).exp()).collect();
        let s: f32 = e.iter().sum();
        e.iter().map(|v| v / s).collect()
    };
    softmax_inplace(&mut x);
    for (a, b) in x.iter().zip(&want) {
        assert!((a - b).abs() < 1e-7);
    }
}

#[test]
fn layer_norm_backward_matches_finite_differences() {
    let d = 8;
    let ln = LayerNorm::new(
        rand_vec(d, 4).iter().map(|v| 1.0 + 0.3 * v).collect(),
        rand_vec(d, 5),
        1e-5,
    );
    let x = rand_vec(2 * d, 6);
    let dy = rand_vec(2 * d, 7);
    let (_, cache) = ln.forward_cached(&x);
    let dx = ln.backward_input(&cache, &dy);
    let loss = |x: &[f32]| -> f64 {
        ln.forward(x)
            .iter()
            .zip(&dy)
            .map(|(a, b)| (*a as f64) * (*b as f64))
            .sum()
    };
    for i in 0..2 * d {
        let mut xp = x.clone();
        let mut xm = x.clone();
        xp[i] += 1e-2;
        xm[i] -= 1e-2;
        let fd = (loss(&xp) - loss(&xm)) / 2e-2;
        assert!(
            (fd - dx[i] as f64).abs() < 2e-3,
            "{i}: fd {fd} vs {}",
            dx[i]
        );
    }
}

/// Naive attention for checks: returns the output and each head's probabilities.
fn naive_attention(qkv: &[f32], shape: AttentionShape, causal: bool) -> (Vec<f64>, Vec<f64>) {
    let AttentionShape {
        tokens: n,
        width: d,
        heads,
    } = shape;
    let hd = d / heads;
    let s = (hd as f64).powf(-0.5);
    let mut out = vec![0f64; n * d];
    let mut probs = vec![0f64; heads * n * n];
    for h in 0..heads {
        for i in 0..n {
            let mut row: Vec<f64> = (0..n)
                .map(|j| {
                    if causal && j > i {
                        return f64::NEG_INFINITY;
                    }
                    (0..hd)
                        .map(|t| {
                            s * qkv[i * 3 * d + h * hd + t] as f64
                                * qkv[j * 3 * d + d + h * hd + t] as f64
                        })
                        .sum()
                })
                .collect();
            let m = row.iter().cloned().fold(f64::MIN, f64::max);
            let z: f64 = row.iter().map(|v| (v - m).exp()).sum();
            for v in row.iter_mut() {
                *v = (*v - m).exp() / z;
            }
            for j in 0..n {
                probs[h * n * n + i * n + j] = row[j];
                for t in 0..hd {
                    out[i * d + h * hd + t] += row[j] * qkv[j * 3 * d + 2 * d + h * hd + t] as f64;
                }
            }
        }
    }
    (out, probs)
}

#[test]
fn attention_forward_matches_naive() {
    let shape = AttentionShape {
        tokens: 11,
        width: 12,
        heads: 3,
    };
    let qkv = rand_vec(11 * 36, 8);
    for causal in [false, true] {
        let (want, want_p) = naive_attention(&qkv, shape, causal);
        let mut all = vec![0f32; 3 * 121];
        let out = attention_forward(&qkv, shape, causal, KeepProbs::AllHeads(&mut all));
        for (a, b) in out.iter().zip(&want) {
            assert!((*a as f64 - b).abs() < 1e-5);
        }
        for (a, b) in all.iter().zip(&want_p) {
            assert!((*a as f64 - b).abs() < 1e-6);
        }
        let mut mean = vec![0f32; 121];
        let out2 = attention_forward(&qkv, shape, causal, KeepProbs::HeadMean(&mut mean));
        assert_eq!(out, out2);
        for i in 0..121 {
            let m = (want_p[i] + want_p[121 + i] + want_p[242 + i]) / 3.0;
            assert!((mean[i] as f64 - m).abs() < 1e-6);
        }
    }
}

#[test]
fn attention_backward_row_sum_matches_finite_differences() {
    let shape = AttentionShape {
        tokens: 6,
        width: 8,
        heads: 2,
    };
    let qkv = rand_vec(6 * 24, 9);
    let d_out = rand_vec(6 * 8, 10);
    let mut probs = vec![0f32; 2 * 36];
    attention_forward(&qkv, shape, false, KeepProbs::AllHeads(&mut probs));
    let got = attention_backward_row_sum(&qkv, &probs, &d_out, shape, 1);
    // Loss L(qkv) = sum(out * d_out); the gradient wrt qkv row i, summed over rows 1.. .
    let loss = |qkv: &[f32]| -> f64 {
        let (out, _) = naive_attention(qkv, shape, false);
        out.iter().zip(&d_out).map(|(a, b)| a * *b as f64).sum()
    };
    for c in 0..24 {
        let mut fd_sum = 0f64;
        for i in 1..6 {
            let mut p = qkv.clone();
            let mut m = qkv.clone();
            p[i * 24 + c] += 1e-3;
            m[i * 24 + c] -= 1e-3;
            fd_sum += (loss(&p) - loss(&m)) / 2e-3;
        }
        assert!(
            (fd_sum - got[c] as f64).abs() < 1e-3,
            "col {c}: fd {fd_sum} vs {}",
            got[c]
        );
    }
}
