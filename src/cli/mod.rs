//! The command line: parses arguments, runs one command, renders its error
//! and picks the exit code. Each command is one file; results go to stdout,
//! diagnostics and progress to stderr.

pub mod args;
pub mod attr_path;
pub mod audit;
pub mod audit_package;
pub mod check;
pub mod error;
pub mod eval;
pub mod export;
pub mod gc;
pub mod progress;
pub mod publish;
pub mod realise;
pub mod show;
pub mod store_cmd;
pub mod targets;

use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command};
use error::CliError;

/// Parses the command line, runs the command and returns the exit code.
pub fn main() -> ExitCode {
    // The sandbox server must run before anything starts a thread.
    if std::env::args_os().nth(1).is_some_and(|a| a == "__sandbox") {
        crate::build::sandbox::linux::server_main();
    }
    raise_open_files_limit();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help and version on stdout (exit 0) and usage errors
            // on stderr (exit 2, as the contract wants).
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let quiet = cli.global.quiet;
    let result = cbuild_lang::with_big_stack(move || run(cli));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = e.exit_code();
            if code != 0 && !(quiet && matches!(e, CliError::Stdout(_))) {
                report(&e);
            }
            ExitCode::from(code)
        }
    }
}

/// The command being run, for messages that name it.
static COMMAND: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn run(cli: Cli) -> Result<(), CliError> {
    let mut out = Output::stdout();
    let name = match &cli.command {
        Command::Eval(_) => "eval".to_string(),
        Command::ShowDerivation(_) => "show-derivation".into(),
        Command::Realise(_) => "realise".into(),
        Command::Log(_) => "log".into(),
        Command::Check(_) => "check".into(),
        Command::Audit(_) => "audit".into(),
        Command::Export(_) => "export".into(),
        Command::Gc(_) => "gc".into(),
        Command::Publish(_) => "publish".into(),
        Command::Store(c) => format!("store {}", store_cmd::name(c)),
    };
    let _ = COMMAND.set(name);
    let r = match cli.command {
        Command::Eval(a) => eval::run(&cli.global, a, &mut out),
        Command::ShowDerivation(a) => show::run(&cli.global, a, &mut out),
        Command::Realise(a) => realise::run(&cli.global, a, &mut out),
        Command::Log(a) => log_cmd(&cli.global, a, &mut out),
        Command::Check(a) => check::run(&cli.global, a, &mut out),
        Command::Audit(a) => audit::run(&cli.global, a, &mut out),
        Command::Export(a) => export::run(&cli.global, a, &mut out),
        Command::Gc(a) => gc::run(&cli.global, a, &mut out),
        Command::Publish(a) => publish::run(&cli.global, a, &mut out),
        Command::Store(c) => store_cmd::run(&cli.global, c, &mut out),
    };
    r.and_then(|()| out.flush())
}

/// `cbuild log`: the stored log of the last build of each target.
fn log_cmd(
    global: &args::GlobalArgs,
    a: args::DrvTarget,
    out: &mut Output,
) -> Result<(), CliError> {
    let mut store = open_store_for_reading(global)?;
    for p in show::drv_targets(&mut store, a)? {
        let (sp, _) = store.parse_valid(&p)?;
        match crate::build::realise::read_log(&store, &sp)? {
            Some(bytes) if bytes.is_empty() => {}
            Some(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                let text = text.trim_end_matches('\n');
                // Raw into a pipe or file (the log as written); a terminal
                // is not handed the builder's escape sequences.
                if io::stdout().is_terminal() {
                    out.line(&crate::util::text::escape_controls(text))?
                } else {
                    out.line(text)?
                }
            }
            // A build that printed nothing leaves no log file.
            None if store.db().built_by(&sp.base_name())? => {}
            None => return Err(CliError::NoLog(p)),
        }
    }
    Ok(())
}

/// Raises the soft limit of open files to the hard one: every build at
/// once holds pipes, a log and its sandbox's descriptors, and a common
/// soft limit (1024) ran out before `-j` did.
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// Opens the store for a command that only reads it: read-only when its
/// file system cannot be written.
pub fn open_store_for_reading(global: &args::GlobalArgs) -> Result<crate::store::Store, CliError> {
    let root = global
        .store
        .clone()
        .unwrap_or_else(crate::store::default_root);
    Ok(crate::store::Store::open_for_reading(&root)?)
}

/// Opens the store named by `--store`, `CBUILD_STORE` or the default.
pub fn open_store(global: &args::GlobalArgs) -> Result<crate::store::Store, CliError> {
    let root = global
        .store
        .clone()
        .unwrap_or_else(crate::store::default_root);
    match crate::store::Store::open(&root) {
        // Said plainly, with what still works.
        Err(e) if e.is_read_only() && root.join("db.sqlite").exists() => {
            Err(crate::store::StoreError::ReadOnly {
                root: crate::store::absolute(&root),
                what: format!("`cbuild {}`", COMMAND.get().map_or("", String::as_str)),
            }
            .into())
        }
        other => Ok(other?),
    }
}

/// An error and its causes on one line: `cannot write X: No space left on
/// device (os error 28)`.
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        s.push_str(&format!(": {cause}"));
        src = cause.source();
    }
    s
}

/// Prints one error message on stderr, prefixed like every error.
pub fn report_error(text: &str) {
    let _ = writeln!(io::stderr(), "error: {}", text.trim_end());
}

/// Prints an error on stderr: recipe errors as a full diagnostic, others as
/// one line with their causes.
fn report(e: &CliError) {
    let stderr = io::stderr();
    let color = stderr.is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let text = match e {
        CliError::Recipe(d) => cbuild_lang::render(d, diagnostic_width(), color),
        other => format!("error: {}\n", with_causes(other)),
    };
    let _ = stderr.lock().write_all(text.as_bytes());
}

/// Width diagnostics wrap at: `COLUMNS` when set, else 100.
fn diagnostic_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .filter(|&w: &usize| w >= 40)
        .unwrap_or(100)
}

/// Buffered stdout that turns write errors into [`CliError::Stdout`] (a closed
/// pipe exits 0).
pub struct Output {
    inner: io::BufWriter<io::Stdout>,
}

impl Output {
    fn stdout() -> Output {
        Output {
            inner: io::BufWriter::new(io::stdout()),
        }
    }

    /// Writes one line.
    pub fn line(&mut self, s: &str) -> Result<(), CliError> {
        self.inner
            .write_all(s.as_bytes())
            .and_then(|()| self.inner.write_all(b"\n"))
            .map_err(CliError::Stdout)
    }

    fn flush(&mut self) -> Result<(), CliError> {
        self.inner.flush().map_err(CliError::Stdout)
    }
}
