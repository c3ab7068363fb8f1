// glibc malloc spent about half of a large plan's time in malloc/free (BENCHMARKS.md);
// mimalloc roughly halves that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    ferrymail::trim::at_start();
    ferrymail::cli::main()
}
