//! How a stage reports progress to its front end: one protocol for every stage, the per-image
//! stages of `clip-es` and the training stage of `clip-es-train` alike. The library prints
//! nothing itself: the CLI draws progress bars and prints the messages, a Python module or a
//! test can ignore them ([`Silent`]).

/// One training iteration, as the training stage reports it after the iteration's update.
#[derive(Clone, Debug, PartialEq)]
pub struct IterationRecord {
    /// The iteration just finished (1-based) and the last one of the run.
    pub iteration: usize,
    pub iters: usize,
    /// The iteration's mean loss and the learning rate it used.
    pub loss: f32,
    pub lr: f64,
    /// Seconds the iteration took.
    pub seconds: f64,
}

/// Receives a stage's progress. Every method has a do-nothing default.
pub trait Progress: Sync {
    /// Work on `len` items named `what` begins.
    fn start(&self, _what: &str, _len: usize) {}
    /// One item is finished (successfully or not).
    fn advance(&self) {}
    /// An item failed; the stage goes on with the others.
    fn failed(&self, _id: &str, _error: &str) {}
    /// A status line (counts, timings, notes such as a resumption).
    fn message(&self, _text: &str) {}
    /// The work announced by `start` is over.
    fn finish(&self) {}
    /// A training iteration is finished: one item of the work announced by `start`. A front
    /// end that shows the loss overrides this; by default it only advances.
    fn iteration(&self, _record: &IterationRecord) {
        self.advance()
    }
}

/// Progress that goes nowhere.
#[derive(Clone, Copy, Debug, Default)]
pub struct Silent;

impl Progress for Silent {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn an_iteration_advances_by_default() {
        #[derive(Default)]
        struct Count(AtomicUsize);
        impl Progress for Count {
            fn advance(&self) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let c = Count::default();
        let record = IterationRecord {
            iteration: 1,
            iters: 2,
            loss: 0.5,
            lr: 0.01,
            seconds: 0.1,
        };
        c.iteration(&record);
        c.iteration(&record);
        assert_eq!(c.0.load(Ordering::Relaxed), 2);
    }
}
