//! Properties of the permutohedral filter and the kernels on random inputs: what a Gaussian
//! filter must do regardless of the lattice's bookkeeping.

use clip_es_crf::*;

/// A small deterministic generator (xorshift64*), enough for test inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        ((self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32) / (1u64 << 24) as f32
    }
    fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| lo + (hi - lo) * self.next()).collect()
    }
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

#[test]
fn a_constant_signal_filters_to_itself_when_normalised() {
    // With normalisation after filtering, out_i = sum_j K_ij c / sum_j K_ij = c.
    let mut rng = Rng(7);
    for (dim, n) in [(1, 300), (2, 500), (3, 400), (5, 600), (9, 200)] {
        let f = rng.vec(n * dim, -4.0, 4.0);
        let k =
            PairwiseKernel::new(&f, dim, Compatibility::Potts(1.0), Normalization::After).unwrap();
        let c = 0.3 + rng.next();
        let q = vec![c; n * 2];
        let mut out = vec![0.0; q.len()];
        k.filter(&q, 2, &mut out).unwrap();
        for (i, v) in out.iter().enumerate() {
            assert!(
                (v - c).abs() <= 2e-6 * c,
                "d {dim} point {}: {v} vs {c}",
                i / 2
            );
        }
    }
}

#[test]
fn the_transposed_filter_is_the_exact_adjoint() {
    let mut rng = Rng(11);
    for (dim, n, vs) in [(2, 400, 1), (3, 300, 3), (5, 500, 2), (6, 250, 5)] {
        let f = rng.vec(n * dim, -3.0, 3.0);
        let lat = Permutohedral::new(&f, dim).unwrap();
        let (a, b) = (rng.vec(n * vs, -1.0, 1.0), rng.vec(n * vs, -1.0, 1.0));
        let (mut kb, mut kta) = (vec![0.0; n * vs], vec![0.0; n * vs]);
        lat.filter(&b, vs, &mut kb).unwrap();
        lat.filter_transposed(&a, vs, &mut kta).unwrap();
        let (l, r) = (dot(&a, &kb), dot(&kta, &b));
        assert!(
            (l - r).abs() <= 1e-5 * (l.abs() + 1.0),
            "d {dim}: {l} vs {r}"
        );
    }
}

#[test]
fn the_filter_is_nearly_symmetric() {
    // K_ij = K_ji for a Gaussian; the lattice's forward and reverse blurs differ only where a
    // vertex is missing on one path, so on a dense grid <a, K b> and <K a, b> nearly agree.
    let (w, h) = (30, 20);
    let f = gaussian_features(w, h, 2.0, 2.0);
    let lat = Permutohedral::new(&f, 2).unwrap();
    let mut rng = Rng(3);
    let n = w * h;
    let (a, b) = (rng.vec(n, 0.0, 1.0), rng.vec(n, 0.0, 1.0));
    let (mut ka, mut kb) = (vec![0.0; n], vec![0.0; n]);
    lat.filter(&a, 1, &mut ka).unwrap();
    lat.filter(&b, 1, &mut kb).unwrap();
    let (l, r) = (dot(&a, &kb), dot(&ka, &b));
    // (Measured: 2e-4 relative, from the image border.)
    assert!((l - r).abs() <= 1e-3 * l.abs(), "{l} vs {r}");
    // Point responses: K e_i at j against K e_j at i.
    for (i, j) in [
        (5 * w + 5, 5 * w + 7),
        (10 * w + 10, 11 * w + 12),
        (3, 4 * w + 2),
    ] {
        let mut e = vec![0.0; n];
        let mut out_i = vec![0.0; n];
        let mut out_j = vec![0.0; n];
        e[i] = 1.0;
        lat.filter(&e, 1, &mut out_i).unwrap();
        e[i] = 0.0;
        e[j] = 1.0;
        lat.filter(&e, 1, &mut out_j).unwrap();
        let (kij, kji) = (out_i[j], out_j[i]);
        assert!(
            (kij - kji).abs() <= 1e-4 * kij.max(kji) + 1e-9,
            "K[{i},{j}] {kij} vs {kji}"
        );
    }
}

#[test]
fn a_colour_blind_bilateral_kernel_is_the_gaussian_one() {
    // With a huge colour deviation the colour features vanish (below the lattice resolution),
    // leaving the position-only Gaussian: the same smoothing up to the lattice approximation,
    // which depends on the dimension.
    let (w, h) = (48, 36);
    let mut rng = Rng(5);
    let image: Vec<u8> = (0..w * h * 3).map(|_| (rng.next() * 255.0) as u8).collect();
    let g = PairwiseKernel::gaussian(w, h, 4.0, Compatibility::Potts(1.0)).unwrap();
    let b = PairwiseKernel::bilateral(w, h, 4.0, 1e9, &image, Compatibility::Potts(1.0)).unwrap();
    // A smooth two-label signal.
    let q: Vec<f32> = (0..w * h)
        .flat_map(|i| {
            let (x, y) = ((i % w) as f32, (i / w) as f32);
            let p = 0.5 + 0.4 * (x / 7.0).sin() * (y / 5.0).cos();
            [p, 1.0 - p]
        })
        .collect();
    let (mut og, mut ob) = (vec![0.0; q.len()], vec![0.0; q.len()]);
    g.filter(&q, 2, &mut og).unwrap();
    b.filter(&q, 2, &mut ob).unwrap();
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (x, y) in og.iter().zip(&ob) {
        num += ((x - y) as f64).powi(2);
        den += (*x as f64).powi(2);
    }
    let rel = (num / den).sqrt();
    assert!(rel < 0.05, "relative difference {rel}");
    // With equal colours everywhere the colour features are exactly zero: the same holds.
    let flat = vec![77u8; w * h * 3];
    let bf = PairwiseKernel::bilateral(w, h, 4.0, 3.0, &flat, Compatibility::Potts(1.0)).unwrap();
    bf.filter(&q, 2, &mut ob).unwrap();
    let rel2: f64 = og
        .iter()
        .zip(&ob)
        .map(|(x, y)| ((x - y) as f64).powi(2))
        .sum::<f64>()
        .sqrt()
        / den.sqrt();
    assert!(rel2 < 0.05, "relative difference {rel2}");
}

