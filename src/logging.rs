//! A small stderr logger for the `log` facade: `<UTC time> <LEVEL> <message>`, one line each.

use log::{Level, LevelFilter, Log, Metadata, Record};

#[derive(Debug)]
struct Stderr {
    prefix: &'static str,
}

impl Log for Stderr {
    fn enabled(&self, m: &Metadata) -> bool {
        m.level() <= log::max_level()
            && (m.target().starts_with("algonet") || m.level() <= Level::Warn)
    }

    fn log(&self, r: &Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let now = time::OffsetDateTime::now_utc();
        let level = match r.level() {
            Level::Error => "ERROR",
            Level::Warn => "WARN ",
            Level::Info => "INFO ",
            Level::Debug => "DEBUG",
            Level::Trace => "TRACE",
        };
        eprintln!(
            "{:02}:{:02}:{:02}.{:03} {level} {}{}",
            now.hour(),
            now.minute(),
            now.second(),
            now.millisecond(),
            self.prefix,
            r.args()
        );
    }

    fn flush(&self) {}
}

/// Sends `log` records at `level` (error, warn, info, debug, trace) and above to stderr, each
/// line starting with `prefix`. Only algonet's own records: libraries stay quiet below warn.
pub fn init(level: &str, prefix: &'static str) {
    let level = level.parse().unwrap_or(LevelFilter::Info);
    if log::set_boxed_logger(Box::new(Stderr { prefix })).is_ok() {
        log::set_max_level(level);
    }
}
