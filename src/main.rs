//! The `credit-sentinel` binary: everything is in the library.

fn main() -> std::process::ExitCode {
    credit_sentinel::cli::main()
}
