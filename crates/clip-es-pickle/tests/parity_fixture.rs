//! Checks on the parity fixture (random ViT-B/16 weights, reference CAMs), outside CI:
//!
//!     cargo test --release -p clip-es-pickle --test parity_fixture -- --ignored --nocapture
//!
//! The fixture directory is `$CLIP_ES_PARITY_DIR` (no default); missing files are
//! reported and skipped.

use clip_es_pickle::{read_npy_dict, read_torch_archive, DType};
use std::path::PathBuf;
use std::time::Instant;

fn parity_dir() -> PathBuf {
    std::env::var_os("CLIP_ES_PARITY_DIR")
        .map(PathBuf::from)
        .expect("set CLIP_ES_PARITY_DIR to the parity directory (tools/parity/README.md)")
}

/// The TorchScript archive (float16) and the state dict (float32 holding fp16-representable
/// values) must give the same names and the same values.
#[test]
#[ignore]
fn torchscript_and_state_dict_agree() {
    let dir = parity_dir().join("fixture");
    let (sd_path, jit_path) = (
        dir.join("ViT-B-16-random.pt"),
        dir.join("ViT-B-16-random-jit.pt"),
    );
    if !sd_path.exists() || !jit_path.exists() {
        eprintln!(
            "skipped: {} or {} missing",
            sd_path.display(),
            jit_path.display()
        );
        return;
    }
    let start = Instant::now();
    let sd = read_torch_archive(&sd_path).unwrap();
    let t_sd = start.elapsed();
    let start = Instant::now();
    let jit = read_torch_archive(&jit_path).unwrap();
    let t_jit = start.elapsed();
    eprintln!(
        "read {} tensors from {} in {:.0} ms, {} from {} in {:.0} ms",
        sd.len(),
        sd_path.display(),
        t_sd.as_secs_f64() * 1e3,
        jit.len(),
        jit_path.display(),
        t_jit.as_secs_f64() * 1e3
    );
    let sd_names: Vec<&str> = sd.iter().map(|(n, _)| n.as_str()).collect();
    let mut jit_names: Vec<&str> = jit.iter().map(|(n, _)| n.as_str()).collect();
    let mut sorted_sd = sd_names.clone();
    sorted_sd.sort();
    jit_names.sort();
    assert_eq!(sorted_sd, jit_names, "same tensor names");
    assert!(sd_names.contains(&"visual.transformer.resblocks.0.attn.in_proj_weight"));
    let jit: std::collections::HashMap<_, _> = jit.into_iter().collect();
    let mut values = 0usize;
    for (name, a) in &sd {
        let b = &jit[name];
        assert_eq!(a.dtype, DType::F32, "{name}");
        assert_eq!(b.dtype, DType::F16, "{name}");
        assert_eq!(a.shape, b.shape, "{name}");
        let (va, vb) = (a.to_f32_vec(), b.to_f32_vec());
        assert!(va == vb, "{name}: values differ");
        values += va.len();
    }
    eprintln!("{} tensors, {values} values identical", sd.len());
}

/// Every reference CAM file reads back as {"keys": i64 [n], "attn_highres": f16 [n, h, w]}.
#[test]
#[ignore]
fn reference_cams_read_back() {
    let dir = parity_dir().join("runs/voc/cams");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!("skipped: {} missing", dir.display());
        return;
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "npy"))
        .collect();
    files.sort();
    let start = Instant::now();
    for path in &files {
        let arrays = read_npy_dict(path).unwrap();
        let names: Vec<&str> = arrays.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["keys", "attn_highres"], "{}", path.display());
        let keys = arrays[0].1.to_i64_vec().unwrap();
        let cams = &arrays[1].1;
        assert_eq!(cams.dtype, DType::F16);
        assert_eq!(cams.shape.len(), 3);
        assert_eq!(cams.shape[0], keys.len());
        let sum: f64 = cams.to_f32_vec().iter().map(|&v| v as f64).sum();
        eprintln!(
            "{}: keys {keys:?} cams {:?} sum {sum:.4}",
            path.file_name().unwrap().to_string_lossy(),
            cams.shape
        );
    }
    eprintln!(
        "{} CAM files in {:.1} ms",
        files.len(),
        start.elapsed().as_secs_f64() * 1e3
    );
}
