//! Telling systemd how a service is doing (`Type=notify` units, see `deploy/systemd/`): ready,
//! stopping, and the watchdog. Without `NOTIFY_SOCKET` (not started by systemd) these do
//! nothing.

use std::time::Duration;

use sd_notify::NotifyState;

/// Sends `states` to `NOTIFY_SOCKET`, never waiting: a manager that does not read its socket
/// must not stall the caller (the node's run loop feeds the watchdog), and a message it has no
/// room for is dropped, as a watchdog ping it did not take should be.
fn notify(states: &[NotifyState]) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let message: String = states.iter().map(|s| format!("{s}\n")).collect();
    if let Err(e) = send(&path, message.as_bytes()) {
        tracing::warn!("telling systemd: {e}");
    }
}

fn send(path: &std::ffi::OsStr, message: &[u8]) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let bytes = path.as_bytes();
    // A leading '@' names an abstract socket (systemd's own convention).
    let to = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(std::path::Path::new(path))?,
    };
    let socket = UnixDatagram::unbound()?;
    socket.set_nonblocking(true)?;
    match socket.send_to_addr(message, &to) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            tracing::debug!("systemd's notify socket is full: message dropped");
            Ok(())
        }
        other => other.map(drop),
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
