//! The command line as clap parses it. Doc comments here are the `--help`
//! text; `../shared/spec/cli.md` is the contract they document.

use std::num::NonZeroUsize;
use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand};

/// Nix-grade hashing, caching and hermetic builds, with conda-grade
/// distribution.
///
/// A recipe (`recipe.cb`) evaluates to derivations; cbuild builds them in a
/// sandbox into a content-addressed store and exports conda packages.
///
/// Exit status: 0 success; 1 a build, check, audit or verify found a failure;
/// 2 the command could not run (bad flags, parse or evaluation error,
/// unusable store).
#[derive(Debug, Parser)]
#[command(
    name = "cbuild",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Options every command accepts.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command accepts.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// The store root [default: $XDG_DATA_HOME/cbuild, else ~/.local/share/cbuild]; created on first use.
    #[arg(long, global = true, env = "CBUILD_STORE", value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// Builds at once, 1 to 1024 [default: the number of cores].
    #[arg(short = 'j', long, global = true, value_name = "N", value_parser = parse_jobs)]
    pub jobs: Option<NonZeroUsize>,
    /// Stop a build that runs longer than this many seconds (it fails).
    #[arg(long, global = true, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: Option<u64>,
    /// Stop a build that writes nothing to its log for this many seconds.
    #[arg(long, global = true, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_silent_time: Option<u64>,
    /// Most processes and threads a build may have at once (in a control
    /// group of its own, as root or in a group delegated to the user).
    #[arg(long, global = true, value_name = "N", default_value_t = crate::build::sandbox::cgroup::DEFAULT_PIDS, value_parser = clap::value_parser!(u64).range(16..))]
    pub max_build_pids: u64,
    /// Most memory a build may use, in MiB (in a control group of its own,
    /// as root or in a group delegated to the user) [default: the host's].
    #[arg(long, global = true, value_name = "MIB", value_parser = clap::value_parser!(u64).range(16..))]
    pub max_build_memory: Option<u64>,
    /// Machine-readable result on stdout; progress and logs go to stderr.
    #[arg(long, global = true)]
    pub json: bool,
    /// More output on stderr (repeat for more).
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub verbose: u8,
    /// Less output on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

/// Most builds at once: each is a thread and a sandbox of its own (a
/// hundred thousand threads aborted the process).
pub const MAX_JOBS: usize = 1024;

fn parse_jobs(s: &str) -> Result<NonZeroUsize, String> {
    let n: NonZeroUsize = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of builds (1 to {MAX_JOBS})"))?;
    if n.get() > MAX_JOBS {
        return Err(format!("at most {MAX_JOBS} builds at once"));
    }
    Ok(n)
}

impl GlobalArgs {
    /// How to realise, as the global flags say (`-j`, `-v`).
    pub fn realise_options(&self) -> crate::build::realise::Options {
        let default = crate::build::realise::Options::default();
        crate::build::realise::Options {
            jobs: self.jobs.map_or(default.jobs, |n| n.get()),
            explain: self.verbose > 0,
            limits: crate::build::job::Limits {
                timeout: self.timeout.map(std::time::Duration::from_secs),
                max_silent: self.max_silent_time.map(std::time::Duration::from_secs),
                cgroup: crate::build::sandbox::cgroup::Limits {
                    pids: self.max_build_pids,
                    memory: self.max_build_memory.map(|m| m << 20),
                },
            },
            ..default
        }
    }
}

/// A recipe file and the attributes to select in it.
#[derive(Debug, Args, Clone)]
pub struct Target {
    /// The recipe file.
    #[arg(value_name = "FILE", default_value = "recipe.cb")]
    pub file: PathBuf,
    /// Attribute path to select, e.g. `-A hello` or `-A pkgs.lib` (repeatable).
    #[arg(short = 'A', long = "attr", value_name = "PATH")]
    pub attrs: Vec<String>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Evaluate a recipe, write its derivations and print one `.drv` path per target;
    /// with --expr, print the value of an expression as JSON.
    Eval(EvalArgs),
    /// Print a stored derivation as JSON.
    ShowDerivation(DrvTarget),
    /// Build what is missing and print one output store path per line.
    Realise(RealiseArgs),
    /// Print the stored build log of the last build of a derivation.
    Log(DrvTarget),
    /// Rebuild each target and compare bit for bit with what is stored.
    Check(CheckArgs),
    /// Inspect built outputs for unresolved libraries, leaked paths and other problems.
    Audit(AuditArgs),
    /// Rebuild each target into a conda prefix and write `.conda` packages.
    Export(ExportArgs),
    /// Put packages (files, or a recipe's targets exported first) onto a channel.
    Publish(PublishArgs),
    /// Delete store objects unreachable from the roots.
    Gc(GcArgs),
    /// Inspect and verify the store.
    #[command(subcommand)]
    Store(StoreCommand),
}

