//! What the subcommands share: reading split files, thread pools, progress bars, and turning
//! a run's outcome into the exit code (0 all done, 1 some images failed, 2 could not run).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::fmt::Display;
use std::path::Path;
use std::process::ExitCode;

/// Image ids of a split file: the first token of each line (COCO-style label columns after it
/// are ignored here); duplicate ids are an error naming both lines.
pub fn read_split(path: &Path) -> anyhow::Result<Vec<String>> {
    let ids: Vec<String> = clip_es::datasets::read_id_file(path)?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    anyhow::ensure!(!ids.is_empty(), "{}: no image ids", path.display());
    Ok(ids)
}

/// The rayon pool for `--jobs`.
pub fn thread_pool(jobs: Option<usize>) -> anyhow::Result<rayon::ThreadPool> {
    let mut b = rayon::ThreadPoolBuilder::new();
    if let Some(j) = jobs {
        anyhow::ensure!(j > 0, "--jobs must be at least 1");
        b = b.num_threads(j);
    }
    Ok(b.build()?)
}

/// A progress bar on stderr with rate and ETA (drawn only on a terminal).
pub fn progress_bar(len: usize, what: &str) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr());
    pb.set_style(
        ProgressStyle::with_template(
            "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta})",
        )
        .expect("valid template"),
    );
    pb.set_prefix(what.to_string());
    pb
}

/// Runs `work` for every id on a pool of `jobs` threads with a progress bar, printing each
/// failure as it happens (above the bar). Results come back in the order of `ids`.
pub fn for_each_image<T: Send, E: Display + Send>(
    ids: &[String],
    jobs: Option<usize>,
    what: &str,
    work: impl Fn(&str) -> Result<T, E> + Sync,
) -> anyhow::Result<Vec<(String, Result<T, E>)>> {
    use rayon::prelude::*;
    let pool = thread_pool(jobs)?;
    let pb = progress_bar(ids.len(), what);
    let results = pool.install(|| {
        ids.par_iter()
            .map(|id| {
                let r = work(id);
                if let Err(e) = &r {
                    pb.suspend(|| eprintln!("{id}: {e}"));
                }
                pb.inc(1);
                (id.clone(), r)
            })
            .collect()
    });
    pb.finish_and_clear();
    Ok(results)
}

/// Lists the failed images (if any) and gives the exit code: 1 if any failed.
pub fn report_failures<I: Display, E: Display>(failures: &[(I, E)]) -> ExitCode {
    if failures.is_empty() {
        return ExitCode::SUCCESS;
    }
    eprintln!("{} image(s) failed:", failures.len());
    for (id, e) in failures {
        eprintln!("  {id}: {e}");
    }
    ExitCode::from(1)
}

/// The exit code of a command body: its own code, or 2 with the error printed.
pub fn exit_code(result: anyhow::Result<ExitCode>) -> ExitCode {
    result.unwrap_or_else(|e| {
        eprintln!("error: {}", message(&e));
        ExitCode::from(2)
    })
}

/// An error and its causes joined by `: `, each said once: the library errors already write
/// their cause into their own message (`path: No space left on device (os error 28)`), so a
/// cause whose text the message so far contains is not repeated.
pub fn message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if out.contains(&s) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&s);
    }
    out
}

/// `--apply-exif-orientation`, shared by every stage that reads images.
#[derive(clap::Args, Debug, Clone, Copy, Default)]
pub struct ExifArgs {
    /// Turn photos as their EXIF orientation tag says (as OpenCV's imread does). By default the
    /// tag is ignored and the pixels are read as stored, in every stage alike (like Pillow, the
    /// reference's CAMs and the datasets' ground truth). Give it to `cams` and `masks` alike
    #[arg(long)]
    pub apply_exif_orientation: bool,
}

impl ExifArgs {
    pub fn mode(self) -> clip_es_image::ExifOrientation {
        if self.apply_exif_orientation {
            clip_es_image::ExifOrientation::Apply
        } else {
            clip_es_image::ExifOrientation::Ignore
        }
    }

    pub fn to_args(self) -> Vec<std::ffi::OsString> {
        if self.apply_exif_orientation {
            vec!["--apply-exif-orientation".into()]
        } else {
            vec![]
        }
    }
}

/// Warns once per run, at the first image whose EXIF orientation tag is ignored.
#[derive(Default)]
pub struct ExifWarning {
    warned: std::sync::atomic::AtomicBool,
    pub apply: bool,
}

impl ExifWarning {
    pub fn new(mode: clip_es_image::ExifOrientation) -> Self {
        ExifWarning {
            warned: Default::default(),
            apply: mode == clip_es_image::ExifOrientation::Apply,
        }
    }

    /// Called with each image's orientation tag.
    pub fn note(&self, id: &str, orientation: u16, pb: &ProgressBar) {
        use std::sync::atomic::Ordering;
        if orientation == 1 || self.apply || self.warned.swap(true, Ordering::Relaxed) {
            return;
        }
        pb.suspend(|| {
            eprintln!(
                "warning: {id} (and maybe more images) has an EXIF orientation tag ({orientation}); it is ignored and the pixels are read as stored, in every stage (give --apply-exif-orientation to cams and masks alike to turn such photos)"
            )
        });
    }
}
