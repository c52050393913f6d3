//! systemd's notify protocol (`NOTIFY_SOCKET`), through `sd-notify`. Without the variable
//! every call is a no-op, so the daemon runs the same way outside systemd.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use tracing::{debug, error, info};

use crate::metrics::Health;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        debug!(error = %e, "systemd notify failed");
    }
}

/// `STATUS=` takes one line.
fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `READY=1`: startup (or a reload) is done.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(&one_line(status))]);
}

/// `STATUS=`: what `systemctl status` shows.
pub fn status(status: &str) {
    send(&[NotifyState::Status(&one_line(status))]);
}

/// `RELOADING=1`, with the timestamp systemd wants alongside it.
pub fn reloading() {
    let mut states = vec![NotifyState::Reloading, NotifyState::Status("reloading")];
    if let Ok(ts) = NotifyState::monotonic_usec_now() {
        states.push(ts);
    }
    send(&states);
}

/// `STOPPING=1`.
pub fn stopping(status: &str) {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status(&one_line(status)),
    ]);
}

/// When `WATCHDOG_USEC` is set: a task that sends `WATCHDOG=1` at half that period, but only
/// while the scheduler loop keeps ticking (`Health::beat`), so that a stuck loop gets the
/// service restarted. Returns the watchdog period.
pub fn spawn_watchdog(health: Arc<Health>) -> Option<Duration> {
    let period = sd_notify::watchdog_enabled()?;
    info!(
        watchdog_ms = period.as_millis() as u64,
        "systemd watchdog enabled"
    );
    tokio::spawn(async move {
        let mut every = tokio::time::interval(period / 2);
        let mut withheld = false;
        loop {
            every.tick().await;
            let age = health.loop_age(Instant::now());
            if age < period {
                send(&[NotifyState::Watchdog]);
                withheld = false;
            } else if !withheld {
                error!(
                    loop_idle_ms = age.as_millis() as u64,
                    "the scheduler loop has not ticked for {:.0?}: withholding WATCHDOG=1 so that systemd restarts the service",
                    age
                );
                withheld = true;
            }
        }
    });
    Some(period)
}
