// glibc malloc spent about half of a large plan's time in malloc/free (BENCHMARKS.md);
// mimalloc roughly halves that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc.h (2.1 and 3); libmimalloc-sys names no constant
/// for it.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> std::process::ExitCode {
    // mimalloc 3 keeps freed memory a second (1000 ms) before it gives it back; a mail
    // server's memory comes in short bursts (a login's argon2id, a FETCH's chunk), so
    // that second keeps every burst resident. 10 ms (mimalloc 2's default) gave the
    // same FETCH times with the peak after a login and two large FETCHes at 61 MB instead
    // of 79 MB (BENCHMARKS.md). MIMALLOC_PURGE_DELAY in the environment still rules.
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets an allocator option (an integer) before any thread is started.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 10) };
    }
    ferrymail::cli::main()
}
