//! Giving a burst's memory back to the OS: mimalloc keeps freed memory a while and gives
//! it back only as it goes on allocating, so an idle server could keep a burst's peak.

/// Frees what this thread holds unused and purges every arena's free memory now. For
/// after a large piece of work (a message of megabytes), not per command.
pub fn give_back() {
    // SAFETY: mi_collect only walks mimalloc's own structures; it is safe from any
    // thread, and harmless when mimalloc is not the global allocator (tests, fuzzing).
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// Turns transparent huge pages off for this process, unless `MIMALLOC_ALLOW_THP` says
/// otherwise. mimalloc asks for huge pages on its arenas, and each one touched is then
/// resident whole: 16 of an idle server's 19 MB of heap were 2 MiB pages barely used.
/// Call it first thing in `main`; pages made huge before it stay so.
pub fn small_pages() {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
        return;
    }
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE only sets a flag on this process's memory map.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}
