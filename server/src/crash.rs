//! Numbered crash points for crash-safety tests.
//!
//! With the `crash-points` feature (enabled only in the test build of the binary), every
//! durable step of a write calls [`point`]; when the step number equals
//! `CANOPY_CRASH_AFTER`, the process aborts on the spot, as a power cut would leave it;
//! `CANOPY_CRASH_AT=NAME` aborts at the first step called NAME (e.g. `configured`, when
//! a configure has finished and nothing of it is durable yet). Without the feature,
//! [`point`] compiles to nothing.

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
}

#[cfg(not(feature = "crash-points"))]
#[inline(always)]
pub(crate) fn point(_what: &str) {}
