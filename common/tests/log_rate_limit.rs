//! The rate limit under the process-wide subscriber, as the daemons install
//! it (its own test binary: the global default can be set once per process).
//! The line announcing suppression is logged from inside the filter, which
//! only a global dispatcher lets through.

use qi_common::logging::RateLimit;
use std::sync::{Arc, Mutex};
use tracing_subscriber::prelude::*;

#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);
impl std::io::Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_flood_prints_its_budget_and_says_the_rest_is_suppressed() {
    let sink = Sink::default();
    let writer = sink.clone();
    tracing_subscriber::registry()
        .with(RateLimit::default())
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(move || writer.clone()),
        )
        .init();
    for i in 0..100_000 {
        tracing::warn!(i, "Too many open files");
    }
    let out = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
    assert_eq!(
        out.matches("Too many open files").count(),
        RateLimit::LINES as usize
    );
    assert_eq!(out.matches("its lines are suppressed").count(), 1, "{out}");
}
