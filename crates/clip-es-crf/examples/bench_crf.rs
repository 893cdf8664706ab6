//! Single-thread timing of the CLIP-ES dense CRF, the counterpart of tools/bench_crf.py (which
//! writes the inputs and times pydensecrf on them).
//!
//! Usage: `cargo run --release -p clip-es-crf --example bench_crf -- DIR [REPEATS]`
//! where DIR holds, per case `<id>`, `<id>_unary.npy` (float32, labels x pixels),
//! `<id>_image.npy` (uint8, H x W x 3, the image fed to the bilateral kernel) and optionally
//! `<id>_q.npy` (pydensecrf's marginals, compared bit for bit). For each case it prints
//! `TIME <id> <cpu seconds> <wall seconds>` (each the best of REPEATS runs of: set unary, build
//! both kernels, 10 mean-field iterations; CPU time of the thread, which a busy machine disturbs
//! less than wall time) and `DIFF <id> <differing marginals> <max |diff|>`.

#[path = "../tests/common/npy.rs"]
mod npy;

use clip_es_crf::{Compatibility, DenseCrf, PairwiseKernel};
use std::path::PathBuf;
use std::time::Instant;

/// CPU time consumed by the calling thread, in seconds.
fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = PathBuf::from(args.get(1).expect("usage: bench_crf DIR [REPEATS]"));
    let repeats: usize = args
        .get(2)
        .map(|s| s.parse().expect("REPEATS"))
        .unwrap_or(3);
    let mut ids: Vec<String> = std::fs::read_dir(&dir)
        .expect("DIR")
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .into_string()
                .ok()?
                .strip_suffix("_unary.npy")
                .map(str::to_string)
        })
        .collect();
    ids.sort();
    for id in ids {
        let unary = npy::read(&dir.join(format!("{id}_unary.npy")));
        let image = npy::read(&dir.join(format!("{id}_image.npy")));
        let (m, n) = (unary.shape[0], unary.shape[1]);
        let (h, w) = (image.shape[0], image.shape[1]);
        assert_eq!(n, w * h);
        let (u, img) = (unary.f32s(), image.u8s());
        let (mut best, mut best_wall) = (f64::INFINITY, f64::INFINITY);
        let mut q = None;
        for _ in 0..repeats {
            let t = Instant::now();
            let c = thread_cpu_seconds();
            let mut crf = DenseCrf::new(n, m).unwrap();
            crf.set_unary_label_major(&u).unwrap();
            crf.add_pairwise(
                PairwiseKernel::gaussian(w, h, 1.0, Compatibility::Potts(3.0)).unwrap(),
            )
            .unwrap();
            crf.add_pairwise(
                PairwiseKernel::bilateral(w, h, 67.0, 3.0, &img, Compatibility::Potts(4.0))
                    .unwrap(),
            )
            .unwrap();
            let r = crf.inference(10).unwrap();
            best = best.min(thread_cpu_seconds() - c);
            best_wall = best_wall.min(t.elapsed().as_secs_f64());
            q = Some(r);
        }
        if std::env::var_os("BENCH_PHASES").is_some() {
            let (mut tg, mut tb, mut ti) = (f64::INFINITY, f64::INFINITY, f64::INFINITY);
            for _ in 0..repeats {
                let c = thread_cpu_seconds();
                let g = PairwiseKernel::gaussian(w, h, 1.0, Compatibility::Potts(3.0)).unwrap();
                let c1 = thread_cpu_seconds();
                let b = PairwiseKernel::bilateral(w, h, 67.0, 3.0, &img, Compatibility::Potts(4.0))
                    .unwrap();
                let c2 = thread_cpu_seconds();
                let mut crf = DenseCrf::new(n, m).unwrap();
                crf.set_unary_label_major(&u).unwrap();
                crf.add_pairwise(g).unwrap();
                crf.add_pairwise(b).unwrap();
                let c3 = thread_cpu_seconds();
                crf.inference(10).unwrap();
                let c4 = thread_cpu_seconds();
                tg = tg.min(c1 - c);
                tb = tb.min(c2 - c1);
                ti = ti.min(c4 - c3);
            }
            println!(
                "PHASES {id} gaussian-kernel {tg:.4} bilateral-kernel {tb:.4} inference {ti:.4}"
            );
        }
        println!("TIME {id} {best:.6} {best_wall:.6} {w}x{h} labels={m}");
        let qpath = dir.join(format!("{id}_q.npy"));
        if qpath.exists() {
            let want = npy::read(&qpath).f32s();
            let got = q.unwrap().label_major();
            let differ = got
                .iter()
                .zip(&want)
                .filter(|(a, b)| a.to_bits() != b.to_bits())
                .count();
            let max = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            println!("DIFF {id} {differ} {max:e}");
        }
    }
}
