//! Writing to stdout and stderr without panicking.
//!
//! A reader that stops early (`canopy packages list --json | head -1`) closes the
//! pipe; the next write fails with `EPIPE`. Rust ignores SIGPIPE, so the standard
//! macros would panic there. Commands here end as a C program with the default
//! SIGPIPE disposition does: killed by SIGPIPE, which the shell reports as status 141
//! and does not print. Network sockets keep Rust's behaviour (an error, not a signal):
//! the default disposition is restored only at the moment stdout is found closed.

use std::fmt::Arguments;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// Writes to stdout; a closed pipe ends the process quietly, any other failure with
/// an error message and status 1.
pub fn stdout(args: Arguments<'_>) {
    checked(io::stdout().lock().write_fmt(args));
}

/// Writes bytes (a file's content) to stdout, with the manners of [`stdout`].
pub fn bytes(data: &[u8]) {
    checked(io::stdout().lock().write_all(data));
}

fn checked(result: io::Result<()>) {
    if let Err(e) = result {
        if e.kind() == io::ErrorKind::BrokenPipe {
            closed_pipe();
        }
        stderr(format_args!("error: writing to stdout: {e}\n"));
        std::process::exit(1);
    }
}

/// `-q`: only errors on stderr. Commands print notes and warnings as `note: …` and
/// `warning: …` lines; with `-q` those are dropped here, in one place.
pub static QUIET: AtomicBool = AtomicBool::new(false);

/// Whether `-q` was given: progress displays stay hidden too.
pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// Writes to stderr; if that fails there is nowhere left to say so.
pub fn stderr(args: Arguments<'_>) {
    if quiet() {
        let text = args.to_string();
        if text.starts_with("note: ") || text.starts_with("warning: ") {
            return;
        }
    }
    let _ = io::stderr().lock().write_fmt(args);
}

/// Dies of SIGPIPE, as `yes | head -1` does.
fn closed_pipe() -> ! {
    // SAFETY: restoring a signal's default disposition and raising it have no
    // preconditions; the process ends here.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::raise(libc::SIGPIPE);
    }
    // Only reached if the signal is blocked: still end quietly, with the shell's status.
    std::process::exit(128 + libc::SIGPIPE)
}
