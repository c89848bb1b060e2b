//! Scheduler tick cost with 100,000 schedules and 100,000 leases in one due-index.
//!
//! A tick is what the coordinator does once a minute: pop everything due at `now`,
//! apply the collision rule to the schedules, compute and re-push each popped
//! schedule's next firing, and settle popped leases. Each tick also re-times a few
//! schedules and leases (API updates), which leaves stale heap entries behind as in
//! real use. Simulated time runs over Berlin's and New York's spring-forward
//! weekend. Reports p50 / p99 / max tick cost; the target is under 5 ms.

use std::hint::black_box;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use orrery_schedule::due::{DueIndex, DueItem, DueKey};
use orrery_schedule::lease::{ExpiryDecision, LeaseAction, LeaseRequest, LeaseState};
use orrery_schedule::plan::{resolve_collisions, Action, Firing, Schedule};
use orrery_schedule::{CronExpr, Tz};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SCHEDULES: usize = 100_000;
const LEASES: usize = 100_000;
/// Three simulated days, one tick per minute.
const TICKS: usize = 3 * 24 * 60;
const UPDATES_PER_TICK: usize = 20;

const ZONES: [&str; 10] = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Asia/Kolkata",
    "Australia/Sydney",
    "America/Los_Angeles",
    "Asia/Tokyo",
    "Europe/London",
    "America/Sao_Paulo",
    "Australia/Lord_Howe",
];

