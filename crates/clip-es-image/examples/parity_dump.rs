//! Writes this crate's outputs as raw files for tools/parity_image.py (parity checks on larger
//! images than the committed goldens; not part of `cargo test`).
//!
//!   parity_dump images OUT_DIR FILE...   -> OUT_DIR/<i>.{decoded,tensor,imread}.bin + <i>.txt
//!   parity_dump resize DIR               -> reads DIR/cases.txt ("name sh sw dh dw" lines) and
//!                                           DIR/<name>.src.f32, writes DIR/<name>.out.f32

use std::io::Write;
use std::path::Path;

use clip_es_image::{load_rgb, resize_bilinear_f32, DecodedImage};

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("images") => {
            let out = Path::new(&args[1]);
            for (i, file) in args[2..].iter().enumerate() {
                let img = DecodedImage::open(Path::new(file))?;
                let samples: Vec<u8> = if img.samples().is_empty() {
                    img.samples_i16()
                        .iter()
                        .flat_map(|v| v.to_le_bytes())
                        .collect()
                } else {
                    img.samples().to_vec()
                };
                std::fs::write(out.join(format!("{i}.decoded.bin")), samples)?;
                let t = img.clip_input_for_patch(16)?;
                std::fs::write(out.join(format!("{i}.tensor.bin")), f32_bytes(&t.data))?;
                let cv = load_rgb(Path::new(file))?;
                std::fs::write(out.join(format!("{i}.imread.bin")), &cv.data)?;
                let mut f = std::fs::File::create(out.join(format!("{i}.txt")))?;
                writeln!(
                    f,
                    "{} {} {} {} {} {} {}",
                    img.mode().name(),
                    img.width(),
                    img.height(),
                    t.height,
                    t.width,
                    cv.height,
                    cv.width
                )?;
            }
        }
        Some("resize") => {
            let dir = Path::new(&args[1]);
            for line in std::fs::read_to_string(dir.join("cases.txt"))?.lines() {
                let f: Vec<&str> = line.split_whitespace().collect();
                let n: Vec<usize> = f[1..5].iter().map(|s| s.parse().unwrap()).collect();
                let raw = std::fs::read(dir.join(format!("{}.src.f32", f[0])))?;
                let src: Vec<f32> = raw
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                let out = resize_bilinear_f32(&src, n[1], n[0], n[3], n[2]);
                std::fs::write(dir.join(format!("{}.out.f32", f[0])), f32_bytes(&out))?;
            }
        }
        _ => eprintln!("usage: parity_dump images OUT_DIR FILE... | parity_dump resize DIR"),
    }
    Ok(())
}
