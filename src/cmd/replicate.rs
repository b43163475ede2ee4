//! `canopy replicate`: passes of `canopy_server::replicate` over the upstream's roots,
//! once or every `--interval`, each opening the store for writing only while it runs
//! (so `fsck`, `gc` and the like get their turn between passes).

use super::{bytes, mount::read_key, terminated};
use crate::cli::ReplicateArgs;
use anyhow::{Context, Result};
use canopy_client::remote::Remote;
use canopy_server::replicate::{self, Event, Options, RootReport, Status, Upstream};
use canopy_server::{Access, Store};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub fn run(store: &Path, args: ReplicateArgs) -> Result<ExitCode> {
    let trust = read_key(&args.trust)?;
    let roots = args
        .roots
        .iter()
        .map(|r| super::root_name(r))
        .collect::<Result<Vec<_>>>()?;
    let opts = Options {
        roots,
        history: args.history,
        jobs: args.jobs.into(),
        batch_bytes: args.batch_size,
    };
    let rt = tokio::runtime::Runtime::new().context("starting the runtime")?;
    let servers = std::iter::once(args.url.clone())
        .chain(args.servers.iter().cloned())
        .collect::<Vec<_>>();
    let mut remote = Remote::new(servers, args.timeout, args.min_rate).context("HTTP client")?;
    if !args.compress {
        remote = remote.uncompressed().context("HTTP client")?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    rt.spawn(async move {
        terminated().await;
        flag.store(true, Ordering::SeqCst);
    });
    let up = Upstream {
        remote: Arc::new(remote),
        trust,
        rt: rt.handle().clone(),
        stop: stop.clone(),
    };
    let mut ok;
    loop {
        let started = Instant::now();
        let reports = pass(store, &up, &opts)?;
        ok = reports
            .iter()
            .all(|r| !matches!(r.status, Status::Refused | Status::Failed));
        print(&args, &reports, started.elapsed())?;
        if !args.follow || stop.load(Ordering::SeqCst) {
            break;
        }
        let until = Instant::now() + args.interval;
        while Instant::now() < until && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(100).min(args.interval));
        }
        if stop.load(Ordering::SeqCst) {
            break;
        }
    }
    rt.shutdown_timeout(Duration::from_secs(1));
    if stop.load(Ordering::SeqCst) {
        eprintln!("canopy: replicate stopped; what was written is kept");
        return Ok(if args.follow {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(130)
        });
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// One pass over the roots: the store is opened (and locked) for its length.
fn pass(path: &Path, up: &Upstream, opts: &Options) -> Result<Vec<RootReport>> {
    let store = Store::open(path, Access::Write)?;
    // Refuse a store that cannot hold these roots before fetching anything.
    store.may_replicate(&up.trust)?;
    let mut reports = Vec::new();
    for (name, head) in replicate::upstream_roots(up, opts)? {
        if up.stop.load(Ordering::SeqCst) {
            break;
        }
        let report = match head {
            Ok(head) => replicate::root(&store, up, opts, &name, head, &progress),
            Err(e) => RootReport {
                status: if e.is_refusal() {
                    Status::Refused
                } else {
                    Status::Failed
                },
                error: Some(e.to_string()),
                ..RootReport::new(&name)
            },
        };
        if let Some(e) = &report.error {
            eprintln!("error: root {name} not published: {e}");
        }
        reports.push(report);
    }
    Ok(reports)
}

fn progress(event: Event) {
    match event {
        Event::Copying {
            root,
            commit,
            commits,
        } => eprintln!(
            "{root}: copying commit {}{}",
            commit.0.short(),
            match commits {
                1 => String::new(),
                n => format!(" and {} older", n - 1),
            }
        ),
        Event::Fetched {
            root,
            objects,
            of,
            bytes: got,
            total,
        } => eprintln!(
            "{root}: {objects}/{of} objects, {} of {}",
            bytes(got),
            bytes(total)
        ),
        Event::Published { .. } => {}
    }
}

fn print(args: &ReplicateArgs, reports: &[RootReport], took: Duration) -> Result<()> {
    let fetched: u64 = reports.iter().map(|r| r.objects_fetched).sum();
    let fetched_bytes: u64 = reports.iter().map(|r| r.bytes_fetched).sum();
    let not_published = reports
        .iter()
        .filter(|r| matches!(r.status, Status::Refused | Status::Failed))
        .count();
    if args.json.json {
        let value = serde_json::json!({
            "upstream": args.url.to_string(),
            "roots": reports,
            "objects_fetched": fetched,
            "bytes_fetched": fetched_bytes,
            "not_published": not_published,
            "seconds": took.as_secs_f64(),
        });
        // One document per pass; with --follow one per line.
        if args.follow {
            println!("{}", serde_json::to_string(&value)?);
        } else {
            super::print_json(&value)?;
        }
        return Ok(());
    }
    // A pass of --follow that found nothing new says nothing.
    if args.follow && reports.iter().all(|r| r.status == Status::Current) {
        return Ok(());
    }
    for r in reports {
        let commit = r.commit.as_deref().map_or("", |c| &c[..12.min(c.len())]);
        match r.status {
            Status::Current => println!("{}: current at {commit}", r.root),
            Status::Created | Status::Updated => println!(
                "{}: {} at {commit} ({} commit{}, {} trees, {} objects fetched ({}), {} present)",
                r.root,
                if r.status == Status::Created {
                    "created"
                } else {
                    "updated"
                },
                r.commits,
                if r.commits == 1 { "" } else { "s" },
                r.trees,
                r.objects_fetched,
                bytes(r.bytes_fetched),
                r.objects_present
            ),
            Status::Refused => println!("{}: refused", r.root),
            Status::Failed => println!("{}: failed", r.root),
        }
    }
    println!(
        "replicated {} root{} from {}: {fetched} objects fetched ({}), {not_published} not published, in {:.1}s",
        reports.len(),
        if reports.len() == 1 { "" } else { "s" },
        args.url,
        bytes(fetched_bytes),
        took.as_secs_f64()
    );
    Ok(())
}
