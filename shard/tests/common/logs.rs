//! Capturing what the code logs through `tracing` on the test's thread: each event's level,
//! target and message, for tests of log lines operators read.

use std::sync::{Arc, Mutex};

/// One logged event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub level: tracing::Level,
    pub target: String,
    pub message: String,
}

/// Runs `run` with every event logged on this thread recorded; returns its result and the
/// events in order.
pub fn capture<T>(run: impl FnOnce() -> T) -> (T, Vec<Line>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let recorder = Recorder(Arc::clone(&lines));
    let result = tracing::subscriber::with_default(recorder, run);
    let lines = lines.lock().expect("lock").clone();
    (result, lines)
}

/// Records every event logged on this thread.
struct Recorder(Arc<Mutex<Vec<Line>>>);

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
        self.0.lock().expect("lock").push(Line {
            level: *metadata.level(),
            target: metadata.target().to_string(),
            message,
        });
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}
