//! Progress on a terminal for long one-shot runs (never in JSON mode or under systemd).
//!
//! One bar per process, counting operations across targets. Log lines go through
//! `LogWriter`, which hides the bar while a line is written so the two never garble.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

static BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Whether progress may be drawn: stderr is a terminal, logs are text, not under systemd.
pub fn allowed(json: bool) -> bool {
    !json && std::io::stderr().is_terminal() && std::env::var_os("INVOCATION_ID").is_none()
}

/// Turns the bar on (empty until operations are added).
pub fn enable() {
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr_with_hz(4));
    bar.set_style(
        ProgressStyle::with_template("{spinner} {pos}/{len} operations {wide_bar} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    *BAR.lock().expect("progress lock") = Some(bar);
}

fn with(f: impl FnOnce(&ProgressBar)) {
    if let Some(bar) = BAR.lock().expect("progress lock").as_ref() {
        f(bar);
    }
}

/// Adds `n` operations to do.
pub fn add(n: usize) {
    with(|b| b.inc_length(n as u64));
}

/// One operation done.
pub fn done() {
    with(|b| b.inc(1));
}

/// Removes the bar.
pub fn finish() {
    if let Some(bar) = BAR.lock().expect("progress lock").take() {
        bar.finish_and_clear();
    }
}

/// stderr for the log, drawn around the bar when there is one.
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bar = BAR.lock().expect("progress lock").clone();
        match bar {
            Some(b) => b
                .suspend(|| std::io::stderr().write_all(buf))
                .map(|()| buf.len()),
            None => std::io::stderr().write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
