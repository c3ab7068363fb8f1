//! Short blocking work (a SQLite read or write) from async code: `block_in_place` on the
//! multi-threaded runtime `serve` runs, inline where that is not possible (fuzzing).

pub fn run<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}
