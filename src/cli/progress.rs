//! What `cbuild realise` shows on stderr while it builds: on a terminal, a
//! progress line (built, cached, running counts and the current builds)
//! drawn by `indicatif`, with the last line the longest-running build wrote;
//! otherwise plain lines, one per build started, finished or failed, and
//! for a build that runs long, its last log line every
//! `CBUILD_LIVE_LOG_SECS` seconds (30 by default): a build that prints
//! nothing cbuild shows (a configure loop) is seen to be alive or stuck.
//! `-q` shows only failures; `-v` adds why each derivation is built.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::build::job::Live;
use crate::build::realise::Event;
use crate::derivation::{StoreDir, StorePath};
use crate::util::text::escape_controls;

/// Seconds between live-log lines of a long build when stderr is not a
/// terminal (`CBUILD_LIVE_LOG_SECS`).
fn live_log_interval() -> u64 {
    std::env::var("CBUILD_LIVE_LOG_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|&s| s > 0)
        .unwrap_or(30)
}

/// The thread that shows running builds' last log lines.
struct Ticker {
    /// Dropped to stop the thread at once (it waits on the other end).
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Ticker {
    fn start(
        live: Arc<Live>,
        bar: Option<ProgressBar>,
        status: Arc<Mutex<String>>,
        dir: StoreDir,
    ) -> Ticker {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let every = live_log_interval();
            let mut shown: BTreeMap<StorePath, u64> = BTreeMap::new();
            // Woken at once when the display finishes (the sender is
            // dropped): a command never waits for the next tick to exit.
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(std::time::Duration::from_millis(250))
            {
                let running = live.snapshot();
                shown.retain(|d, _| running.iter().any(|(r, _, _)| r == d));
                match &bar {
                    Some(b) => show_longest(b, &status, &running),
                    None => print_long(&dir, &running, every, &mut shown),
                }
            }
        });
        Ticker {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

/// On a terminal: the counts, then the last line of the build that has
/// run longest.
fn show_longest(bar: &ProgressBar, status: &Mutex<String>, running: &[(StorePath, u64, String)]) {
    let longest = running
        .iter()
        .filter(|(_, _, line)| !line.is_empty())
        .max_by_key(|(_, secs, _)| *secs);
    let status = status.lock().map(|s| s.clone()).unwrap_or_default();
    bar.set_message(match longest {
        Some((_, _, line)) => format!("{status} │ {}", escape_controls(line)),
        None => status,
    });
}

/// Otherwise: a line for each build running `every` seconds longer than
/// when it was last shown (`shown`: the running time it was shown at).
fn print_long(
    dir: &StoreDir,
    running: &[(StorePath, u64, String)],
    every: u64,
    shown: &mut BTreeMap<StorePath, u64>,
) {
    for (drv, secs, line) in running {
        let last = shown.get(drv).copied().unwrap_or(0);
        if *secs < every || secs - last < every {
            continue;
        }
        shown.insert(drv.clone(), *secs);
        let tail = if line.is_empty() {
            "it has written nothing yet".to_string()
        } else {
            format!("last line: {}", escape_controls(line))
        };
        let _ = writeln!(
            std::io::stderr(),
            "still building {} ({secs} s); {tail}",
            dir.path_of(drv)
        );
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A progress display.
pub struct Progress {
    bar: Option<ProgressBar>,
    /// The counts part of the live line, which the ticker extends.
    status: Arc<Mutex<String>>,
    ticker: Option<Ticker>,
    dir: StoreDir,
    quiet: bool,
    built: usize,
    cached: usize,
    failed: usize,
    todo: usize,
    running: BTreeMap<String, ()>,
}

impl Progress {
    /// A display on stderr: a live line on a terminal, plain lines otherwise;
    /// running builds' last lines are read from `live` (the realise's).
    pub fn new(dir: StoreDir, quiet: bool, live: Arc<Live>) -> Progress {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(10));
            b.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed}] {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            b.enable_steady_tick(std::time::Duration::from_millis(100));
            b
        });
        let status = Arc::new(Mutex::new(String::new()));
        let ticker =
            (!quiet).then(|| Ticker::start(live, bar.clone(), status.clone(), dir.clone()));
        Progress {
            bar,
            status,
            ticker,
            dir,
            quiet,
            built: 0,
            cached: 0,
            failed: 0,
            todo: 0,
            running: BTreeMap::new(),
        }
    }

    /// Takes one event; a failure is also shown in full as it happens.
    pub fn event(&mut self, e: Event<'_>) {
        if let Event::Failed { error, .. } = &e {
            super::report_error(&super::with_causes(*error));
        }
        match e {
            Event::Planned { todo } => self.todo = todo,
            Event::Started { drv, reason } => {
                self.running
                    .insert(drv.name().trim_end_matches(".drv").into(), ());
                let mut line = format!("building {}", self.dir.path_of(drv));
                if let Some(r) = reason {
                    line.push_str(&format!(": {r}"));
                }
                self.say(&line, false);
            }
            Event::Built { drv, secs } => {
                self.built += 1;
                self.running.remove(drv.name().trim_end_matches(".drv"));
                if self.bar.is_none() {
                    let took = if secs < 1.0 {
                        format!("{:.0} ms", secs * 1000.0)
                    } else {
                        format!("{secs:.1} s")
                    };
                    self.say(&format!("built {} in {took}", self.dir.path_of(drv)), false);
                }
            }
            Event::Cached { drv } => {
                self.cached += 1;
                self.running.remove(drv.name().trim_end_matches(".drv"));
            }
            Event::Failed { drv, .. } => {
                self.failed += 1;
                self.running.remove(drv.name().trim_end_matches(".drv"));
                self.say(&format!("failed: {}", self.dir.path_of(drv)), true);
            }
        }
        if let Some(b) = &self.bar {
            let names: Vec<&str> = self.running.keys().map(String::as_str).take(4).collect();
            let more = self.running.len().saturating_sub(names.len());
            let mut msg = format!(
                "{}/{} built, {} cached, {} running",
                self.built,
                self.todo,
                self.cached,
                self.running.len()
            );
            if self.failed > 0 {
                msg.push_str(&format!(", {} failed", self.failed));
            }
            if !names.is_empty() {
                msg.push_str(&format!(": {}", names.join(", ")));
                if more > 0 {
                    msg.push_str(&format!(" and {more} more"));
                }
            }
            if let Ok(mut s) = self.status.lock() {
                s.clone_from(&msg);
            }
            b.set_message(msg);
        }
    }

    fn say(&self, line: &str, always: bool) {
        if self.quiet && !always {
            return;
        }
        match &self.bar {
            Some(b) => b.println(line),
            None => {
                let _ = writeln!(std::io::stderr(), "{line}");
            }
        }
    }

    /// Stops showing running builds and clears the live line.
    pub fn finish(&mut self) {
        self.ticker = None;
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
