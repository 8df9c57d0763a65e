//! Logging: `tracing` events to stderr, one line each, as text or as JSON objects.
//!
//! What is logged: algonet's own events at the configured level (`log_level`), every other
//! crate's at warn and above; `RUST_LOG` (tracing-subscriber's filter syntax, e.g.
//! `algonet=debug,sqlx=info`) replaces that when set. Spans carry context into every line
//! below them: a run's (`run`, `task`, `image`) and a server request's (`method`, `route`).
//! Warnings and errors are also kept, the last [`RECENT`] of them, for `algonet node status`.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The configuration's `log_level`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl Level {
    fn directive(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        }
    }
}

/// The configuration's `log_format`: `text` for people, `json` for a log collector (one
/// object per line: `timestamp`, `level`, `fields.message`, the other fields, `span`).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Text,
    Json,
}

/// How many warnings and errors [`Recent`] keeps.
pub const RECENT: usize = 20;

/// A warning or an error, as `algonet node status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// RFC 3339, UTC.
    pub at: String,
    pub level: String,
    /// The message and the event's other fields, `key=value`.
    pub message: String,
}

/// The last [`RECENT`] warnings and errors. Cheap to clone: every clone shares them.
#[derive(Clone, Debug, Default)]
pub struct Recent(Arc<Mutex<VecDeque<Problem>>>);

impl Recent {
    pub fn list(&self) -> Vec<Problem> {
        let kept = crate::sync::lock(&self.0);
        kept.iter().cloned().collect()
    }

    fn push(&self, p: Problem) {
        let mut kept = crate::sync::lock(&self.0);
        if kept.len() == RECENT {
            kept.pop_front();
        }
        kept.push_back(p);
    }
}

/// Collects an event's message and its other fields (`key=value`, after the message).
#[derive(Default)]
struct Line {
    message: String,
    fields: String,
}

impl Line {
    fn text(self) -> String {
        match (self.message.is_empty(), self.fields.is_empty()) {
            (_, true) => self.message,
            (true, false) => self.fields,
            (false, false) => format!("{} {}", self.message, self.fields),
        }
    }
}

impl tracing::field::Visit for Line {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            if !self.fields.is_empty() {
                self.fields.push(' ');
            }
            let _ = write!(self.fields, "{}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.record_debug(field, &value);
        }
    }
}

/// A span's name and fields as text (`run{run=7 task=3}`), kept with the span for
/// [`Recent`]'s lines.
struct SpanText(String);

impl<S> Layer<S> for Recent
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = Line::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            let text = format!("{}{{{}}}", span.name(), fields.text());
            span.extensions_mut().insert(SpanText(text));
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: tracing_subscriber::layer::Context<'_, S>) {
        let level = *event.metadata().level();
        if level > tracing::Level::WARN {
            return;
        }
        let mut line = Line::default();
        event.record(&mut line);
        // Where it happened (the run, the request), outermost first, as the text log shows it.
        let mut context = String::new();
        for span in ctx
            .event_scope(event)
            .into_iter()
            .flat_map(|s| s.from_root())
        {
            if let Some(t) = span.extensions().get::<SpanText>() {
                context.push_str(&t.0);
                context.push_str(": ");
            }
        }
        let at = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        self.push(Problem {
            at,
            level: level.to_string(),
            message: context + &line.text(),
        });
    }
}

/// The filter: `RUST_LOG` if set and valid, else algonet's events at `level` and everyone
/// else's at warn.
fn filter(level: Level) -> EnvFilter {
    let fallback = || EnvFilter::new(format!("warn,algonet={}", level.directive()));
    match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => EnvFilter::try_new(&spec).unwrap_or_else(|e| {
            eprintln!("RUST_LOG={spec:?} is not a filter ({e}); logging at {level:?}");
            fallback()
        }),
        _ => fallback(),
    }
}

/// A name from outside (a user name, an organization's name) as it may be printed to a terminal
/// or a log: control characters, ANSI escapes among them, are written as escapes (`\u{1b}`), so
/// a name can neither move the cursor nor forge a line.
pub fn shown(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Sends events to stderr as `format` says, filtered as [`filter`] says. Returns the keeper of
/// recent problems. A second call (tests start several servers in one process) changes
/// nothing and returns a keeper that stays empty.
pub fn init(level: Level, format: Format) -> Recent {
    let recent = Recent::default();
    let output: Box<dyn Layer<_> + Send + Sync> = match format {
        Format::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_target(false)
            .boxed(),
        Format::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(filter(level))
        .with(output)
        .with(recent.clone())
        .try_init();
    recent
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_shown_without_their_control_characters() {
        assert_eq!(shown("Zürich UMC"), "Zürich UMC");
        assert_eq!(shown("a\u{1b}[31mred\nb"), "a\\u{1b}[31mred\\nb");
    }

    #[test]
    fn keeps_the_last_problems_with_their_fields() {
        let recent = Recent::default();
        let subscriber = tracing_subscriber::registry().with(recent.clone());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("not a problem");
            for i in 0..RECENT + 3 {
                tracing::warn!(run = i, "port records not removed");
            }
            tracing::info_span!("run", run = 7, image = "algonet/echo").in_scope(|| {
                tracing::error!("database: locked");
            });
        });
        let kept = recent.list();
        assert_eq!(kept.len(), RECENT);
        assert_eq!(kept[0].message, "port records not removed run=4");
        let last = kept.last().expect("one");
        assert_eq!(
            (last.level.as_str(), last.message.as_str()),
            (
                "ERROR",
                "run{run=7 image=\"algonet/echo\"}: database: locked"
            )
        );
    }
}
