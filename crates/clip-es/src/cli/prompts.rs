//! `clip-es prompts`: ranks candidate prompt templates by the paper's sharpness criterion
//! (section 3.2) over a dataset's multi-label images. The work is [`clip_es::prompts::run`]'s;
//! this file maps the options to its config and prints the ranking.

use super::cams::DatasetArgs;
use super::common::{exit_code, report_failures, Bars};
use clip_es::prompts::{read_templates, PromptsConfig};
use clip_es_model::DEFAULT_MODEL;
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

pub fn run(args: Args) -> ExitCode {
    exit_code(run_inner(args))
}

fn run_inner(args: Args) -> anyhow::Result<ExitCode> {
    let config = PromptsConfig {
        data: args.data.config(),
        dataset: args.data.dataset.clone(),
        templates: read_templates(&args.templates)?,
        model: args.model,
        exact_pos_embed: args.exact_pos_embed,
        json: args.json,
        threads: args.threads,
        limits: clip_es::prompt_select::InputLimits {
            max_side: args.max_side,
            memory_limit: args.memory_limit.map(|mb| mb.saturating_mul(1_000_000)),
        },
    };
    let report = clip_es::prompts::run(&config, &Bars::default())?;
    println!(
        "sharpness of {} templates over {} multi-label images (lower is better; {} single-label images not used)",
        report.ranking.len(),
        report.images_used,
        report.single_label_images
    );
    println!("{:>4}  {:>12}  template", "rank", "sharpness");
    for (rank, t) in report.ranking.iter().enumerate() {
        println!("{:>4}  {:>12.4e}  {}", rank + 1, t.sharpness, t.template);
    }
    Ok(report_failures(&report.failures))
}
