//! What `cbuild realise` shows on stderr while it builds: on a terminal, a
//! progress line (built, cached, running counts and the current builds)
//! drawn by `indicatif`; otherwise plain lines, one per build started,
//! finished or failed. `-q` shows only failures; `-v` adds why each
//! derivation is built.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::build::realise::Event;
use crate::derivation::StoreDir;

/// A progress display.
pub struct Progress {
    bar: Option<ProgressBar>,
    dir: StoreDir,
    quiet: bool,
    built: usize,
    cached: usize,
    failed: usize,
    todo: usize,
    running: BTreeMap<String, ()>,
}

impl Progress {
    /// A display on stderr: a live line on a terminal, plain lines otherwise.
    pub fn new(dir: StoreDir, quiet: bool) -> Progress {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(10));
            b.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed}] {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            b.enable_steady_tick(std::time::Duration::from_millis(100));
            b
        });
        Progress {
            bar,
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

    /// Clears the live line.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
