//! What the subcommands share: progress bars on stderr (the library's [`Progress`]), and
//! turning a run's outcome into the exit code (0 all done, 1 some images failed, 2 could not
//! run).

use clip_es::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::fmt::Display;
use std::process::ExitCode;
use std::sync::Mutex;

/// Progress bars on stderr with rate and ETA (drawn only on a terminal); messages and failures
/// are printed above the bar.
#[derive(Default)]
pub struct Bars {
    bar: Mutex<Option<ProgressBar>>,
}

impl Bars {
    fn with_bar(&self, f: impl FnOnce(Option<&ProgressBar>)) {
        let guard = self.bar.lock().unwrap_or_else(|p| p.into_inner());
        f(guard.as_ref())
    }

    fn print(&self, line: &str) {
        self.with_bar(|bar| match bar {
            Some(b) => b.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        })
    }
}

impl Progress for Bars {
    fn start(&self, what: &str, len: usize) {
        let pb = ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr());
        pb.set_style(
            ProgressStyle::with_template(
                "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta})",
            )
            .expect("valid template"),
        );
        pb.set_prefix(what.to_string());
        *self.bar.lock().unwrap_or_else(|p| p.into_inner()) = Some(pb);
    }

    fn advance(&self) {
        self.with_bar(|bar| {
            if let Some(b) = bar {
                b.inc(1)
            }
        })
    }

    fn failed(&self, id: &str, error: &str) {
        self.print(&format!("{id}: {error}"))
    }

    fn message(&self, text: &str) {
        self.print(text)
    }

    fn finish(&self) {
        if let Some(b) = self.bar.lock().unwrap_or_else(|p| p.into_inner()).take() {
            b.finish_and_clear();
        }
    }
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
}
