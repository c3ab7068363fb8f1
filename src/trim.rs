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
/// mimalloc purges freed memory at once instead of a second later: it purges only when
/// it next allocates, so after a burst an idle server kept what the burst took (eight
/// 8 MB messages at once left 198 MB for as long as the threads lived). Unless
/// `MIMALLOC_PURGE_DELAY` says otherwise.
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
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: mi_option_set only stores the option's value.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) }
    }
}

/// mimalloc's `mi_option_purge_delay` (its place in mimalloc.h's option enum; the
/// bindings do not name it). A test holds it to the option's default, 1000 ms.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

#[cfg(test)]
mod tests {
    #[test]
    fn the_purge_delay_option_is_mimallocs() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // SAFETY: reads an option's value.
        let delay = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!(
            delay, 1000,
            "mimalloc's option enum moved: check mimalloc.h"
        );
    }
}
