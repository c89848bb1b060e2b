//! Statistics storage benchmark: 10,000 instances sampled every 60 s for
//! 12 hours (7.2 million samples) through the coordinator's statistics hub
//! into a real `stats.db`; reports bytes per sample on disk, ingest rate, and
//! the latency of reading one instance's 12-hour history.
//!
//!     cargo bench -p orrery-coordinator --bench stats_bench -- [--instances N] [--hours H]

use anyhow::Result;
use orrery_coordinator::service::stats::{vm_figures, StatsHub};
use orrery_series::VmSample;
use std::time::Instant;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// One instance's state as the generator evolves it: a mix of idle,
/// moderate and busy instances, counters that grow by varying amounts, and
/// an occasional restart that resets them.
#[derive(Clone, Copy)]
struct Gen {
    busy: u64,
    cpu: i64,
    s: VmSample,
}

fn arg(args: &[String], name: &str, default: i64) -> i64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let instances = arg(&args, "--instances", 10_000);
    let hours = arg(&args, "--hours", 12);
    let samples_per = hours * 60;
    let dir = std::env::temp_dir().join(format!("orrery-stats-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let hub = StatsHub::open(&dir).await?;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut gens: Vec<Gen> = (0..instances)
        .map(|_| {
            let busy = match rng.below(10) {
                0..=5 => 1,
                6..=8 => 20,
                _ => 70,
            };
            let mut s = VmSample {
                vcpus: 2,
                ..Default::default()
            };
            s.memory.actual_kib = 2 * 1024 * 1024;
            s.memory.target_kib = 2 * 1024 * 1024;
            s.memory.rss_kib = 1024 * 1024;
            s.memory.unused_kib = 900 * 1024;
            Gen {
                busy,
                cpu: busy as i64 * 100,
                s,
            }
        })
        .collect();
    let start_ms: i64 = 1_790_000_000_000;
    println!(
        "orrery stats_bench: {instances} instances x {samples_per} samples ({} total), {} cores",
        instances * samples_per,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    let t = Instant::now();
    for minute in 0..samples_per {
        for (id, g) in gens.iter_mut().enumerate() {
            // Sampling jitter of a few milliseconds, as real timers have.
            g.s.ts = start_ms + minute * 60_000 + rng.below(40) as i64;
            g.cpu = (g.cpu + rng.below(801) as i64 - 400).clamp(0, 10_000);
            if rng.below(100) < 3 {
                g.cpu = (g.busy * 100) as i64;
            }
            g.s.cpu_hundredths = g.cpu as u32;
            let traffic = g.busy * (1 + rng.below(20_000));
            g.s.network.rx_bytes += traffic * 7;
            g.s.network.tx_bytes += traffic * 3;
            g.s.network.rx_packets += traffic / 900 + 1;
            g.s.network.tx_packets += traffic / 1400 + 1;
            g.s.disk.read_bytes += 4096 * rng.below(g.busy * 4);
            g.s.disk.write_bytes += 4096 * rng.below(g.busy * 8);
            g.s.disk.read_ops += rng.below(g.busy);
            g.s.disk.write_ops += rng.below(g.busy * 2);
            if rng.below(10) == 0 {
                g.s.memory.unused_kib = (g.s.memory.unused_kib as i64
                    + (rng.below(8192) as i64 - 4096) * 4)
                    .clamp(0, 2 * 1024 * 1024) as u64;
            }
            // A restart now and then: counters start again from zero.
            if rng.below(720 * 50) == 0 {
                g.s.network = Default::default();
                g.s.disk = Default::default();
            }
            hub.ingest_vm(id as i64, g.s).await?;
        }
    }
    hub.save_tails().await?;
    let secs = t.elapsed().as_secs_f64();
    let total = (instances * samples_per) as f64;
    let bytes = hub.size_bytes().await?;
    println!(
        "ingest: {total:.0} samples in {secs:.1} s = {:.0} samples/s (target >= 100,000)",
        total / secs
    );
    println!(
        "on disk: {bytes} bytes in stats.db = {:.2} bytes/sample (target <= 16)",
        bytes as f64 / total
    );
    // One instance's whole 12 hours, as listVirtualMachinesUsageHistory
    // reads it: the blocks, decoded, turned into per-interval figures.
    let mut lat = Vec::new();
    let end = start_ms + samples_per * 60_000 + 60_000;
    for _ in 0..1000 {
        let id = rng.below(instances as u64) as i64;
        let t = Instant::now();
        let rows = hub.vm_samples(id, start_ms, end).await?;
        let figs: Vec<_> = rows
            .iter()
            .enumerate()
            .map(|(i, s)| vm_figures(i.checked_sub(1).map(|p| &rows[p]), s))
            .collect();
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(figs.len() as i64, samples_per);
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    let p = |q: f64| lat[((lat.len() as f64 - 1.0) * q) as usize];
    println!(
        "12-hour history of one instance: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (target p99 < 20 ms)",
        p(0.5),
        p(0.99),
        lat[lat.len() - 1]
    );
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}
