//! The cbuild recipe language.
//!
//! A recipe (`recipe.cb`) holds one expression. This crate parses it
//! ([`parser`], on top of the token parsers in [`lexer`]), resolves its names
//! ([`resolve`]), and evaluates it ([`eval`]) to a [`Value`]. Everything that
//! touches the outside world goes through the [`Host`] trait, which the root
//! crate implements with the store; this crate knows nothing else of it.
//! Errors are [`Diagnostic`]s that render with `FILE:LINE:COL`, the source
//! line and a caret ([`render`]).
//!
//! ```
//! use cbuild_lang::{Evaluator, FsHost};
//! let mut host = FsHost::new("in this example", "/".into());
//! let mut ev = Evaluator::new(&mut host, std::env::current_dir().unwrap()).unwrap();
//! let v = ev.eval_expr("<expr>", "let x = 20 in { answer = x * 2 + 2 }").unwrap();
//! assert_eq!(ev.to_json(&v).unwrap(), r#"{"answer":42}"#);
//! ```
#![deny(missing_docs)]

pub mod ast;
pub mod builtins;
pub mod diag;
pub mod eval;
pub mod host;
pub mod lexer;
pub mod memory;
pub mod parser;
pub mod prelude;
pub mod printer;
pub mod resolve;
pub mod span;
pub mod value;

pub use diag::{Diagnostic, render};
pub use eval::Evaluator;
pub use host::{FsHost, Host, HostError};
pub use span::{FileId, SourceMap, Span};
pub use value::{ContextElem, Derivation, Record, Str, Value};

/// Stack size for the thread that parses and evaluates. Recursion is bounded
/// by [`lexer::MAX_NESTING`] and [`eval::MAX_DEPTH`]; this leaves room for
/// both. The memory is reserved, not used, until evaluation goes deep.
pub const STACK_SIZE: usize = 1 << 30;

/// Runs `f` on a thread with a [`STACK_SIZE`] stack and returns its result.
/// Where such a thread cannot be made (a tight `ulimit -v`), `f` runs on the
/// current thread: the evaluator's stack guard still turns deep recursion
/// into an error, only sooner.
pub fn with_big_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let job = std::sync::Arc::new(std::sync::Mutex::new(Some(f)));
    let for_thread = job.clone();
    let spawned = std::thread::Builder::new()
        .name("cbuild-eval".into())
        .stack_size(STACK_SIZE)
        .spawn(move || {
            let f = for_thread.lock().ok().and_then(|mut g| g.take());
            f.map(|f| f())
        });
    let ran = match spawned {
        Ok(handle) => match handle.join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        },
        Err(_) => None,
    };
    match ran {
        Some(v) => v,
        None => {
            let f = job.lock().ok().and_then(|mut g| g.take());
            match f {
                Some(f) => f(),
                None => unreachable!("the job runs exactly once"),
            }
        }
    }
}