fn random_cron(rng: &mut StdRng) -> String {
    let m = rng.gen_range(0..60);
    let h = rng.gen_range(0..24);
    match rng.gen_range(0..100) {
        // Office-hours start/stop pairs dominate real use.
        0..=39 => format!("{m} {h} * * *"),
        40..=69 => format!("{m} {h} * * MON-FRI"),
        70..=79 => format!("{m} * * * *"),
        80..=84 => format!("{m} {h} * * SAT,SUN"),
        85..=89 => format!("{m} {h} {} * *", rng.gen_range(1..29)),
        90..=94 => format!("{m} {}-{} * * *", h.min(12), h.max(13)),
        95..=97 => format!("{}/15 * * * *", rng.gen_range(0..15)),
        _ => format!("{m} {h} 1 JAN,APR,JUL,OCT *"),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn main() {
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let start: DateTime<Utc> = Utc.with_ymd_and_hms(2026, 3, 27, 0, 0, 0).unwrap();
    let zones: Vec<Tz> = ZONES.iter().map(|z| z.parse().unwrap()).collect();

    let build = Instant::now();
    let schedules: Vec<Schedule> = (0..SCHEDULES)
        .map(|i| Schedule {
            id: i as u64,
            // Two schedules per instance on average, so collisions happen.
            vm_id: rng.gen_range(0..(SCHEDULES as u64 / 2)),
            action: Action::ALL[rng.gen_range(0..Action::ALL.len())],
            cron: CronExpr::parse(&random_cron(&mut rng)).unwrap(),
            tz: zones[rng.gen_range(0..zones.len())],
            start,
            end: None,
            enabled: true,
            description: String::new(),
        })
        .collect();
    let mut leases: Vec<LeaseState> = (0..LEASES)
        .map(|_| {
            let action = if rng.gen_bool(0.5) { "STOP" } else { "DESTROY" };
            let request = orrery_schedule::lease::validate_lease_params(
                Some(rng.gen_range(1..60)),
                Some(action),
            )
            .unwrap();
            let deployed = start - TimeDelta::minutes(rng.gen_range(0..(60 * 24 * 57)));
            LeaseState::at_deploy(true, None, request, deployed)
        })
        .collect();
    let mut index = DueIndex::with_capacity(SCHEDULES + LEASES);
    for s in &schedules {
        index.upsert(DueKey::Schedule(s.id), s.next_fire(start).unwrap());
    }
    for (vm, l) in leases.iter().enumerate() {
        index.upsert(DueKey::Lease(vm as u64), l.due_at().unwrap());
    }
    let build_time = build.elapsed();
    // Everything already overdue at the start is settled before measuring.
    let mut buf: Vec<DueItem> = Vec::new();
    index.pop_due_into(start, &mut buf);
    for item in buf.drain(..) {
        if let DueKey::Lease(vm) = item.key {
            leases[vm as usize] = leases[vm as usize].executed().unwrap().state;
        }
    }

    let mut ticks = Vec::with_capacity(TICKS);
    let mut compactions = Vec::new();
    let (mut fired, mut skipped, mut expired, mut max_due) = (0usize, 0usize, 0usize, 0usize);
    let mut firings: Vec<Firing> = Vec::new();
    for tick in 1..=TICKS {
        let now = start + TimeDelta::minutes(tick as i64);
        let heap_before = index.heap_len();
        let t0 = Instant::now();

        index.pop_due_into(now, &mut buf);
        max_due = max_due.max(buf.len());
        for item in buf.drain(..) {
            match item.key {
                DueKey::Schedule(id) => {
                    let s = &schedules[id as usize];
                    firings.push(Firing {
                        schedule_id: id,
                        vm_id: s.vm_id,
                        action: s.action,
                        at: item.at,
                    });
                    if let Some(next) = s.next_fire(now) {
                        index.upsert(item.key, next);
                    }
                }
                DueKey::Lease(vm) => {
                    let lease = &mut leases[vm as usize];
                    match lease.expiry(now, vm % 10 == 0) {
                        ExpiryDecision::Execute(_) => {
                            *lease = lease.executed().unwrap().state;
                            expired += 1;
                        }
                        ExpiryDecision::SkipDeleteProtected => {
                            index.upsert(item.key, now + TimeDelta::hours(1))
                        }
                        ExpiryDecision::NotDue { expires } => index.upsert(item.key, expires),
                        ExpiryDecision::NoLease => {}
                    }
                }
            }
        }
        let out = resolve_collisions(firings.drain(..));
        fired += out.run.len();
        skipped += out.skipped.len();
        black_box(&out);

        // API churn: re-time some schedules and extend some leases.
        for _ in 0..UPDATES_PER_TICK {
            let id = rng.gen_range(0..SCHEDULES);
            if let Some(next) = schedules[id].next_fire(now) {
                index.upsert(DueKey::Schedule(id as u64), next);
            }
            let vm = rng.gen_range(0..LEASES);
            let request = LeaseRequest {
                duration: Some(orrery_schedule::lease::LeaseDuration::Days(90)),
                action: Some(LeaseAction::Stop),
            };
            if let Ok(t) = leases[vm].update(request, start - TimeDelta::days(1), now) {
                leases[vm] = t.state;
                if let Some(at) = t.state.due_at() {
                    index.upsert(DueKey::Lease(vm as u64), at);
                }
            }
        }

        ticks.push(t0.elapsed());
        if index.heap_len() + 1000 < heap_before {
            compactions.push(tick);
        }
    }

    let mut sorted = ticks.clone();
    sorted.sort();
    let total: Duration = ticks.iter().sum();
    println!("tick_bench: {SCHEDULES} schedules + {LEASES} leases, {TICKS} one-minute ticks");
    println!("  initial build (parse + first next_fire + push): {build_time:?}");
    println!(
        "  tick p50 {:?}  p90 {:?}  p99 {:?}  max {:?}  mean {:?}",
        percentile(&sorted, 0.50),
        percentile(&sorted, 0.90),
        percentile(&sorted, 0.99),
        sorted[sorted.len() - 1],
        total / TICKS as u32
    );
    println!(
        "  schedule firings run {fired}, skipped by collision {skipped}, leases expired {expired}, most due in one tick {max_due}"
    );
    println!(
        "  index: {} live keys, {} heap entries (stale included)",
        index.len(),
        index.heap_len()
    );
    let mut slowest: Vec<(Duration, usize)> = ticks.iter().copied().zip(1..).collect();
    slowest.sort_by(|a, b| b.cmp(a));
    let slowest: Vec<String> = slowest[..5]
        .iter()
        .map(|(d, tick)| {
            let mark = if compactions.contains(tick) {
                " (compaction)"
            } else {
                ""
            };
            format!("#{tick} {d:?}{mark}")
        })
        .collect();
    println!("  slowest ticks: {}", slowest.join(", "));
    println!("  heap compactions during the run: {}", compactions.len());
    let p99 = percentile(&sorted, 0.99);
    println!(
        "  target p99 < 5 ms: {}",
        if p99 < Duration::from_millis(5) {
            "met"
        } else {
            "NOT met"
        }
    );
}
