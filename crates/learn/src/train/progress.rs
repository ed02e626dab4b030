//! Progress for long steps: an indicatif bar with an ETA on a terminal; on anything else (a log
//! file, CI) a plain line every 30 seconds, since indicatif draws nothing there.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

const PLAIN_EVERY: Duration = Duration::from_secs(30);

pub struct Progress {
    bar: ProgressBar,
    label: String,
    unit: &'static str,
    plain: bool,
    quiet: bool,
    last_line: Instant,
}

impl Progress {
    pub fn new(len: u64, label: &str, unit: &'static str, quiet: bool) -> Progress {
        let bar = if quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(len)
        };
        let template = format!(
            "{{prefix}} [{{elapsed_precise}}] {{wide_bar}} {{pos}}/{{len}} {unit} ({{per_sec}}, ETA {{eta}}) {{msg}}"
        );
        bar.set_style(ProgressStyle::with_template(&template).expect("a valid template"));
        bar.set_prefix(label.to_string());
        Progress {
            bar,
            label: label.to_string(),
            unit,
            plain: !quiet && !std::io::stderr().is_terminal(),
            quiet,
            last_line: Instant::now(),
        }
    }

    pub fn set_label(&mut self, label: String) {
        self.bar.set_prefix(label.clone());
        self.label = label;
    }

    pub fn set_message(&self, message: String) {
        self.bar.set_message(message);
    }

    pub fn inc(&mut self, n: u64) {
        self.bar.inc(n);
        if self.plain && self.last_line.elapsed() >= PLAIN_EVERY {
            self.last_line = Instant::now();
            eprintln!(
                "{}: {}/{} {} ({:.1}/s, ETA {} s) {}",
                self.label,
                self.bar.position(),
                self.bar.length().unwrap_or(0),
                self.unit,
                self.bar.per_sec(),
                self.bar.eta().as_secs(),
                self.bar.message()
            );
        }
    }

    /// Prints a line above the bar (always, unless quiet).
    pub fn println(&self, line: &str) {
        if !self.quiet {
            self.bar.suspend(|| eprintln!("{line}"));
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