/// `cbuild eval`
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The recipe file.
    #[arg(value_name = "FILE", conflicts_with = "expr")]
    pub file: Option<PathBuf>,
    /// Attribute path to select (repeatable).
    #[arg(
        short = 'A',
        long = "attr",
        value_name = "PATH",
        conflicts_with = "expr"
    )]
    pub attrs: Vec<String>,
    /// Evaluate this expression instead of a file and print its value as JSON
    /// (sorted keys; derivations as their `.drv` path).
    // An expression may start with `-` (`-7 + 10`): it is a value, not a flag.
    #[arg(long, value_name = "EXPR", allow_hyphen_values = true)]
    pub expr: Option<String>,
}

/// A derivation named by its `.drv` path, or by a recipe and attribute.
#[derive(Debug, Args)]
pub struct DrvTarget {
    /// A `.drv` store path, or a recipe file.
    #[arg(value_name = "DRV_PATH|FILE")]
    pub target: Option<PathBuf>,
    /// Attribute path to select in the recipe.
    #[arg(short = 'A', long = "attr", value_name = "PATH")]
    pub attrs: Vec<String>,
}

/// `cbuild realise`
#[derive(Debug, Args)]
pub struct RealiseArgs {
    /// A recipe file, or `.drv` store paths.
    #[arg(value_name = "FILE|DRV_PATH")]
    pub targets: Vec<PathBuf>,
    /// Attribute path to select (repeatable).
    #[arg(short = 'A', long = "attr", value_name = "PATH")]
    pub attrs: Vec<String>,
    /// Write a symlink to the first output (`LINK-<output>` for others) and register it as a GC root.
    #[arg(short = 'o', long = "out-link", value_name = "LINK")]
    pub out_link: Option<PathBuf>,
    /// Continue building what does not depend on a failure.
    #[arg(long)]
    pub keep_going: bool,
    /// Keep the build directory of a failed build and print where.
    #[arg(long)]
    pub keep_failed: bool,
    /// `off` runs builders without namespaces (where this machine cannot
    /// create them); their outputs are marked as unsandboxed in the store.
    #[arg(long, value_name = "on|off", default_value = "on", value_parser = ["on", "off"])]
    pub sandbox: String,
    /// Read every object of the targets' closure again and compare it with
    /// what the store registered (for a store someone else could write).
    #[arg(long)]
    pub check_outputs: bool,
}

/// `cbuild check`
#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub target: Target,
    /// How many times to rebuild each target.
    #[arg(long, value_name = "N", default_value_t = NonZeroUsize::MIN)]
    pub rounds: NonZeroUsize,
    /// Keep the rebuilt trees that differ, and print where.
    #[arg(long)]
    pub keep_failed: bool,
    /// Rebuild under varied conditions: another build directory, hostname,
    /// umask, CPU count and a later clock.
    #[arg(long)]
    pub vary: bool,
    /// Check the targets' export derivations (what `export --conda` builds
    /// and packages) instead of the targets themselves.
    #[arg(long)]
    pub conda: bool,
}

/// `cbuild audit`
#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub target: Target,
    /// Audit the whole closure, not just the targets.
    #[arg(long)]
    pub closure: bool,
    /// For a package: the recipe it was exported from, whose sources the
    /// rebuild needs when the store lacks them (with -A for its targets).
    #[arg(long, value_name = "FILE")]
    pub recipe: Option<PathBuf>,
    /// For a package: write an in-toto v1 statement of the verdict here.
    #[arg(long, value_name = "FILE")]
    pub attest: Option<PathBuf>,
    /// For a package: keep the unpacked and the rebuilt payload when they
    /// differ, and print where.
    #[arg(long)]
    pub keep_failed: bool,
}

