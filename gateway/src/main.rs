//! `gateway run --conf conf/gateway.yaml` serves traffic; `gateway check --conf FILE`
//! validates a config. All logic lives in the library.

fn main() -> std::process::ExitCode {
    gateway::cli::main()
}
