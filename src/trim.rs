//! Giving a burst's memory back to the OS: mimalloc keeps freed memory a while and gives
//! it back only as it goes on allocating, so an idle server could keep a burst's peak.

/// Frees what this thread holds unused and purges every arena's free memory now. For
/// after a large piece of work (a message of megabytes), not per command.
pub fn give_back() {
    // SAFETY: mi_collect only walks mimalloc's own structures; it is safe from any
    // thread, and harmless when mimalloc is not the global allocator (tests, fuzzing).
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// Settles how this process asks the OS for memory; call it first thing in `main`.
///
/// Transparent huge pages go off, unless `MIMALLOC_ALLOW_THP` says otherwise: mimalloc
/// asks for them on its arenas, and each one touched is then resident whole (16 of an
/// idle server's 19 MB of heap were 2 MiB pages barely used). Pages made huge before
/// this call stay so.
///
/// glibc's malloc (SQLite's, and the C libraries') gets a fixed mmap threshold: by
/// default it raises the threshold to the size of each large block freed, so the next
/// 8 MB message SQLite writes comes from an arena that keeps it after. A burst of large
/// messages left 33 MB in glibc's arenas; with the threshold fixed a large block goes
/// back to the OS when it is freed.
pub fn at_start() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE only sets a flag on this process's memory map, and
    // mallopt only sets malloc's parameters (before any other thread exists).
    unsafe {
        if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        }
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

/// Every second, gives back what mimalloc freed and set aside to purge: it purges only
/// when it next allocates, so an idle server kept a burst's peak (eight 8 MB SMTP
/// messages at once left 198 MB for as long as the threads lived; with this, 60-70 MB
/// two seconds later).
/// Purging at once instead (mimalloc's purge delay 0) cost a whole-folder FETCH of every
/// body a third more CPU, giving back and faulting in each chunk's buffers again.
pub async fn purge_freed(mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            // SAFETY: as in give_back; not forced, so only what is due is purged.
            _ = tick.tick() => unsafe { libmimalloc_sys::mi_collect(false) },
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}
