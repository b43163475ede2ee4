//! The `canopy` command: parses arguments, runs the command, turns errors into exit
//! codes (0 ok, 1 error, 2 usage — the last from clap).

/// `println!` for every command below: the standard macro panics when stdout is a
/// closed pipe (`canopy roots list | head -1`); this one ends the process the way
/// coreutils end, quietly, by SIGPIPE (see [`output`]). Defined before `mod cmd`, so
/// it shadows the standard one there and in every command added later.
macro_rules! println {
    () => { $crate::output::stdout(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::output::stdout(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `eprintln!` that never panics: a closed stderr loses the message, nothing more.
macro_rules! eprintln {
    ($($arg:tt)*) => { $crate::output::stderr(format_args!("{}\n", format_args!($($arg)*))) };
}

mod cli;
mod cmd;
mod output;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    output::QUIET.store(args.quiet, std::sync::atomic::Ordering::Relaxed);
    // fuser warns when it unmounts a filesystem that `umount` already removed: noise.
    let filter = match (args.quiet, args.verbose) {
        (true, _) => "error",
        (false, 0) => "warn,fuser=error",
        (false, 1) => "info,fuser=error",
        (false, 2) => "debug",
        _ => "trace",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CANOPY_LOG")
                .unwrap_or_else(|_| filter.into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .init();
    match cmd::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, leaving out a cause whose text the message
/// before it already ends with (errors that print their source, then return it too).
pub(crate) fn describe(e: &anyhow::Error) -> String {
    let mut out = String::new();
    let mut last = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if last.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
        last = text;
    }
    out
}
