//! `clip-es predict`: label maps of a trained network (library: `clip_es_train::predict`), one
//! PNG per image that `clip-es eval --masks` scores. A failing image is reported and left out;
//! finished files are skipped on a rerun.

use super::common::{exit_code, progress_bar, report_failures};
use anyhow::Context;
use clip_es::atomic::write_bytes_atomic;
use clip_es::datasets::read_split;
use clip_es::masks::encode_label_png;
use clip_es_train::model::Net;
use clip_es_train::predict::{predict_decoder, predict_deeplab};
use clip_es_train::{device, Arch, Model};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A checkpoint written by `clip-es train` (checkpoint-*.safetensors or final.safetensors)
    #[arg(long)]
    checkpoint: PathBuf,
    /// Directory of the images
    #[arg(long)]
    images: PathBuf,
    /// Split file: one image id per line (first token)
    #[arg(long)]
    split: PathBuf,
    /// Output directory of the label PNGs (<id>.png)
    #[arg(long)]
    out: PathBuf,
    /// DeepLab-v2: extra input scales whose logits are max-pooled with the full-size ones
    /// [default: the training setting, 0.5,0.75]
    #[arg(long, value_delimiter = ',')]
    scales: Option<Vec<f32>>,
    /// clip-decoder: the CLIP model [default: the one the checkpoint was trained with]
    #[arg(long)]
    model: Option<String>,
    /// Write grayscale PNGs instead of VOC-palette ones
    #[arg(long)]
    grayscale: bool,
    /// Compute device: flex (CPU); cuda or wgpu in builds with those features
    #[arg(long, default_value = "flex")]
    device: String,
    /// Worker threads (default: all cores)
    #[arg(long, short)]
    jobs: Option<usize>,
}

pub fn run(args: Args) -> ExitCode {
    exit_code(run_inner(args))
}

fn run_inner(a: Args) -> anyhow::Result<ExitCode> {
    if let Some(j) = a.jobs {
        anyhow::ensure!(j > 0, "--jobs must be at least 1");
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(j)
            .build_global();
    }
    let dev = device(&a.device)?;
    let (mut model, _, meta) = Model::open(&a.checkpoint, &dev)?;
    if let (Some(s), Net::DeepLab(n)) = (&a.scales, &mut model.net) {
        n.config.msc_scales = s.clone();
    }
    let ids = read_split(&a.split)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("{}", a.out.display()))?;
    let vision = if model.arch() == Arch::ClipDecoder {
        let spec = a
            .model
            .clone()
            .or_else(|| meta["clip_model"].as_str().map(String::from))
            .unwrap_or_else(|| "ViT-B/16".into());
        Some(
            clip_es_model::Clip::load(&spec)
                .with_context(|| format!("loading CLIP `{spec}`"))?
                .into_vision(),
        )
    } else {
        None
    };
    // Images run one after another, each on all the pool's threads inside the network.
    let pb = progress_bar(ids.len(), "predict");
    let mut failures: Vec<(String, String)> = Vec::new();
    for id in &ids {
        let out = a.out.join(format!("{id}.png"));
        let r = (|| -> anyhow::Result<()> {
            if out.is_file() {
                return Ok(());
            }
            let image = clip_es_train::data::find_image(&a.images, id)?;
            let (labels, h, w) = match &vision {
                Some(v) => predict_decoder(&model, v, &image)?,
                None => predict_deeplab(&model, &image)?,
            };
            let png = encode_label_png(&labels, w, h, !a.grayscale)?;
            write_bytes_atomic(&out, &png).with_context(|| format!("{}", out.display()))?;
            Ok(())
        })();
        if let Err(e) = r {
            pb.suspend(|| eprintln!("{id}: {e:#}"));
            failures.push((id.to_string(), format!("{e:#}")));
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok(report_failures(&failures))
}
