//! The `cbuild` binary: everything happens in [`cbuild::cli`].

// Evaluation makes and frees millions of small values; mimalloc's per-thread
// free lists avoid glibc's heap consolidation, which costs a fifth of a large
// evaluation (measured in bench/dag_bench.py).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cbuild::cli::main()
}
