//! `clip-es run`: the whole CLIP-ES pipeline in one command: `cams` into `<out>/cams`, `masks`
//! into `<out>/masks`, then (with `--gt`) `eval` of the CAMs and of the masks. Each stage is the
//! same code as its own subcommand, so it is resumable the same way.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Classes: `voc`, `coco`, or a class file (one `name` or `name: prompt text` per line)
    #[arg(long, default_value = "voc")]
    dataset: String,
    /// Directory of the images
    #[arg(long)]
    images: PathBuf,
    /// VOC annotations directory (labels from <id>.xml)
    #[arg(long, conflicts_with = "labels")]
    annotations: Option<PathBuf>,
    /// Label file with lines `id l1 l2 ...`; without --split, its ids are the images
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Split file: one image id per line, optionally followed by its labels
    #[arg(long)]
    split: Option<PathBuf>,
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
}

fn os(v: &[&str]) -> Vec<OsString> {
    v.iter().map(OsString::from).collect()
}

pub fn run(args: Args) -> ExitCode {
    let split = match args.split.as_ref().or(args.labels.as_ref()) {
        Some(s) => s.clone(),
        None => {
            eprintln!("error: give --split and/or --labels to say which images to process");
            return ExitCode::from(2);
        }
    };
    let cams_dir = args.out.join("cams");
    let masks_dir = args.out.join("masks");
    let threads = args.threads.map(|t| t.to_string());

    let mut cams = os(&["cams", "--dataset", &args.dataset, "--model", &args.model]);
    cams.extend([OsString::from("--images"), args.images.clone().into(), "--out".into(), cams_dir.clone().into()]);
    for (flag, value) in [("--annotations", &args.annotations), ("--labels", &args.labels), ("--split", &args.split)] {
        if let Some(v) = value {
            cams.extend([OsString::from(flag), v.clone().into()]);
        }
    }
    let mut masks = os(&["masks"]);
    masks.extend([
        OsString::from("--cams"),
        cams_dir.clone().into(),
        "--images".into(),
        args.images.clone().into(),
        "--split".into(),
        split.clone().into(),
        "--out".into(),
        masks_dir.clone().into(),
    ]);
    if let Some(t) = &threads {
        cams.extend(os(&["--threads", t]));
        masks.extend(os(&["--jobs", t]));
    }
    let mut stages = vec![("CAMs", cams), ("pseudo masks", masks)];
    if let Some(gt) = &args.gt {
        for (what, dir) in [("--cams", &cams_dir), ("--masks", &masks_dir)] {
            let mut eval = os(&["eval", what]);
            eval.push(dir.clone().into());
            eval.extend([OsString::from("--gt"), gt.clone().into(), "--split".into(), split.clone().into()]);
            eval.extend(os(&["--classes", &args.dataset]));
            stages.push((if what == "--cams" { "evaluation of the CAMs" } else { "evaluation of the masks" }, eval));
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
