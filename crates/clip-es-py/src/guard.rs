//! What every entry point of the module runs its work through, so that Python sees Python
//! exceptions only: [`guard`] turns a Rust panic (a bug) into `RuntimeError` instead of pyo3's
//! `PanicException`, and [`interruptible`] runs long work with the GIL released while the
//! calling thread keeps answering signals, so that Ctrl-C raises `KeyboardInterrupt` in a
//! bounded time. (Allocation failures abort rather than panic; sizes are checked before the
//! allocations they drive, and the CRF allocates fallibly.)

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// How often the waiting thread looks for a pending signal.
const SIGNAL_POLL: Duration = Duration::from_millis(50);

fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

fn panic_error(payload: &(dyn Any + Send)) -> PyErr {
    PyRuntimeError::new_err(format!(
        "internal error in clip-es (please report it): {}",
        panic_message(payload)
    ))
}

/// Runs `f`, a panic inside it becoming a `RuntimeError` with the panic's message.
pub(crate) fn guard<T>(f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| Err(panic_error(&*p)))
}

/// Runs `work` on a helper thread with the GIL released; meanwhile the calling thread checks
/// for signals every [`SIGNAL_POLL`] (the GIL held only for that check). When a signal handler
/// raises (Ctrl-C: `KeyboardInterrupt`), the stop function given to `work` starts answering
/// true, and once `work` has returned, that exception is raised whatever `work` returned. (Python
/// handles signals on its main thread only: called from another thread, the checks find none.)
/// A panic in `work` becomes a `RuntimeError`.
pub(crate) fn interruptible<T, W>(py: Python<'_>, work: W) -> PyResult<T>
where
    T: Send,
    W: FnOnce(&(dyn Fn() -> bool + Sync)) -> T + Send,
{
    let stop = AtomicBool::new(false);
    let mut raised: Option<PyErr> = None;
    let outcome = py.detach(|| {
        std::thread::scope(|scope| {
            let (done_tx, done_rx) = mpsc::channel::<()>();
            let stop = &stop;
            let worker = scope.spawn(move || {
                let should_stop = || stop.load(Ordering::Relaxed);
                let out = catch_unwind(AssertUnwindSafe(|| work(&should_stop)));
                let _ = done_tx.send(());
                out
            });
            // Until the worker reports back (or is gone), check for signals at each timeout.
            while let Err(mpsc::RecvTimeoutError::Timeout) = done_rx.recv_timeout(SIGNAL_POLL) {
                if raised.is_none() {
                    if let Err(e) = Python::attach(|py| py.check_signals()) {
                        raised = Some(e);
                        stop.store(true, Ordering::Relaxed);
                    }
                }
            }
            worker.join().unwrap_or_else(Err)
        })
    });
    if let Some(e) = raised {
        return Err(e);
    }
    outcome.map_err(|p| panic_error(&*p))
}
