//! Helpers for the tests that drive the viewer (egui_kittest is a dev-dependency of the front
//! ends only, so these are apart from `common`: `#[path = "common/viewer.rs"] mod viewer_steps;`).
#![allow(clippy::panic)] // test helpers may fail loudly
#![allow(dead_code)]

use std::time::{Duration, Instant};

use ape_app::viewer::ApeApp;
use egui_kittest::Harness;

/// Steps the viewer until `done` holds (then once more, to draw it), failing after `limit`.
pub fn step_until(
    harness: &mut Harness<'_, ApeApp>,
    what: &str,
    limit: Duration,
    done: impl Fn(&ApeApp) -> bool,
) {
    let start = Instant::now();
    while !done(harness.state()) {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        harness.step();
        std::thread::sleep(Duration::from_millis(20));
    }
    harness.step();
}
