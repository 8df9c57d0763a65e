//! Telling systemd how a service is doing (`Type=notify` units, see `deploy/systemd/`): ready,
//! stopping, and the watchdog. Without `NOTIFY_SOCKET` (not started by systemd) these do
//! nothing.

use std::time::Duration;

use sd_notify::NotifyState;

fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!("telling systemd: {e}");
    }
}

/// Up and serving; `status` is what `systemctl status` shows.
pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// How often to tell the watchdog the service is alive (half its timeout), if it is on.
pub fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0;
    sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec / 2))
}

pub fn alive() {
    notify(&[NotifyState::Watchdog]);
}
