//! `clip-es cams`: CLIP-ES CAMs for a dataset (paper sections 3.1-3.3; reference
//! `generate_cams_voc12.py`, `generate_cams_coco14.py`). One `<id>.npz` per image, written
//! atomically; finished images are skipped on a rerun; `--shard I/N` splits the work between
//! machines; a failing image is reported and skipped, and the exit code is 1 if any failed.

use super::common::{exit_code, progress_bar, report_failures};
use anyhow::Context;
use clip_es::cam::{cams_for_image, Augment, CamOptions, StageTimes, TextClassifier};
use clip_es::cam_io::CamFile;
use clip_es::datasets::{self, Sample};
use clip_es::prompts::{ClassSet, DEFAULT_TEMPLATE};
use clip_es_image::DecodedImage;
use clip_es_model::{Clip, DEFAULT_MODEL};
use half::f16;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

/// Which images and labels: shared by `cams` and `run`.
#[derive(clap::Args, Debug, Clone)]
pub struct DatasetArgs {
    /// Classes: `voc`, `coco`, or a class file (one `name` or `name: prompt text` per line)
    #[arg(long, default_value = "voc")]
    pub dataset: String,
    /// Directory of the images (<id>.jpg, or another usual extension)
    #[arg(long)]
    pub images: PathBuf,
    /// VOC annotations directory: labels are the objects of <id>.xml
    #[arg(long, conflicts_with = "labels")]
    pub annotations: Option<PathBuf>,
    /// Label file with lines `id l1 l2 ...` (class indices or names); without --split, its ids
    /// are the images to process
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Split file: one image id per line, optionally followed by its labels (COCO format)
    #[arg(long)]
    pub split: Option<PathBuf>,
}

impl DatasetArgs {
    /// The same options as command-line arguments.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec![
            "--dataset".into(),
            (&self.dataset).into(),
            "--images".into(),
            self.images.clone().into(),
        ];
        for (flag, value) in [
            ("--annotations", &self.annotations),
            ("--labels", &self.labels),
            ("--split", &self.split),
        ] {
            if let Some(v) = value {
                a.extend([flag.into(), v.clone().into()]);
            }
        }
        a
    }
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    data: DatasetArgs,
    /// Model: a Hugging Face id, a local directory or file (HF, OpenAI .pt), or ViT-B/16 etc.
    #[arg(long, default_value = DEFAULT_MODEL)]
    model: String,
    /// Output directory for <id>.npz
    #[arg(long)]
    out: PathBuf,
    /// CAA box threshold (default: 0.4 for voc and class files, 0.7 for coco)
    #[arg(long)]
    box_threshold: Option<f64>,
    /// Background words: `voc`, `coco`, `none` or a file with one word per line
    /// (default: the dataset's; coco's for class files)
    #[arg(long)]
    background: Option<String>,
    /// Prompt template(s), `{}` standing for the class name; several are averaged
    #[arg(long = "template", default_value = DEFAULT_TEMPLATE)]
    templates: Vec<String>,
    /// Also save the unrefined GradCAM maps (`highres`)
    #[arg(long)]
    save_unrefined: bool,
    /// Test-time augmentation: scales at which the CAMs are also computed and averaged after
    /// resizing to the image size (each input side is rounded up to the patch size)
    #[arg(long, default_value = "1.0", value_parser = Augment::parse_scales)]
    scales: ::std::vec::Vec<f64>,
    /// Test-time augmentation: also compute the CAMs of the mirrored image at every scale
    /// (mirrored back before averaging)
    #[arg(long)]
    flip: bool,
    /// Keep the resized positional embedding in float32 (the reference rounds it to float16)
    #[arg(long)]
    exact_pos_embed: bool,
    /// Process only shard I of N (0-based): images whose position in the split is I mod N
    #[arg(long, value_parser = parse_shard)]
    shard: Option<(usize, usize)>,
    /// Threads (default: all cores)
    #[arg(long)]
    threads: Option<usize>,
    /// Recompute images whose output exists (by default they are skipped)
    #[arg(long)]
    overwrite: bool,
    /// Write a JSON report (per-image seconds by stage, failures) to this file
    #[arg(long)]
    report: Option<PathBuf>,
}

fn parse_shard(s: &str) -> Result<(usize, usize), String> {
    let (i, n) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?}: expected I/N, e.g. 0/4"))?;
    let i: usize = i.trim().parse().map_err(|e| format!("{s:?}: {e}"))?;
    let n: usize = n.trim().parse().map_err(|e| format!("{s:?}: {e}"))?;
    if n == 0 || i >= n {
        return Err(format!("{s:?}: need 0 <= I < N"));
    }
    Ok((i, n))
}

/// Accumulated seconds per stage over the processed images.
#[derive(Default)]
struct Totals {
    images: usize,
    decode: f64,
    stages: StageTimes,
    write: f64,
    /// Per image: id and its stage seconds, for --report.
    per_image: Vec<serde_json::Value>,
}

impl Totals {
    fn add(&mut self, id: &str, decode: f64, t: &StageTimes, write: f64) {
        self.per_image.push(serde_json::json!({
            "id": id,
            "seconds": decode + t.forward + t.backward + t.affinity + t.resize + write,
            "decode": decode, "forward": t.forward, "backward": t.backward,
            "affinity": t.affinity, "resize": t.resize, "write": write,
        }));
        self.images += 1;
        self.decode += decode;
        self.stages.forward += t.forward;
        self.stages.backward += t.backward;
        self.stages.affinity += t.affinity;
        self.stages.resize += t.resize;
        self.write += write;
    }