/// `cbuild publish`
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// Package files (`.conda`, `.tar.bz2`), or one recipe file whose
    /// targets (`-A`) are exported first [default: recipe.cb].
    #[arg(value_name = "PKG|FILE")]
    pub inputs: Vec<PathBuf>,
    /// Attribute path to export and publish (repeatable).
    #[arg(short = 'A', long = "attr", value_name = "PATH")]
    pub attrs: Vec<String>,
    /// The channel: a directory (`DIR` or `file://DIR`).
    #[arg(long, value_name = "DEST", required = true)]
    pub to: String,
    /// Replace a different package already published under the same file name.
    #[arg(long)]
    pub force: bool,
    /// Fail when a packaged file names the build directory /build (as
    /// `export --strict`).
    #[arg(long)]
    pub strict: bool,
}

/// `cbuild export`
#[derive(Debug, Args, Clone)]
pub struct ExportArgs {
    /// Write conda packages (the only format so far).
    #[arg(long, required = true)]
    pub conda: bool,
    #[command(flatten)]
    pub target: Target,
    /// Directory to write packages into (not with --channel, which says where they go).
    #[arg(
        short = 'o',
        long = "output-dir",
        value_name = "DIR",
        default_value = ".",
        conflicts_with = "channel"
    )]
    pub output_dir: PathBuf,
    /// Write into this channel directory and rewrite its repodata.json.
    #[arg(long, value_name = "DIR")]
    pub channel: Option<PathBuf>,
    /// The conda subdir to build for [default: the host's, e.g. linux-64]; recipes read it as `target_platform`.
    #[arg(long, value_name = "SUBDIR")]
    pub subdir: Option<String>,
    /// The package format.
    #[arg(long, value_name = "conda|tar.bz2", default_value = "conda", value_parser = ["conda", "tar.bz2"])]
    pub format: String,
    /// zstd level of `.conda` packages (1 to 22; conda-forge uses 19).
    #[arg(long, value_name = "N", default_value_t = crate::export::archive::DEFAULT_ZSTD_LEVEL,
          value_parser = clap::value_parser!(i32).range(1..=22))]
    pub zstd_level: i32,
    /// Fail when a packaged file names the build directory /build (by
    /// default a warning: it is the same path on every machine).
    #[arg(long)]
    pub strict: bool,
}

/// `cbuild gc`
#[derive(Debug, Args)]
pub struct GcArgs {
    /// Print the roots, what each keeps alive and what would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Stop once this much is freed (bytes, or with K, M, G, T: 500M, 2G).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_freed: Option<u64>,
    /// Keep the outputs of exports made in the last N days (0: do not).
    #[arg(long, value_name = "N", default_value_t = 30)]
    pub keep_days: u64,
    /// Keep the derivations (and their logs) that built live outputs.
    #[arg(long)]
    pub keep_derivations: bool,
}

/// A size: bytes, or a number with K, M, G or T (powers of 1024).
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                'B' => 1,
                _ => return Err(format!("`{s}`: the unit must be K, M, G or T")),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a size (bytes, or e.g. 500M, 2G)"))?;
    if !(n >= 0.0 && n.is_finite()) {
        return Err(format!("`{s}` is not a size"));
    }
    Ok((n * mult as f64) as u64)
}

/// `cbuild store ...`
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Import files or directories into the store as source objects and print their paths.
    Add {
        /// The files or directories (each becomes one object).
        #[arg(value_name = "PATH", required = true, num_args = 1..)]
        paths: Vec<PathBuf>,
        /// The object's name [default: the file's name, `source` for a directory].
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
    },
    /// Re-hash every registered store object and check references and the database.
    Verify {
        /// Rebuild or rewrite what can be, and say what could not.
        #[arg(long)]
        repair: bool,
    },
    /// Every GC root, what it points at and the size of its closure.
    Roots,
    /// Keep a store path alive: an explicit GC root, or `--link LINK` (a symlink, like `-o`).
    AddRoot {
        /// The store path.
        #[arg(value_name = "PATH")]
        path: PathBuf,
        /// Make this symlink to it and register it as the root.
        #[arg(long, value_name = "LINK")]
        link: Option<PathBuf>,
    },
    /// Remove the explicit and link roots of a store path.
    RemoveRoot {
        /// The store path.
        #[arg(value_name = "PATH")]
        path: PathBuf,
    },
    /// Size, content digest, references, deriver and registration time of a store object.
    PathInfo {
        /// The store path.
        #[arg(value_name = "PATH")]
        path: PathBuf,
        /// Show the whole closure.
        #[arg(long)]
        closure: bool,
    },
}
