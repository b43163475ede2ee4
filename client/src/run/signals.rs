//! Signals sent to canopy while a run's command runs are the command's: canopy blocks
//! them in every thread and one thread hands each on to the sandbox's init, which
//! hands it to the command. Signals from the terminal (Ctrl-C…) already reach the
//! command, which shares canopy's process group, so they are not sent twice. Before
//! the command starts, or once it ended, a termination signal ends canopy itself.

use std::sync::Once;
use std::sync::atomic::{AtomicI32, Ordering};

/// The pid signals go to; 0 while no command runs.
static TARGET: AtomicI32 = AtomicI32::new(0);

const FORWARDED: [libc::c_int; 7] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGCONT,
];

fn set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in FORWARDED {
            libc::sigaddset(&mut set, sig);
        }
        set
    }
}

/// Blocks the forwarded signals in the calling thread (and so in every thread it
/// starts from now on) and starts the forwarding thread. Call it before any other
/// thread exists.
pub fn block() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let set = set();
        // SAFETY: a valid set; the old mask is not needed.
        unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        let _ = std::thread::Builder::new()
            .name("canopy-run-signals".into())
            .spawn(move || {
                loop {
                    // SAFETY: a zeroed siginfo_t is a valid out-parameter.
                    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
                    // SAFETY: valid set and out-parameter.
                    let sig = unsafe { libc::sigwaitinfo(&set, &mut info) };
                    if sig < 0 {
                        continue;
                    }
                    let pid = TARGET.load(Ordering::SeqCst);
                    // si_code > 0 means the kernel sent it (the terminal); <= 0 a process.
                    let from_process = info.si_code <= 0;
                    if pid > 0 {
                        if from_process {
                            // SAFETY: kill with a pid we started and a valid signal.
                            unsafe { libc::kill(pid, sig) };
                        }
                    } else if sig != libc::SIGCONT && sig != libc::SIGUSR1 && sig != libc::SIGUSR2 {
                        std::process::exit(128 + sig);
                    }
                }
            });
    });
}

/// Sends signals to `pid` from now on (0: none).
pub fn forward_to(pid: i32) {
    TARGET.store(pid, Ordering::SeqCst);
}