#[test]
fn filtering_is_linear_and_permutation_equivariant_in_labels() {
    let mut rng = Rng(9);
    let n = 300;
    let f = rng.vec(n * 3, -3.0, 3.0);
    let lat = Permutohedral::new(&f, 3).unwrap();
    let a = rng.vec(n, -1.0, 1.0);
    let b = rng.vec(n, -1.0, 1.0);
    // Filtering [a, b] as two values per point gives the same as filtering a and b alone
    // (the slicing formula differs between one/two and more values, so compare 1 vs 2 only).
    let ab: Vec<f32> = a.iter().zip(&b).flat_map(|(x, y)| [*x, *y]).collect();
    let (mut o2, mut oa, mut ob) = (vec![0.0; 2 * n], vec![0.0; n], vec![0.0; n]);
    lat.filter(&ab, 2, &mut o2).unwrap();
    lat.filter(&a, 1, &mut oa).unwrap();
    lat.filter(&b, 1, &mut ob).unwrap();
    for i in 0..n {
        assert_eq!(o2[2 * i].to_bits(), oa[i].to_bits());
        assert_eq!(o2[2 * i + 1].to_bits(), ob[i].to_bits());
    }
    // Linearity: K(a + b) = K a + K b up to rounding.
    let s: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
    let mut os = vec![0.0; n];
    lat.filter(&s, 1, &mut os).unwrap();
    for i in 0..n {
        assert!((os[i] - (oa[i] + ob[i])).abs() <= 1e-5 * (1.0 + os[i].abs()));
    }
}

/// A CRF of `w` x `h` points and `m` labels with a random unary and both usual kernels.
fn random_crf(rng: &mut Rng, w: usize, h: usize, m: usize) -> DenseCrf {
    let n = w * h;
    let mut crf = DenseCrf::new(n, m).unwrap();
    crf.set_unary(&rng.vec(n * m, 0.0, 4.0)).unwrap();
    crf.add_pairwise(PairwiseKernel::gaussian(w, h, 3.0, Compatibility::Potts(3.0)).unwrap())
        .unwrap();
    let image: Vec<u8> = (0..n * 3).map(|_| (rng.next() * 255.0) as u8).collect();
    crf.add_pairwise(
        PairwiseKernel::bilateral(w, h, 20.0, 10.0, &image, Compatibility::Potts(5.0)).unwrap(),
    )
    .unwrap();
    crf
}

#[test]
fn sizes_beyond_memory_are_errors_not_aborts() {
    for (n, m) in [(usize::MAX, 2), (1 << 40, 1 << 20), (1_000_000_000_000, 21)] {
        match DenseCrf::new(n, m) {
            Err(CrfError::Memory(message)) => assert!(!message.is_empty()),
            other => panic!("{n} x {m}: {:?}", other.map(|c| c.num_points())),
        }
    }
}

#[test]
fn step_by_step_inference_is_inference() {
    let mut rng = Rng(11);
    let crf = random_crf(&mut rng, 23, 17, 5);
    let mut q = crf.start_inference().unwrap();
    assert_eq!(q, crf.inference(0).unwrap().values);
    let mut kl = vec![crf.kl_divergence(&q).unwrap()];
    for it in 1..=6 {
        crf.step_inference(&mut q).unwrap();
        assert_eq!(q, crf.inference(it).unwrap().values, "iteration {it}");
        kl.push(crf.kl_divergence(&q).unwrap());
    }
    // Mean field decreases the divergence.
    assert!(kl[6] < kl[0], "{kl:?}");
    assert!(crf.step_inference(&mut q[1..]).is_err());
    assert!(crf.kl_divergence(&q[1..]).is_err());
    // Without a unary energy densecrf starts from zeros.
    let bare = DenseCrf::new(6, 2).unwrap();
    assert_eq!(bare.start_inference().unwrap(), vec![0.0; 12]);
}

#[test]
fn inference_stops_when_asked() {
    let mut rng = Rng(5);
    let crf = random_crf(&mut rng, 12, 9, 3);
    let asked = std::cell::Cell::new(0);
    let stop = || {
        asked.set(asked.get() + 1);
        asked.get() > 3
    };
    assert_eq!(crf.inference_until(100, &stop), Err(CrfError::Stopped));
    assert_eq!(asked.get(), 4);
    assert_eq!(crf.inference_until(5, &|| false), crf.inference(5));
}
