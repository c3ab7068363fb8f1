//! Giving a burst's memory back to the OS: mimalloc keeps freed memory a while and gives
//! it back only as it goes on allocating, so an idle server could keep a burst's peak.

/// Frees what this thread holds unused and purges every arena's free memory now. For
/// after a large piece of work (a message of megabytes), not per command.
pub fn give_back() {
    // SAFETY: mi_collect only walks mimalloc's own structures; it is safe from any
    // thread, and harmless when mimalloc is not the global allocator (tests, fuzzing).
    unsafe { libmimalloc_sys::mi_collect(true) }
}
