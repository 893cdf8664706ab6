//! DEV ONLY: compare CAMs against the reference dump in /work/parity/dev.
use candle_core::{safetensors, Device};
use clip_es::cam::{image_cams, CamOptions, TextClassifier};
use clip_es_model::{TextConfig, TextTransformer, TensorSource, VisionConfig, VisionTransformer};

fn main() {
    let w = safetensors::load("/work/parity/dev/openai.safetensors", &Device::Cpu).unwrap();
    let d = safetensors::load("/work/parity/dev/dump.safetensors", &Device::Cpu).unwrap();
    let vcfg = VisionConfig { width: 768, layers: 12, heads: 12, patch_size: 16, grid: 14, image_size: 224 };
    let tcfg = TextConfig { width: 512, layers: 12, heads: 8, context_length: 77, vocab_size: 49408 };
    let t0 = std::time::Instant::now();
    let text = TextTransformer::new(&w, &tcfg, 512, 1e-5).unwrap();
    let vision = VisionTransformer::new(&w, &vcfg, 512, 1e-5).unwrap();
    println!("build {:.2}s", t0.elapsed().as_secs_f64());
    let ids = |k: &str| -> Vec<Vec<u32>> {
        let t = &d[k];
        t.to_dtype(candle_core::DType::U32).unwrap().to_vec2::<u32>().unwrap()
    };
    let t0 = std::time::Instant::now();
    let fg = text.encode(&ids("fg_ids")).unwrap();
    let bg = text.encode(&ids("bg_ids")).unwrap();
    println!("text {:.2}s", t0.elapsed().as_secs_f64());
    let want = d["fg_features"].to_vec2::<f32>().unwrap();
    let mut md = 0f32;
    for (a, b) in fg.iter().zip(&want) { for (x, y) in a.iter().zip(b) { md = md.max((x - y).abs()); } }
    println!("text feature max abs diff {md:e}");
    let norm = |v: &Vec<Vec<f32>>| -> Vec<f32> { v.iter().flat_map(|r| { let n = r.iter().map(|x| x * x).sum::<f32>().sqrt(); r.iter().map(move |x| x / n) }).collect() };
    let clf = TextClassifier { embed_dim: 512, classes: norm(&fg), background: norm(&bg), logit_scale: w.scalar_f32("logit_scale").unwrap().exp() };
    for im in ["2026_000001", "2026_000002", "2026_000003", "2026_000004", "2026_000005", "2026_000006", "2026_000007"] {
        let x = &d[&format!("{im}.input")];
        let (_, h, wd) = x.dims3().unwrap();
        let px = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let labels: Vec<usize> = d[&format!("{im}.labels")].to_vec1::<i64>().unwrap().iter().map(|&v| v as usize).collect();
        let want = &d[&format!("{im}.attn_highres")];
        let (_, oh, ow) = want.dims3().unwrap();
        let want = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let t0 = std::time::Instant::now();
        let (cams, times) = image_cams(&vision, &clf, &px, h, wd, oh, ow, &labels, &CamOptions::default()).unwrap();
        let el = t0.elapsed().as_secs_f64();
        let mut diffs: Vec<f32> = cams.refined.iter().zip(&want).map(|(a, b)| (half::f16::from_f32(*a).to_f32() - b).abs()).collect();
        diffs.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let mean = diffs.iter().sum::<f32>() / diffs.len() as f32;
        println!("{im} {h}x{wd} labels {labels:?}: {el:.2}s ({times:?}) mean {mean:.5} p99 {:.5} max {:.5}", diffs[diffs.len() * 99 / 100], diffs[diffs.len() - 1]);
    }
}
