//! The `cbuild` binary: everything happens in [`cbuild::cli`].

fn main() -> std::process::ExitCode {
    cbuild::cli::main()
}
