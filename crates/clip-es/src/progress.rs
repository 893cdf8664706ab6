//! How a stage reports progress to its front end (the [`Progress`] protocol of
//! `clip_es_data::progress`, re-exported here), and the per-image loop the stages share.
//! The library prints nothing itself: the CLI draws progress bars and prints the messages, a
//! Python module or a test can ignore them ([`Silent`]).

use std::fmt::Display;

pub use clip_es_data::progress::{IterationRecord, Progress, Silent};

/// A rayon pool of `threads` threads (all cores when `None`).
/// The most worker threads a stage accepts (a huge count would try to spawn them all).
pub const MAX_THREADS: usize = 4096;

/// A thread count's range: 1 to [`MAX_THREADS`].
pub fn check_threads(threads: usize) -> Result<(), String> {
    if (1..=MAX_THREADS).contains(&threads) {
        Ok(())
    } else {
        Err(format!(
            "--threads must be in 1..={MAX_THREADS}, got {threads}"
        ))
    }
}

pub fn thread_pool(threads: Option<usize>) -> Result<rayon::ThreadPool, String> {
    let mut b = rayon::ThreadPoolBuilder::new();
    if let Some(t) = threads {
        check_threads(t)?;
        b = b.num_threads(t);
    }
    b.build().map_err(|e| format!("thread pool: {e}"))
}

/// Per image id, in the order given: what the work gave.
pub type ImageResults<T, E> = Vec<(String, Result<T, E>)>;

/// Runs `work` for every id on a pool of `threads` threads, reporting each item to `progress`
/// (failures as they happen). Results come back in the order of `ids`.
pub fn for_each_image<T: Send, E: Display + Send>(
    ids: &[String],
    threads: Option<usize>,
    what: &str,
    progress: &dyn Progress,
    work: impl Fn(&str) -> Result<T, E> + Sync,
) -> Result<ImageResults<T, E>, String> {
    use rayon::prelude::*;
    let pool = thread_pool(threads)?;
    progress.start(what, ids.len());
    let results = pool.install(|| {
        ids.par_iter()
            .map(|id| {
                let r = work(id);
                if let Err(e) = &r {
                    progress.failed(id, &e.to_string());
                }
                progress.advance();
                (id.clone(), r)
            })
            .collect()
    });
    progress.finish();
    Ok(results)
}

/// Says once per run, through [`Progress::message`], that photos carry an EXIF orientation tag
/// that is being ignored (every stage reads the stored pixel grid unless told to apply it).
#[derive(Debug, Default)]
pub struct ExifNotice {
    said: std::sync::atomic::AtomicBool,
    applied: bool,
}

impl ExifNotice {
    pub fn new(mode: clip_es_image::ExifOrientation) -> Self {
        ExifNotice {
            said: Default::default(),
            applied: mode == clip_es_image::ExifOrientation::Apply,
        }
    }

    /// Called with each image's orientation tag (1: none).
    pub fn note(&self, id: &str, orientation: u16, progress: &dyn Progress) {
        use std::sync::atomic::Ordering;
        if orientation == 1 || self.applied || self.said.swap(true, Ordering::Relaxed) {
            return;
        }
        progress.message(&format!(
            "warning: {id} (and maybe more images) has an EXIF orientation tag ({orientation}); it is ignored and the pixels are read as stored, in every stage (apply it with --apply-exif-orientation, given to cams and masks alike)"
        ));
    }
}
