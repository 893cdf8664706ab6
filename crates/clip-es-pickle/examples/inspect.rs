//! Lists what a PyTorch archive or `.npy` file holds, with the time it took to read.
//!
//! usage: cargo run --release -p clip-es-pickle --example inspect -- FILE...

use clip_es_pickle::{read_npy, read_torch_archive, NpyContent};
use std::path::Path;
use std::time::Instant;

fn main() {
    let mut failed = false;
    for arg in std::env::args().skip(1) {
        let path = Path::new(&arg);
        let start = Instant::now();
        if arg.ends_with(".npy") {
            match read_npy(path) {
                Ok(NpyContent::Array(a)) => {
                    println!("{arg}: {} {:?} ({:.1} ms)", a.dtype, a.shape, ms(start))
                }
                Ok(NpyContent::Object { shape, items }) => {
                    println!("{arg}: object array {shape:?} ({:.1} ms)", ms(start));
                    for item in &items {
                        let Some(pairs) = item.as_dict() else {
                            continue;
                        };
                        for (k, v) in pairs {
                            match clip_es_pickle::array_from_value(v.clone(), &arg) {
                                Ok(clip_es_pickle::PickledArray::Numeric(a)) => {
                                    println!("  {k:?}: {} {:?}", a.dtype, a.shape)
                                }
                                _ => println!("  {k:?}: {}", v.kind()),
                            }
                        }
                    }
                }
                Err(e) => {
                    eprintln!("{e}");
                    failed = true;
                }
            }
        } else {
            match read_torch_archive(path) {
                Ok(tensors) => {
                    let bytes: usize = tensors
                        .iter()
                        .map(|(_, t)| t.numel() * t.dtype.size())
                        .sum();
                    println!(
                        "{arg}: {} tensors, {bytes} bytes ({:.1} ms)",
                        tensors.len(),
                        ms(start)
                    );
                    for (name, t) in &tensors {
                        println!(
                            "  {name}: {} {:?} strides {:?} offset {} storage {}",
                            t.dtype, t.shape, t.strides, t.storage_offset, t.storage.key
                        );
                    }
                }
                Err(e) => {
                    eprintln!("{e}");
                    failed = true;
                }
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
}

fn ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}
