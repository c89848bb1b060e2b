//! The agent endpoint under a reconnect storm: N protocol-level agents
//! (real enrolment, real mutual-TLS sessions, no hypervisor) are Up on a
//! real coordinator, the coordinator is killed and started again on the same
//! ports and data directory, and the agents come back on the agent's own
//! jittered backoff. Measured: the time from the restart until every host is
//! Up again, and what the restarted coordinator spent in CPU and memory
//! until then. Prints one JSON object on one line on stdout; progress goes to stderr.
//!
//! ```text
//! orrery-storm [--agents 1000] [--timeout 60] [--downtime-ms 1000]
//!     [--signal kill|term] [--enrol-concurrency 32] [--work-dir DIR] [--keep]
//! ```
//!
//! The coordinator binary is `ORRERY_COORDINATOR_BIN`, else the
//! `orrery-coordinator` next to this program.

mod agent;
mod coordinator;
mod procfs;

use agent::{Agent, Tracker};
use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use coordinator::{Coordinator, HostsSeen};
use futures::stream::{self, StreamExt, TryStreamExt};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The requirement: every agent Up within this long of the restart.
const TARGET_S: f64 = 10.0;
/// How often the driver looks at the agents' welcomes.
const POLL: Duration = Duration::from_millis(20);
/// How often the coordinator's CPU and memory are sampled during the storm.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Stop {
    /// SIGKILL: a crash; nothing is flushed or closed in order.
    Kill,
    /// SIGTERM: an orderly restart.
    Term,
}

#[derive(Parser, Debug)]
#[command(
    name = "orrery-storm",
    about = "Reconnect storm against a restarting coordinator"
)]
struct Args {
    /// Protocol-level agents to run.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Seconds to wait for every agent to be Up, at first and after the restart.
    #[arg(long, default_value_t = 60.0)]
    timeout: f64,
    /// Milliseconds between stopping the coordinator and starting it again;
    /// at least 1000, so that pings the old process recorded fall in an
    /// earlier second than any the new one records (listHosts has seconds).
    #[arg(long, default_value_t = 1000)]
    downtime_ms: u64,
    /// How the coordinator is stopped.
    #[arg(long, value_enum, default_value_t = Stop::Kill)]
    signal: Stop,
    /// Enrolments in flight at once.
    #[arg(long, default_value_t = 32)]
    enrol_concurrency: usize,
    /// Where the coordinator's data directory and log go (default: a new
    /// temporary directory, removed afterwards unless --keep or a failure).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Keep the temporary directory.
    #[arg(long)]
    keep: bool,
}

fn coordinator_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("ORRERY_COORDINATOR_BIN") {
        return Ok(PathBuf::from(p));
    }
    let me = std::env::current_exe().context("locating this program")?;
    Ok(me.with_file_name("orrery-coordinator"))
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn mib(kib: u64) -> f64 {
    r3(kib as f64 / 1024.0)
}

fn say(msg: impl std::fmt::Display) {
    eprintln!("orrery-storm: {msg}");
}

