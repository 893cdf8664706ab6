//! `clip-es prompts`: ranks candidate prompt templates by the paper's sharpness criterion
//! (section 3.2; [`clip_es::prompt_select`]) over a dataset's multi-label images.

use super::cams::DatasetArgs;
use super::common::{exit_code, report_failures, Bars};
use anyhow::Context;
use clip_es::cam::TextClassifier;
use clip_es::classes::ClassSet;
use clip_es::datasets;
use clip_es::progress::Progress;
use clip_es::prompt_select::{
    embed_image, image_sharpness, label_scores, mean_sharpness, InputLimits,
};
use clip_es_image::DecodedImage;
use clip_es_model::{Clip, DEFAULT_MODEL};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    data: DatasetArgs,
    /// Candidate templates: one per line, `{}` standing for the class name (blank lines and
    /// lines starting with `#` are skipped)
    #[arg(long)]
    templates: PathBuf,
    /// Model (see `clip-es cams --help`)
    #[arg(long, default_value = DEFAULT_MODEL)]
    model: String,
    /// Also write the ranking as JSON to this file
    #[arg(long)]
    json: Option<PathBuf>,
    /// Keep the resized positional embedding in float32 (the reference rounds it to float16)
    #[arg(long)]
    exact_pos_embed: bool,
    /// Threads (default: all cores)
    #[arg(long)]
    threads: Option<usize>,
    /// Images whose longer side exceeds this many pixels are downscaled for the ViT (the
    /// shorter side is kept at 224 pixels or more); 0 never downscales. Same as `clip-es cams
    /// --max-side`
    #[arg(long, default_value_t = clip_es::budget::DEFAULT_MAX_SIDE)]
    max_side: usize,
    /// Memory limit in MB for one image's forward pass (estimated before allocating; an image
    /// over it fails with a message). Default: the memory available
    #[arg(long)]
    memory_limit: Option<u64>,
}

fn read_templates(path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let text = clip_es::classes::read_text_file(path)
        .with_context(|| format!("reading {}", path.display()))?;
    let mut out: Vec<String> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        anyhow::ensure!(
            t.contains("{}"),
            "{}:{}: template {t:?} has no {{}} for the class name",
            path.display(),
            i + 1
        );
        anyhow::ensure!(
            !out.iter().any(|o| o == t),
            "{}:{}: template {t:?} listed twice",
            path.display(),
            i + 1
        );
        out.push(t.to_string());
    }
    anyhow::ensure!(!out.is_empty(), "{}: no templates", path.display());
    Ok(out)
}

pub fn run(args: Args) -> ExitCode {
    exit_code(run_inner(args))
}

fn run_inner(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(t) = args.threads {
        anyhow::ensure!(t > 0, "--threads must be at least 1");
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global()
            .context("setting up the thread pool")?;
    }
    let limits = InputLimits {
        max_side: args.max_side,
        memory_limit: args.memory_limit.map(|mb| mb.saturating_mul(1_000_000)),
    };
    limits.validate().map_err(anyhow::Error::msg)?;
    let templates = read_templates(&args.templates)?;
    let classes = ClassSet::from_spec(&args.data.dataset)?;
    let (ids, source, note) = datasets::plan(
        args.data.split.as_deref(),
        args.data.labels.as_deref(),
        args.data.annotations.as_deref(),
    )?;
    if let Some(note) = note {
        eprintln!("note: {note}");
    }
    let clip = Clip::load(&args.model)?;
    let classifiers = templates
        .iter()
        .map(|t| TextClassifier::build(&clip, &classes.prompt_names, &[], std::slice::from_ref(t)))
        .collect::<Result<Vec<_>, _>>()?;
    let patch = clip.config().vision.patch_size;

    let pb = Bars::default();
    pb.start("prompts", ids.len());
    let mut per_template: Vec<Vec<f64>> = vec![Vec::new(); templates.len()];
    let mut single_label = 0usize;
    let mut failures: Vec<(String, String)> = Vec::new();
    for id in &ids {
        let r = (|| -> anyhow::Result<bool> {
            let sample = source
                .sample(id, &args.data.images, &classes)
                .map_err(anyhow::Error::msg)?;
            if sample.labels.len() < 2 {
                return Ok(false);
            }
            let image = DecodedImage::open(&sample.image)?;
            let (w, h) = (image.width() as usize, image.height() as usize);
            anyhow::ensure!(
                w >= patch && h >= patch,
                "{}: the image is {w}x{h}, smaller than the model's {patch}-pixel patch",
                sample.image.display()
            );
            let z = embed_image(clip.vision(), &image, &limits, !args.exact_pos_embed)
                .with_context(|| sample.image.display().to_string())?;
            for (k, c) in classifiers.iter().enumerate() {
                per_template[k].push(image_sharpness(&label_scores(&z, c, &sample.labels)));
            }
            Ok(true)
        })();
        match r {
            Ok(true) => {}
            Ok(false) => single_label += 1,
            Err(e) => {
                pb.message(&format!("skipping {id}: {e:#}"));
                failures.push((id.clone(), format!("{e:#}")));
            }
        }
        pb.advance();
    }
    pb.finish();
    let used = per_template[0].len();
    anyhow::ensure!(
        used > 0,
        "no image with two or more labels ({single_label} single-label images, {} failed): sharpness needs multi-label images",
        failures.len()
    );
    let mut ranked: Vec<(usize, f64)> = per_template
        .iter()
        .map(|v| mean_sharpness(v))
        .enumerate()
        .collect();
    ranked.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    println!(
        "sharpness of {} templates over {used} multi-label images (lower is better; {single_label} single-label images not used)",
        templates.len()
    );
    println!("{:>4}  {:>12}  template", "rank", "sharpness");
    for (rank, (k, s)) in ranked.iter().enumerate() {
        println!("{:>4}  {:>12.4e}  {}", rank + 1, s, templates[*k]);
    }
    if let Some(path) = &args.json {
        let json = serde_json::json!({
            "model": clip.files().weights.display().to_string(),
            "dataset": args.data.dataset,
            "images_used": used,
            "single_label_images": single_label,
            "failed_images": failures.len(),
            "templates": ranked.iter().enumerate().map(|(rank, (k, s))| serde_json::json!({
                "rank": rank + 1,
                "template": templates[*k],
                "sharpness": s,
            })).collect::<Vec<_>>(),
        });
        clip_es::atomic::write_bytes_atomic(path, serde_json::to_string_pretty(&json)?.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report_failures(&failures))
}
