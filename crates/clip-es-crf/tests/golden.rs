//! Goldens from pydensecrf (made by tools/golden_crf.py): marginals after inference for the
//! CLIP-ES settings at every label-count code path, other feature dimensions and the other
//! normalisations, and numpy's float16 unary for all float16 inputs. The marginals must agree
//! bit for bit.

use clip_es_crf::*;
use half::f16;
use std::path::PathBuf;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

#[path = "common/npy.rs"]
mod npy;
use npy::Npy;

fn read_npy(name: &str) -> Npy {
    npy::read(&data(name))
}

fn compare(name: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{name}");
    let mismatches = got
        .iter()
        .zip(want)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    let max_diff = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert_eq!(
        mismatches,
        0,
        "{name}: {mismatches} of {} marginals differ, max |diff| {max_diff:e}",
        got.len()
    );
}

#[test]
fn marginals_match_pydensecrf_bit_for_bit() {
    let manifest = std::fs::read_to_string(data("manifest.txt")).unwrap();
    let mut cases = 0;
    for line in manifest.lines().filter(|l| !l.trim().is_empty()) {
        let t: Vec<&str> = line.split_whitespace().collect();
        let (name, m, iters) = (
            t[0],
            t[1].parse::<usize>().unwrap(),
            t[2].parse::<usize>().unwrap(),
        );
        let unary = read_npy(&format!("{name}_unary.npy"));
        let n = unary.shape[1];
        assert_eq!(unary.shape[0], m);
        let mut crf = DenseCrf::new(n, m).unwrap();
        crf.set_unary_label_major(&unary.f32s()).unwrap();
        let p = |i: usize| t[i].parse::<f32>().unwrap();
        match t[3] {
            "crf2d" => {
                let (w, h) = (
                    t[4].parse::<usize>().unwrap(),
                    t[5].parse::<usize>().unwrap(),
                );
                let img = read_npy(&format!("{name}_image.npy"));
                assert_eq!(img.shape, vec![h, w, 3]);
                crf.add_pairwise(
                    PairwiseKernel::gaussian(w, h, p(6), Compatibility::Potts(p(7))).unwrap(),
                )
                .unwrap();
                crf.add_pairwise(
                    PairwiseKernel::bilateral(
                        w,
                        h,
                        p(8),
                        p(9),
                        &img.u8s(),
                        Compatibility::Potts(p(10)),
                    )
                    .unwrap(),
                )
                .unwrap();
            }
            "features" => {
                let dim: usize = t[4].parse().unwrap();
                let norm = match t[5] {
                    "symmetric" => Normalization::Symmetric,
                    "none" => Normalization::None,
                    "before" => Normalization::Before,
                    "after" => Normalization::After,
                    other => panic!("{other}"),
                };
                let f = read_npy(&format!("{name}_features.npy"));
                assert_eq!(f.shape, vec![dim, n]);
                // pydensecrf takes features as (dim, n); the lattice wants them point-major.
                let fl = f.f32s();
                let mut pm = vec![0f32; dim * n];
                for k in 0..dim {
                    for i in 0..n {
                        pm[i * dim + k] = fl[k * n + i];
                    }
                }
                crf.add_pairwise(
                    PairwiseKernel::new(&pm, dim, Compatibility::Potts(p(6)), norm).unwrap(),
                )
                .unwrap();
            }
            other => panic!("unknown case kind {other}"),
        }
        let q = crf.inference(iters).unwrap();
        compare(
            name,
            &q.label_major(),
            &read_npy(&format!("{name}_q.npy")).f32s(),
        );
        cases += 1;
    }
    assert!(cases >= 10);
}

#[test]
fn f16_unary_matches_numpy_for_every_float16() {
    let want = read_npy("f16_unary.npy").f16s();
    assert_eq!(want.len(), 65536);
    let all: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
    let got = unary_from_f16_probabilities(&all);
    let mut bad = Vec::new();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let w = w.to_f32();
        let same = (g.is_nan() && w.is_nan()) || g.to_bits() == w.to_bits();
        if !same {
            bad.push((i, *g, w));
        }
    }
    assert!(
        bad.is_empty(),
        "{} float16 inputs differ, first {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
}
