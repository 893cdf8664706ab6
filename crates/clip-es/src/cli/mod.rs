//! Command-line interface: one module per subcommand, each with its clap `Args` and `run`.

mod bench;
mod cams;
mod common;
mod eval;
mod masks;
mod predict;
mod prompts;
mod run;
mod segment;
mod train;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "clip-es", version, about = "CLIP-ES weakly supervised semantic segmentation", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The whole pipeline: cams, masks, and with --gt the evaluation of both
    Run(run::Args),
    /// CAMs (Softmax-GradCAM + class-aware attention affinity) for a dataset
    Cams(cams::Args),
    /// Pseudo masks from CAMs with the dense CRF and a confidence threshold
    Masks(masks::Args),
    /// mIoU of CAMs or masks against ground truth
    Eval(eval::Args),
    /// Segment any photo: typed class names, a preset's, or label-free tags; writes label
    /// masks, overlays, heat maps and a JSON summary
    Segment(segment::Args),
    /// Rank prompt templates by the paper's sharpness criterion over multi-label images
    Prompts(prompts::Args),
    /// Speed of the image tower next to the machine's matmul speed
    Bench(bench::Args),
    /// Stage three: train DeepLab-v2 or a CLIP decoder on the pseudo masks
    Train(train::Args),
    /// Label maps of a trained network for a split (scored by `eval --masks`)
    Predict(predict::Args),
}

pub fn main() -> ExitCode {
    execute(Cli::parse())
}

fn execute(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Cams(a) => cams::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Run(a) => run::run(a),
        Command::Masks(a) => masks::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Segment(a) => segment::run(a),
        Command::Prompts(a) => prompts::run(a),
        Command::Train(a) => train::run(a),
        Command::Predict(a) => predict::run(a),
    }
}
