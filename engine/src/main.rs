//! `engine` binary: a thin wrapper around [`engine::cli::main`].

fn main() -> std::process::ExitCode {
    engine::cli::main()
}
