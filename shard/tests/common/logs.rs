//! Capturing what the code logs through `tracing` on the test's thread: each event's level,
//! target and message, for tests of log lines operators read.

use std::cell::RefCell;
use std::sync::Once;

/// One logged event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub level: tracing::Level,
    pub target: String,
    pub message: String,
}

/// Runs `run` with every event logged on this thread recorded; returns its result and the
/// events in order.
///
/// The recorder is the process-wide default subscriber, installed once, and records only on
/// threads inside `capture`. A subscriber scoped with `with_default` would race with tests on
/// other threads: a log call site first reached where no subscriber is set can cache "never
/// interested" just as the scoped one registers, and its events are then lost.
pub fn capture<T>(run: impl FnOnce() -> T) -> (T, Vec<Line>) {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        tracing::subscriber::set_global_default(Recorder)
            .expect("no other test sets a global subscriber");
    });
    CAPTURED.with(|captured| *captured.borrow_mut() = Some(Vec::new()));
    let result = run();
    let lines = CAPTURED.with(|captured| captured.borrow_mut().take().unwrap_or_default());
    (result, lines)
}

thread_local! {
    /// The events logged so far on this thread inside `capture`; `None` outside it.
    static CAPTURED: RefCell<Option<Vec<Line>>> = const { RefCell::new(None) };
}

/// Records the events of threads inside `capture`.
struct Recorder;

struct MessageVisitor<'a>(&'a mut String);

impl tracing::field::Visit for MessageVisitor<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            *self.0 = format!("{value:?}");
        }
    }
}

impl tracing::Subscriber for Recorder {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut message = String::new();
        event.record(&mut MessageVisitor(&mut message));
        let metadata = event.metadata();
        CAPTURED.with(|captured| {
            if let Some(lines) = captured.borrow_mut().as_mut() {
                lines.push(Line {
                    level: *metadata.level(),
                    target: metadata.target().to_string(),
                    message,
                });
            }
        });
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}
