//! How a stage reports progress to its front end, and the per-image loop the stages share.
//! The library prints nothing itself: the CLI draws progress bars and prints the messages, a
//! Python module or a test can ignore them ([`Silent`]).

use std::fmt::Display;

/// Receives a stage's progress. Every method has a do-nothing default.
pub trait Progress: Sync {
    /// Work on `len` items named `what` begins.
    fn start(&self, _what: &str, _len: usize) {}
    /// One item is finished (successfully or not).
    fn advance(&self) {}
    /// An item failed; the stage goes on with the others.
    fn failed(&self, _id: &str, _error: &str) {}
    /// A status line (counts, timings).
    fn message(&self, _text: &str) {}
    /// The work announced by `start` is over.
    fn finish(&self) {}
}

/// Progress that goes nowhere.
#[derive(Clone, Copy, Debug, Default)]
pub struct Silent;

impl Progress for Silent {}

/// A rayon pool of `threads` threads (all cores when `None`).
pub fn thread_pool(threads: Option<usize>) -> Result<rayon::ThreadPool, String> {
    let mut b = rayon::ThreadPoolBuilder::new();
    if let Some(t) = threads {
        if t == 0 {
            return Err("the number of threads must be at least 1".into());
        }
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