    fn report(&self) {
        if self.images == 0 {
            return;
        }
        let n = self.images as f64;
        let s = &self.stages;
        let total = self.decode + s.forward + s.backward + s.affinity + s.resize + self.write;
        eprintln!(
            "seconds per image: {:.3} total = decode+resize {:.3}, forward {:.3}, GradCAM backward {:.3}, affinity {:.3}, upsample {:.3}, write {:.3}",
            total / n,
            self.decode / n,
            s.forward / n,
            s.backward / n,
            s.affinity / n,
            s.resize / n,
            self.write / n
        );
    }
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
    let mut classes = ClassSet::from_spec(&args.data.dataset)?;
    if let Some(bg) = &args.background {
        classes.background = ClassSet::background_from_spec(bg)?;
    }
    let box_threshold = args.box_threshold.unwrap_or(classes.box_threshold);
    anyhow::ensure!(
        (0.0..=1.0).contains(&box_threshold),
        "--box-threshold must be in [0, 1]"
    );
    anyhow::ensure!(
        args.templates.iter().all(|t| t.contains("{}")),
        "every --template must contain {{}}"
    );

    let (ids, source) = datasets::plan(
        args.data.split.as_deref(),
        args.data.labels.as_deref(),
        args.data.annotations.as_deref(),
    )?;
    let total_ids = ids.len();
    let ids: Vec<String> = match args.shard {
        Some((i, n)) => ids
            .into_iter()
            .enumerate()
            .filter(|(k, _)| k % n == i)
            .map(|(_, id)| id)
            .collect(),
        None => ids,
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let out_path = |id: &str| args.out.join(format!("{id}.npz"));
    let todo: Vec<&String> = ids
        .iter()
        .filter(|id| args.overwrite || !out_path(id).exists())
        .collect();
    eprintln!(
        "{} images in the split{}, {} already done, {} to process",
        total_ids,
        args.shard
            .map(|(i, n)| format!(" ({} in shard {i}/{n})", ids.len()))
            .unwrap_or_default(),
        ids.len() - todo.len(),
        todo.len()
    );
    if todo.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    // Partial files of a killed earlier run of these images (only this shard writes them).
    let finals: Vec<PathBuf> = todo.iter().map(|id| out_path(id)).collect();
    clip_es::atomic::remove_stale_partials(&args.out, finals.iter().map(PathBuf::as_path))
        .with_context(|| format!("cleaning {}", args.out.display()))?;

    let t = Instant::now();
    let clip = Clip::load(&args.model)?;
    let classifier = TextClassifier::build(
        &clip,
        &classes.prompt_names,
        &classes.background,
        &args.templates,
    )?;
    eprintln!(
        "model {} ({} blocks, width {}) and {} + {} text prompts ready in {:.1} s",
        clip.files.weights.display(),
        clip.config.vision.layers,
        clip.config.vision.width,
        classes.names.len(),
        classes.background.len(),
        t.elapsed().as_secs_f64()
    );
    let opts = CamOptions {
        box_threshold,
        attention_blocks: 8,
        round_pos_embed_f16: !args.exact_pos_embed,
        unrefined: args.save_unrefined,
    };

    let augment = Augment {
        scales: args.scales.clone(),
        flip: args.flip,
    };
    let pb = progress_bar(todo.len(), "cams");
    let mut totals = Totals::default();
    let mut failures: Vec<(String, String)> = Vec::new();
    for id in todo {
        let result = source
            .sample(id, &args.data.images, &classes)
            .map_err(anyhow::Error::msg)
            .and_then(|sample| {
                process(&clip, &classifier, &sample, &opts, &augment, &out_path(id))
            });
        match result {
            Ok((decode, stages, write)) => totals.add(id, decode, &stages, write),
            Err(e) => {
                pb.suspend(|| eprintln!("skipping {id}: {e:#}"));
                failures.push((id.clone(), format!("{e:#}")));
            }
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    eprintln!(
        "{} image(s) written to {}",
        totals.images,
        args.out.display()
    );
    totals.report();
    if let Some(path) = &args.report {
        let report = serde_json::json!({
            "model": clip.files.weights.display().to_string(),
            "threads": rayon::current_num_threads(),
            "images": totals.per_image,
            "failures": failures.iter().map(|(id, e)| serde_json::json!({"id": id, "error": e})).collect::<Vec<_>>(),
        });
        clip_es::atomic::write_bytes_atomic(
            path,
            serde_json::to_string_pretty(&report)?.as_bytes(),
        )
        .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report_failures(&failures))
}

/// One image: decode, CAMs, atomic write. Returns the decode, stage and write seconds.
fn process(
    clip: &Clip,
    classifier: &TextClassifier,
    sample: &Sample,
    opts: &CamOptions,
    augment: &Augment,
    out: &Path,
) -> anyhow::Result<(f64, StageTimes, f64)> {
    let t = Instant::now();
    let image = DecodedImage::open(&sample.image)?;
    let decode = t.elapsed().as_secs_f64();
    let (w, h) = (image.width() as usize, image.height() as usize);
    let (cams, stages) = cams_for_image(
        &clip.vision,
        classifier,
        &image,
        &sample.labels,
        opts,
        augment,
    )
    .with_context(|| format!("{}", sample.image.display()))?;
    let t = Instant::now();
    let to_f16 = |v: &[f32]| v.iter().map(|&x| f16::from_f32(x)).collect::<Vec<_>>();
    let file = CamFile {
        keys: sample.labels.iter().map(|&l| l as i64).collect(),
        height: h,
        width: w,
        attn_highres: to_f16(&cams.refined),
        highres: cams.unrefined.as_deref().map(to_f16),
    };
    file.write_npz(out)?;
    Ok((decode, stages, t.elapsed().as_secs_f64()))
}
