//! Command-line interface: one module per subcommand, each with its clap `Args` and `run`.

mod cams;
mod eval;
mod masks;

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
    /// CAMs (Softmax-GradCAM + class-aware attention affinity) for a dataset
    Cams(cams::Args),
    /// Pseudo masks from CAMs with the dense CRF and a confidence threshold
    Masks(masks::Args),
    /// mIoU of CAMs or masks against ground truth
    Eval(eval::Args),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Cams(a) => cams::run(a),
        Command::Masks(a) => masks::run(a),
        Command::Eval(a) => eval::run(a),
    }
}
