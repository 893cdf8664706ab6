//! `clip-es run`: the whole CLIP-ES pipeline in one command: `cams` into `<out>/cams`, `masks`
//! into `<out>/masks`, then (with `--gt`) `eval` of the CAMs and of the masks. Each stage is the
//! same code as its own subcommand, so it is resumable the same way.

use super::cams::DatasetArgs;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    data: DatasetArgs,
    /// Ground-truth masks (<id>.png): evaluate the CAMs and the masks against them
    #[arg(long)]
    gt: Option<PathBuf>,
    /// Model (see `clip-es cams --help`)
    #[arg(long, default_value = clip_es_model::DEFAULT_MODEL)]
    model: String,
    /// Output directory: cams/ and masks/ are made inside
    #[arg(long)]
    out: PathBuf,
    /// Threads (default: all cores)
    #[arg(long)]
    threads: Option<usize>,
    /// Longer image side the ViT sees (see `clip-es cams --help`)
    #[arg(long)]
    max_side: Option<usize>,
    #[command(flatten)]
    exif: super::common::ExifArgs,
}

fn os(v: &[&str]) -> Vec<OsString> {
    v.iter().map(OsString::from).collect()
}

pub fn run(args: Args) -> ExitCode {
    let split = match args.data.split.as_ref().or(args.data.labels.as_ref()) {
        Some(s) => s.clone(),
        None => {
            eprintln!("error: give --split and/or --labels to say which images to process");
            return ExitCode::from(2);
        }
    };
    let cams_dir = args.out.join("cams");
    let masks_dir = args.out.join("masks");
    let threads = args.threads.map(|t| t.to_string());

    let mut cams = os(&["cams", "--model", &args.model]);
    cams.extend(args.data.to_args());
    cams.extend([OsString::from("--out"), cams_dir.clone().into()]);
    let mut masks = os(&["masks"]);
    masks.extend([
        OsString::from("--cams"),
        cams_dir.clone().into(),
        "--images".into(),
        args.data.images.clone().into(),
        "--split".into(),
        split.clone().into(),
        "--out".into(),
        masks_dir.clone().into(),
    ]);
    cams.extend(args.exif.to_args());
    masks.extend(args.exif.to_args());
    if let Some(m) = args.max_side {
        cams.extend(os(&["--max-side", &m.to_string()]));
    }
    if let Some(t) = &threads {
        cams.extend(os(&["--threads", t]));
        masks.extend(os(&["--jobs", t]));
    }
    let mut stages = vec![("CAMs", cams), ("pseudo masks", masks)];
    if let Some(gt) = &args.gt {
        for (what, dir) in [("--cams", &cams_dir), ("--masks", &masks_dir)] {
            let mut eval = os(&["eval", what]);
            eval.push(dir.clone().into());
            eval.extend([
                OsString::from("--gt"),
                gt.clone().into(),
                "--split".into(),
                split.clone().into(),
            ]);
            eval.extend(os(&["--classes", &args.data.dataset]));
            stages.push((
                if what == "--cams" {
                    "evaluation of the CAMs"
                } else {
                    "evaluation of the masks"
                },
                eval,
            ));
        }
    }
    let mut worst = ExitCode::SUCCESS;
    for (what, argv) in stages {
        eprintln!("== {what}");
        let code = super::dispatch(argv);
        if code != ExitCode::SUCCESS {
            // A stage with failed images (exit 1) still lets the next stages run on the rest.
            worst = code;
            if code == ExitCode::from(2) {
                eprintln!("error: the {what} stage could not run; stopping");
                return code;
            }
        }
    }
    worst
}
