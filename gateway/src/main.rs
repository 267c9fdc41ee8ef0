//! `gateway run --conf conf/gateway.yaml` serves traffic; `gateway check --conf FILE`
//! validates a config. All logic lives in the library.

/// mimalloc instead of the system allocator: a proxy allocates and frees small
/// buffers and header maps on every request, from many threads.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    gateway::cli::main()
}