/// Waits until every agent has been welcomed after `since`; returns each
/// one's delay, or those welcomed so far when `limit` passes.
async fn wait_all_up(
    tracker: &Tracker,
    coord: &mut Coordinator,
    n: usize,
    since: Instant,
    limit: Duration,
) -> Result<(bool, Vec<Duration>)> {
    let deadline = since + limit;
    let mut checked = Instant::now();
    loop {
        let up = tracker.up_since(since);
        if up.len() >= n {
            return Ok((true, up));
        }
        if Instant::now() > deadline {
            return Ok((false, up));
        }
        if checked.elapsed() > Duration::from_millis(500) {
            coord.check_alive()?;
            checked = Instant::now();
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Polls `listHosts` until every host is Up with a ping at or after
/// `since_unix`; returns when that was first seen, or None.
async fn confirm_api(
    coord: &Coordinator,
    hosts: &HashSet<String>,
    since_unix: i64,
    limit: Duration,
) -> Result<(Option<Instant>, HostsSeen)> {
    let deadline = Instant::now() + limit;
    loop {
        let seen = coord.hosts_up(hosts, since_unix).await?;
        if seen.up == hosts.len() {
            return Ok((Some(Instant::now()), seen));
        }
        if Instant::now() > deadline {
            return Ok((None, seen));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

struct Sampler {
    samples: Arc<Mutex<Vec<(f64, procfs::Sample)>>>,
    task: tokio::task::JoinHandle<()>,
}

/// Samples `pid` every [`SAMPLE_EVERY`] from `start` on.
fn sample(pid: u32, start: Instant) -> Sampler {
    let samples = Arc::new(Mutex::new(Vec::new()));
    let out = samples.clone();
    let task = tokio::spawn(async move {
        let pid = pid.to_string();
        loop {
            // The process may not have its /proc entry filled in yet, or be
            // gone: a missed sample is no error.
            if let Ok(s) = procfs::sample(&pid) {
                let t = start.elapsed().as_secs_f64();
                out.lock().unwrap_or_else(|e| e.into_inner()).push((t, s));
            }
            tokio::time::sleep(SAMPLE_EVERY).await;
        }
    });
    Sampler { samples, task }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    match run(&args).await {
        Ok((summary, ok)) => {
            // One line: what the test and scripts read.
            println!("{summary}");
            if !ok {
                std::process::exit(1);
            }
        }
        Err(e) => {
            say(format!("error: {e:#}"));
            std::process::exit(2);
        }
    }
}

async fn run(args: &Args) -> Result<(Value, bool)> {
    let n = args.agents;
    if n == 0 {
        bail!("--agents must be at least 1");
    }
    if args.downtime_ms < 1000 {
        bail!("--downtime-ms must be at least 1000");
    }
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        bail!("--timeout must be a positive number of seconds");
    }
    orrery_tls::install_crypto();
    let nofile = procfs::raise_nofile()?;
    // One connection per agent, plus enrolment's and the API client's: a
    // storm that ran out of descriptors would measure this process, not
    // the coordinator.
    if nofile < n as u64 + 256 {
        bail!("the open-file limit is {nofile}; {n} agents need more");
    }
    let bin = coordinator_bin()?;
    if !bin.is_file() {
        bail!(
            "coordinator binary {} not found (build it, or set ORRERY_COORDINATOR_BIN)",
            bin.display()
        );
    }
    let temp = match &args.work_dir {
        Some(_) => None,
        None => Some(
            tempfile::Builder::new()
                .prefix("orrery-storm-")
                .tempdir()
                .context("creating a work directory")?,
        ),
    };
    let base = match (&args.work_dir, &temp) {
        (Some(d), _) => d.clone(),
        (None, t) => t
            .as_ref()
            .context("no work directory")?
            .path()
            .to_path_buf(),
    };
    std::fs::create_dir_all(&base)?;
    let result = storm(args, &bin, &base).await;
    let keep = args.keep || !matches!(result, Ok((_, true)));
    if let Some(t) = temp {
        if keep {
            let kept = t.keep();
            say(format!("work directory kept: {}", kept.display()));
        }
    }
    result
}

async fn storm(
    args: &Args,
    bin: &std::path::Path,
    base: &std::path::Path,
) -> Result<(Value, bool)> {
    let n = args.agents;
    let limit = Duration::from_secs_f64(args.timeout);
    say(format!(
        "coordinator {}, work directory {}",
        bin.display(),
        base.display()
    ));
    let mut coord = Coordinator::init(bin, base)?;
    let t = Instant::now();
    let tokens = coord.tokens(n)?;
    let tokens_s = t.elapsed().as_secs_f64();
    say(format!("{n} tokens in {tokens_s:.2} s"));
    coord.start()?;
    coord.wait_ready(Duration::from_secs(60)).await?;

    // Enrolment: each agent its own key, CSR and certificate.
    let addr = coord.agent_addr();
    let t = Instant::now();
    let creds: Vec<agent::Credentials> = stream::iter(tokens.iter().enumerate())
        .map(|(i, token)| {
            let addr = addr.clone();
            async move {
                agent::enrol(&addr, token, &format!("storm-{i:04}"))
                    .await
                    .with_context(|| format!("enrolling agent {i}"))
            }
        })
        .buffered(args.enrol_concurrency.max(1))
        .try_collect()
        .await?;
    let enrol_s = t.elapsed().as_secs_f64();
    say(format!("{n} agents enrolled in {enrol_s:.2} s"));
    let hosts: HashSet<String> = creds.iter().map(|c| c.host_id.clone()).collect();

    // Every session opened at once: a cold start of the whole fleet.
    let tracker = Arc::new(Tracker::new(n));
    let t = Instant::now();
    let mut agents = tokio::task::JoinSet::new();
    for (index, creds) in creds.into_iter().enumerate() {
        let a = Arc::new(Agent {
            index,
            hostname: format!("storm-{index:04}"),
            creds,
            coordinator: addr.clone(),
        });
        agents.spawn(a.run(tracker.clone()));
    }
    let (all, up) = wait_all_up(&tracker, &mut coord, n, t, limit).await?;
    if !all {
        bail!("only {} of {n} agents came Up at first", up.len());
    }
    let first_up_s = up.iter().max().map_or(0.0, Duration::as_secs_f64);
    let (confirmed, seen) = confirm_api(&coord, &hosts, 0, limit).await?;
    if confirmed.is_none() {
        bail!(
            "listHosts shows {} of {n} hosts Up after every agent was welcomed: {:?}",
            seen.up,
            seen.states
        );
    }
    let before = tracker.snapshot();
    say(format!(
        "{n} agents Up in {first_up_s:.2} s (connect failures {}, refused {})",
        before.connect_failures, before.refused
    ));

    // The storm.
    let signal = match args.signal {
        Stop::Kill => libc::SIGKILL,
        Stop::Term => libc::SIGTERM,
    };
    let stopped = Instant::now();
    coord.stop(signal).await?;
    let stop_s = stopped.elapsed().as_secs_f64();
    tokio::time::sleep_until((stopped + Duration::from_millis(args.downtime_ms)).into()).await;
    let since_unix = unix_now().floor() as i64;
    let restart = Instant::now();
    let client_before = procfs::sample("self")?;
    coord.start()?;
    let pid = coord.pid().context("no coordinator process")?;
    let sampler = sample(pid, restart);
    say(format!(
        "coordinator stopped ({:?}) and started again as pid {pid}",
        args.signal
    ));
    let (all_up, delays) = wait_all_up(&tracker, &mut coord, n, restart, limit).await?;
    let storm_s = restart.elapsed().as_secs_f64();
    // Read at once, before the API is asked anything, so the figures are
    // the storm's alone.
    let at_end = procfs::sample(&pid.to_string())?;
    let client_after = procfs::sample("self")?;
    sampler.task.abort();
    let during = tracker.snapshot() - before;
    let stats = orrery_benchkit::percentiles(&delays);
    let storm_up_s = all_up.then(|| r3(stats.max / 1e3));
    say(match storm_up_s {
        Some(s) => format!("all {n} agents Up again {s:.2} s after the restart"),
        None => format!(
            "only {} of {n} agents Up again after {storm_s:.1} s",
            delays.len()
        ),
    });
    let (api_at, api_seen) = confirm_api(&coord, &hosts, since_unix, limit).await?;
    let connected = coord.agents_connected().await.ok();
    let samples = std::mem::take(&mut *sampler.samples.lock().unwrap_or_else(|e| e.into_inner()));
    let peak_rss_kib = samples
        .iter()
        .map(|(_, s)| s.rss_kib)
        .chain([at_end.rss_kib])
        .max()
        .unwrap_or(0);
    // Twice a second is enough to see when the work happened.
    let timeline: Vec<Value> = samples
        .iter()
        .step_by(2)
        .map(|(t, s)| json!([r3(*t), r3(s.cpu_s), mib(s.rss_kib)]))
        .collect();
    say(format!(
        "restarted coordinator until then: peak RSS {:.1} MiB, CPU {:.2} s ({:.0} % of a core)",
        at_end.hwm_kib as f64 / 1024.0,
        at_end.cpu_s,
        at_end.cpu_s / storm_s.max(1e-9) * 100.0
    ));
    coord.stop(libc::SIGKILL).await?;
    drop(agents);

    let ok = all_up && api_at.is_some();
    let summary = json!({
        "agents": n,
        "tokens_s": r3(tokens_s),
        "enrol_s": r3(enrol_s),
        "first_up_s": r3(first_up_s),
        "first_connect_failures": before.connect_failures,
        "first_refused": before.refused,
        "signal": format!("{:?}", args.signal).to_lowercase(),
        "stop_s": r3(stop_s),
        "downtime_s": r3(args.downtime_ms as f64 / 1e3),
        "up_after_restart": delays.len(),
        "all_up": all_up,
        "storm_up_s": storm_up_s,
        "storm_first_s": r3(stats.min / 1e3),
        "storm_p50_s": r3(stats.p50 / 1e3),
        "storm_p90_s": r3(stats.p90 / 1e3),
        "storm_api_confirmed_s": api_at.map(|t| r3((t - restart).as_secs_f64())),
        "api_hosts_up": api_seen.up,
        "api_states": api_seen.states,
        "agents_connected_metric": connected,
        "target_s": TARGET_S,
        "target_met": storm_up_s.is_some_and(|s| s < TARGET_S),
        "storm_connect_failures": during.connect_failures,
        "storm_refused": during.refused,
        "commands_answered": during.commands,
        "peak_rss_mib": mib(at_end.hwm_kib),
        "peak_rss_sampled_mib": mib(peak_rss_kib),
        "rss_end_mib": mib(at_end.rss_kib),
        "cpu_s": r3(at_end.cpu_s),
        "cpu_percent_avg": r3(at_end.cpu_s / storm_s.max(1e-9) * 100.0),
        "client_cpu_s": r3(client_after.cpu_s - client_before.cpu_s),
        "timeline": timeline,
        "machine": orrery_benchkit::machine(),
        "load_average": orrery_benchkit::load_average(),
        "coordinator": bin.display().to_string(),
    });
    Ok((summary, ok))
}
