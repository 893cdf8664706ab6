//! `clip-es bench`: throughput of the image tower on a ViT-B/16-shaped random model next to
//! the machine's own matrix-product speed, measured in the same run.

use clip_es::gradcam::ATTENTION_BLOCKS;
use clip_es_model::bench::{bench_vision, matmul_gflops};
use clip_es_model::ClipConfig;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Threads (default: 2, the reference machine of the project's figures)
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Input sizes HxW to time
    #[arg(long = "size", value_parser = parse_size, default_values = ["224x224", "384x512"])]
    sizes: Vec<(usize, usize)>,
    /// Timed repetitions per size (the best is reported)
    #[arg(long, default_value_t = 3)]
    reps: usize,
}

fn parse_size(s: &str) -> Result<(usize, usize), String> {
    let (h, w) = s
        .split_once('x')
        .ok_or_else(|| format!("{s:?}: expected HxW, e.g. 384x512"))?;
    let h: usize = h.parse().map_err(|e| format!("{s:?}: {e}"))?;
    let w: usize = w.parse().map_err(|e| format!("{s:?}: {e}"))?;
    if h == 0 || w == 0 || !h.is_multiple_of(16) || !w.is_multiple_of(16) {
        return Err(format!("{s:?}: sides must be positive multiples of 16"));
    }
    Ok((h, w))
}

pub fn run(args: Args) -> ExitCode {
    if let Err(e) = clip_es::progress::check_threads(args.threads) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    if args.reps == 0 {
        eprintln!("error: --reps must be at least 1");
        return ExitCode::from(2);
    }
    if let Err(e) = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build_global()
    {
        eprintln!("error: thread pool: {e}");
        return ExitCode::from(2);
    }
    let cfg = ClipConfig::vit_b_16().vision;
    let mm = matmul_gflops(769, 3072, 768, 5).max(matmul_gflops(1024, 1024, 1024, 3));
    println!("threads: {}", rayon::current_num_threads());
    println!("matmul (best of 769x768 @ 768x3072 and 1024^3): {mm:.1} GFLOP/s");
    match bench_vision(&cfg, &args.sizes, args.reps, ATTENTION_BLOCKS) {
        Ok(results) => {
            for r in results {
                println!(
                    "ViT-B/16 image tower {}x{} (HxW): {:.3} s, {:.1} GFLOP/s = {:.0}% of matmul",
                    r.height,
                    r.width,
                    r.seconds,
                    r.gflops,
                    100.0 * r.gflops / mm
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
