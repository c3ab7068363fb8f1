//! Blocking work (a SQLite read or write) from async code: `block_in_place` on the
//! multi-threaded runtime `serve` runs, inline where that is not possible (fuzzing).

use std::cell::Cell;

thread_local! {
    /// Set while a short piece of work runs on the worker thread itself (`run_here`).
    static HERE: Cell<bool> = const { Cell::new(false) };
}

/// Runs `work`, which may block, without stalling the other tasks of this worker
/// thread: the worker's queue moves to another thread meanwhile. Inside `run_here`,
/// it runs where it is.
pub fn run<T>(work: impl FnOnce() -> T) -> T {
    if HERE.get() {
        return work();
    }
    off_worker(work)
}

/// Runs `work`, which may wait (for a lock another writer holds, a network peer), off
/// the worker thread even inside `run_here`.
pub fn off_worker<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

/// Runs `work`, a read of a few rows (tens of microseconds), on the worker thread
/// itself: handing the thread over costs more than that (two context switches, and
/// under load a wait for the other core). `run` inside it does not hand over either.
pub fn run_here<T>(work: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            HERE.set(self.0);
        }
    }
    let _restore = Restore(HERE.replace(true));
    work()
}

/// Waits for `future` from blocking work (output written between chunks of a long
/// answer).
pub fn wait<F: std::future::Future>(future: F) -> F::Output {
    off_worker(|| tokio::runtime::Handle::current().block_on(future))
}
