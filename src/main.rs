fn main() -> std::process::ExitCode {
    ferrymail::cli::main()
}
