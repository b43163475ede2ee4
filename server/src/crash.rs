//! Numbered crash points for crash-safety tests.
//!
//! With the `crash-points` feature (enabled only in the test build of the binary), every
//! durable step of a write calls [`point`]; when the step number equals
//! `CANOPY_CRASH_AFTER`, the process aborts on the spot, as a power cut would leave it;
//! `CANOPY_CRASH_AT=NAME` aborts at the first step called NAME (e.g. `configured`, when
//! a configure has finished and nothing of it is durable yet). Without the feature,
//! [`point`] compiles to nothing.
//!
//! The same points can pause instead: with `CANOPY_PAUSE_AT=WHAT` and
//! `CANOPY_PAUSE_FILE=PATH`, the first point named WHAT creates PATH and waits (at most
//! a minute) until the test removes it, so a test can run something else exactly there.

#[cfg(feature = "crash-points")]
pub(crate) fn point(what: &str) {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static LIMIT: OnceLock<Option<u64>> = OnceLock::new();
    static AT: OnceLock<Option<String>> = OnceLock::new();
    static STEPS: AtomicU64 = AtomicU64::new(0);
    let limit = LIMIT.get_or_init(|| {
        std::env::var("CANOPY_CRASH_AFTER")
            .ok()
            .and_then(|v| v.parse().ok())
    });
    let step = STEPS.fetch_add(1, Ordering::SeqCst) + 1;
    let at = AT.get_or_init(|| std::env::var("CANOPY_CRASH_AT").ok());
    if *limit == Some(step) || at.as_deref() == Some(what) {
        eprintln!("canopy: crash point {step} reached ({what}), aborting");
        std::process::abort();
    }
    pause(what);
}

#[cfg(feature = "crash-points")]
fn pause(what: &str) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static PAUSED: AtomicBool = AtomicBool::new(false);
    let (Some(at), Some(file)) = (
        std::env::var_os("CANOPY_PAUSE_AT"),
        std::env::var_os("CANOPY_PAUSE_FILE"),
    ) else {
        return;
    };
    if at != what || PAUSED.swap(true, Ordering::SeqCst) {
        return;
    }
    let file = std::path::PathBuf::from(file);
    let _ = std::fs::write(&file, what);
    eprintln!(
        "canopy: paused at {what} until {} is removed",
        file.display()
    );
    let start = std::time::Instant::now();
    while file.exists() && start.elapsed() < std::time::Duration::from_secs(60) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[cfg(not(feature = "crash-points"))]
#[inline(always)]
pub(crate) fn point(_what: &str) {}
