//! `clip-es cams`: CLIP-ES CAMs for a dataset (paper sections 3.1-3.3; reference
//! `generate_cams_voc12.py`, `generate_cams_coco14.py`). One `<id>.npz` per image, written
//! atomically; finished images are skipped on a rerun; `--shard I/N` splits the work between
//! machines; a failing image is reported and skipped, and the exit code is 1 if any failed.

use super::common::{exit_code, progress_bar, report_failures};
use anyhow::Context;
use clip_es::budget;
use clip_es::cam::{image_cams, CamOptions, StageTimes, TextClassifier};
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
    /// Images whose longer side exceeds this many pixels are downscaled for the ViT (their CAMs
    /// are still written at the original size); 0 never downscales. The default leaves VOC and
    /// COCO images (at most 640 pixels) as the reference runs them
    #[arg(long, default_value_t = 640)]
    max_side: usize,
    /// Memory limit in MB for one image's CAM computation (estimated before allocating; an
    /// image over it fails with a message). Default: the memory available (and `ulimit -v`)
    #[arg(long)]
    memory_limit: Option<u64>,
    #[command(flatten)]
    exif: super::common::ExifArgs,
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

    let (ids, source, note) = datasets::plan(
        args.data.split.as_deref(),
        args.data.labels.as_deref(),
        args.data.annotations.as_deref(),
    )?;
    if let Some(note) = note {
        eprintln!("note: {note}");
    }
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
    anyhow::ensure!(
        args.data.images.is_dir(),
        "--images {}: not a directory",
        args.data.images.display()
    );
    // Before the model is loaded: an unwritable output is found now, not after the work.
    clip_es::atomic::probe_dir(&args.out).map_err(anyhow::Error::msg)?;
    if let Some(r) = &args.report {
        clip_es::atomic::probe_file_dir(r).map_err(anyhow::Error::msg)?;
    }
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

    let limits = Limits {
        max_side: args.max_side,
        memory_limit: args.memory_limit.map(|mb| mb.saturating_mul(1_000_000)),
        exif: args.exif.mode(),
    };
    let warn = super::common::ExifWarning::new(limits.exif);

    let pb = progress_bar(todo.len(), "cams");
    let mut totals = Totals::default();
    let mut failures: Vec<(String, String)> = Vec::new();
    for id in todo {
        let result = source
            .sample(id, &args.data.images, &classes)
            .map_err(anyhow::Error::msg)
            .and_then(|sample| {
                process(
                    &clip,
                    &classifier,
                    &sample,
                    &opts,
                    &limits,
                    &out_path(id),
                    &|o| warn.note(id, o, &pb),
                )
            });
        match result {
            Ok((decode, stages, write)) => totals.add(id, decode, &stages, write),
            Err(e) => {
                let m = super::common::message(&e);
                pb.suspend(|| eprintln!("skipping {id}: {m}"));
                failures.push((id.clone(), m));
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

/// Size and memory limits of one image.
struct Limits {
    max_side: usize,
    /// Bytes; None: what the system has available when the image starts.
    memory_limit: Option<u64>,
    exif: clip_es_image::ExifOrientation,
}

/// One image: decode, CAMs, atomic write. Returns the decode, stage and write seconds.
/// `orientation` is told the file's EXIF orientation tag.
fn process(
    clip: &Clip,
    classifier: &TextClassifier,
    sample: &Sample,
    opts: &CamOptions,
    limits: &Limits,
    out: &Path,
    orientation: &dyn Fn(u16),
) -> anyhow::Result<(f64, StageTimes, f64)> {
    let t = Instant::now();
    let (image, tag) = DecodedImage::open_with(&sample.image, limits.exif)?;
    orientation(tag);
    let (w, h) = (image.width() as usize, image.height() as usize);
    let patch = clip.config.vision.patch_size;
    anyhow::ensure!(
        w >= patch && h >= patch,
        "{}: the image is {w}x{h}, smaller than the model's {patch}-pixel patch",
        sample.image.display()
    );
    let (ih, iw) = budget::vit_input_size(h, w, patch, limits.max_side);
    let shape = budget::CamShape {
        height: h,
        width: w,
        input_height: ih,
        input_width: iw,
        patch,
        model_width: clip.config.vision.width,
        heads: clip.config.vision.heads,
        attention_blocks: opts.attention_blocks.min(clip.config.vision.layers),
        labels: sample.labels.len(),
        unrefined: opts.unrefined,
        threads: rayon::current_num_threads(),
    };
    if let Some(limit) = limits.memory_limit.or_else(budget::available_bytes) {
        budget::check(&shape, limit)
            .map_err(|m| anyhow::anyhow!("{}: {m}", sample.image.display()))?;
    }
    let input = image.clip_input(ih, iw)?;
    drop(image);
    let decode = t.elapsed().as_secs_f64();

    let (cams, stages) = image_cams(
        &clip.vision,
        classifier,
        &input.data,
        ih,
        iw,
        h,
        w,
        &sample.labels,
        opts,
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
