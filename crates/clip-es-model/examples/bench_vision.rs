//! Vision-tower throughput on a ViT-B/16-shaped random model vs the machine's matmul speed.
//! `cargo run --release -p clip-es-model --example bench_vision [threads]`
use clip_es_model::bench::{bench_vision, matmul_gflops};
use clip_es_model::VisionConfig;

fn main() {
    let threads: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(2);
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().unwrap();
    let cfg = VisionConfig { width: 768, layers: 12, heads: 12, patch_size: 16, grid: 14, image_size: 224 };
    let mm = matmul_gflops(769, 3072, 768, 5);
    let mm_sq = matmul_gflops(1024, 1024, 1024, 5);
    println!("threads: {threads}");
    println!("matmul 769x768 @ 768x3072: {mm:.1} GFLOP/s; 1024^3: {mm_sq:.1} GFLOP/s");
    for r in bench_vision(&cfg, &[(224, 224), (384, 512)], 3).unwrap() {
        println!(
            "vision forward {}x{} (HxW): {:.3} s, {:.1} GFLOP/s = {:.0}% of matmul",
            r.height, r.width, r.seconds, r.gflops, 100.0 * r.gflops / mm.max(mm_sq)
        );
    }
}
