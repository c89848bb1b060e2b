//! Storage benchmark: 10,000 instances sampled every 60 s for 12 hours (7.2 million
//! samples), encoded as one block per instance per hour (60 rows) and per 12 hours
//! (720 rows). Prints size per sample, encoding throughput and the time to decode one
//! instance's 12-hour history.
//!
//! Run with `cargo bench -p orrery-series --bench series_bench`. Data come from a seeded
//! RNG, so every run sees the same samples.

use std::hint::black_box;
use std::time::{Duration, Instant};

use orrery_series::{
    decode_samples, BlockBuilder, IoCounters, MemoryStats, NetCounters, Schema, VmSample,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const INSTANCES: usize = 10_000;
const SAMPLES: usize = 720;
const INTERVAL_MS: i64 = 60_000;
const START_MS: i64 = 1_700_000_000_000;
const KIB: u64 = 1024;

/// How busy an instance is; decides the size of its counter increments.
#[derive(Clone, Copy)]
enum Load {
    Idle,
    Moderate,
    Busy,
}

struct Profile {
    load: Load,
    cpu_base: f64,
    cpu_noise: f64,
    vcpus: u32,
    memory_kib: u64,
    /// Sample index at which the instance is restarted (counters drop to zero).
    restart_at: Option<usize>,
    /// Sample index at which the memory offering changes (a scale operation).
    resize_at: Option<usize>,
}

fn profile(rng: &mut StdRng) -> Profile {
    let roll: f64 = rng.gen();
    let (load, cpu_base, cpu_noise) = if roll < 0.6 {
        (Load::Idle, rng.gen_range(0.5..5.0), 0.5)
    } else if roll < 0.9 {
        (Load::Moderate, rng.gen_range(10.0..40.0), 3.0)
    } else {
        (Load::Busy, rng.gen_range(50.0..95.0), 8.0)
    };
    let vcpus = [1, 2, 2, 4, 4, 8, 16][rng.gen_range(0..7)];
    let memory_kib = [1u64, 2, 4, 8, 8, 16, 32][rng.gen_range(0..7)] << 20;
    Profile {
        load,
        cpu_base,
        cpu_noise,
        vcpus,
        memory_kib,
        restart_at: rng.gen_bool(0.02).then(|| rng.gen_range(1..SAMPLES)),
        resize_at: rng.gen_bool(0.002).then(|| rng.gen_range(1..SAMPLES)),
    }
}

/// Bytes moved in one interval: mostly small amounts, sometimes a burst.
fn traffic(rng: &mut StdRng, load: Load) -> u64 {
    let (typical, burst) = match load {
        Load::Idle => (20 * KIB, 5 * KIB * KIB),
        Load::Moderate => (2 * KIB * KIB, 50 * KIB * KIB),
        Load::Busy => (50 * KIB * KIB, 500 * KIB * KIB),
    };
    if rng.gen_bool(0.05) {
        rng.gen_range(0..burst)
    } else {
        rng.gen_range(0..typical)
    }
}

/// Disk bytes in one interval, in 4 KiB pages; idle guests often do no I/O at all.
fn disk_io(rng: &mut StdRng, load: Load, reads: bool) -> u64 {
    let (p_active, max_pages) = match (load, reads) {
        (Load::Idle, true) => (0.05, 256),
        (Load::Idle, false) => (0.6, 64),
        (Load::Moderate, true) => (0.5, 4096),
        (Load::Moderate, false) => (0.9, 4096),
        (Load::Busy, _) => (1.0, 65_536),
    };
    if rng.gen_bool(p_active) {
        rng.gen_range(1..=max_pages) * 4 * KIB
    } else {
        0
    }
}

fn ops_for(rng: &mut StdRng, bytes: u64, unit: u64) -> u64 {
    if bytes == 0 {
        0
    } else {
        (bytes / (unit * rng.gen_range(1..8))).max(1)
    }
}

/// Fills `out` with one instance's 12 hours.
fn generate(rng: &mut StdRng, out: &mut Vec<VmSample>) {
    out.clear();
    let p = profile(rng);
    let mut cpu = p.cpu_base;
    let mut memory = p.memory_kib;
    let mut unused = memory * rng.gen_range(40..80) / 100;
    let mut rss = memory * rng.gen_range(30..60) / 100;
    let mut net = NetCounters::default();
    let mut disk = IoCounters::default();
    // Counters start wherever the instance's uptime left them.
    let scale = rng.gen_range(1..1000);
    net.rx_bytes = scale * 10_000_000;
    net.tx_bytes = scale * 3_000_000;
    net.rx_packets = net.rx_bytes / 700;
    net.tx_packets = net.tx_bytes / 500;
    disk.read_bytes = scale * 50_000_000;
    disk.write_bytes = scale * 20_000_000;
    disk.read_ops = disk.read_bytes / 16_384;
    disk.write_ops = disk.write_bytes / 8192;

    let phase = rng.gen_range(0..INTERVAL_MS);
    let mut slot = 0i64;
    for i in 0..SAMPLES {
        // Now and then the collector misses a round.
        slot += if rng.gen_bool(0.001) { 2 } else { 1 };
        let ts = START_MS + phase + slot * INTERVAL_MS + rng.gen_range(-5..=5);

        if p.restart_at == Some(i) {
            net = NetCounters::default();
            disk = IoCounters::default();
            rss = memory / 10;
        }
        if p.resize_at == Some(i) {
            memory *= 2;
        }
        // CPU wanders around its base, pulled back towards it.
        cpu += rng.gen_range(-p.cpu_noise..p.cpu_noise) + (p.cpu_base - cpu) * 0.1;
        cpu = cpu.clamp(0.0, 100.0);
        // Balloon statistics move a few pages most minutes.
        if rng.gen_bool(0.8) {
            let step = rng.gen_range(0..4096) * 4;
            unused = if rng.gen_bool(0.5) {
                unused.saturating_sub(step)
            } else {
                (unused + step).min(memory)
            };
        }
        if rng.gen_bool(0.5) {
            let step = rng.gen_range(0..512) * 4;
            rss = if rng.gen_bool(0.5) {
                rss.saturating_sub(step)
            } else {
                (rss + step).min(memory)
            };
        }
        let rx = traffic(rng, p.load);
        let tx = traffic(rng, p.load) / 3;
        net.rx_bytes += rx;
        net.tx_bytes += tx;
        net.rx_packets += ops_for(rng, rx, 200);
        net.tx_packets += ops_for(rng, tx, 200);
        let read = disk_io(rng, p.load, true);
        let write = disk_io(rng, p.load, false);
        disk.read_bytes += read;
        disk.write_bytes += write;
        disk.read_ops += ops_for(rng, read, 4096);
        disk.write_ops += ops_for(rng, write, 4096);

        let mut sample = VmSample {
            ts,
            cpu_hundredths: 0,
            vcpus: p.vcpus,
            memory: MemoryStats {
                actual_kib: memory,
                unused_kib: unused,
                rss_kib: rss,
                target_kib: memory,
            },
            network: net,
            disk,
        };
        sample.set_cpu_percent(cpu);
        out.push(sample);
    }
}

struct Layout {
    rows_per_block: usize,
    /// Encoded blocks, per instance.
    blocks: Vec<Vec<Vec<u8>>>,
    bytes: usize,
    encode_time: Duration,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn main() {
    let layouts = [60, 720];
    let mut results: Vec<Layout> = layouts
        .iter()
        .map(|&rows_per_block| Layout {
            rows_per_block,
            blocks: Vec::with_capacity(INSTANCES),
            bytes: 0,
            encode_time: Duration::ZERO,
        })
        .collect();

    let mut rng = StdRng::seed_from_u64(0x0ee7_5e71e5);
    let mut samples = Vec::with_capacity(SAMPLES);
    let mut builder = BlockBuilder::with_capacity(VmSample::COLUMN_NAMES.len(), SAMPLES).unwrap();
    let generation = Instant::now();
    let mut generate_time = Duration::ZERO;
    for _ in 0..INSTANCES {
        let t = Instant::now();
        generate(&mut rng, &mut samples);
        generate_time += t.elapsed();
        for layout in &mut results {
            let t = Instant::now();
            let mut blocks = Vec::with_capacity(SAMPLES / layout.rows_per_block);
            for chunk in samples.chunks(layout.rows_per_block) {
                for s in chunk {
                    builder.push_sample(s).unwrap();
                }
                blocks.push(builder.flush());
            }
            layout.encode_time += t.elapsed();
            layout.bytes += blocks.iter().map(Vec::len).sum::<usize>();
            layout.blocks.push(blocks);
        }
    }
    let total_samples = INSTANCES * SAMPLES;
    println!(
        "{INSTANCES} instances x {SAMPLES} samples = {total_samples} samples ({} value columns + timestamp), generated and encoded in {:.1?} (generation alone {:.1?})",
        VmSample::COLUMN_NAMES.len(),
        generation.elapsed(),
        generate_time
    );
    let raw = total_samples * (8 + 4 + 4 + 12 * 8);
    println!(
        "raw fixed-width size: {:.1} MB ({} B/sample)",
        raw as f64 / 1e6,
        raw / total_samples
    );

    for layout in &results {
        // Check every instance decodes to exactly what was generated (outside timing).
        let mut check = StdRng::seed_from_u64(0x0ee7_5e71e5);
        for blocks in layout.blocks.iter() {
            generate(&mut check, &mut samples);
            let mut back = Vec::with_capacity(SAMPLES);
            for b in blocks {
                back.extend(decode_samples::<VmSample>(b).unwrap());
            }
            assert!(back == samples, "round trip differs");
        }

        let mut times = Vec::with_capacity(INSTANCES);
        for blocks in &layout.blocks {
            let t = Instant::now();
            let mut history = Vec::with_capacity(SAMPLES);
            for b in blocks {
                history.extend(decode_samples::<VmSample>(black_box(b)).unwrap());
            }
            black_box(&history);
            times.push(t.elapsed());
        }
        times.sort();

        println!();
        println!(
            "{}-row blocks ({} blocks per instance):",
            layout.rows_per_block,
            SAMPLES / layout.rows_per_block
        );
        println!(
            "  encoded: {:.2} MB total, {:.2} B/sample",
            layout.bytes as f64 / 1e6,
            layout.bytes as f64 / total_samples as f64
        );
        println!(
            "  ingest (push + encode, one core): {:.0} samples/s ({:.2?} for all)",
            total_samples as f64 / layout.encode_time.as_secs_f64(),
            layout.encode_time
        );
        println!(
            "  decode one instance's 12 h into VmSample: p50 {:.1?}, p99 {:.1?}, max {:.1?}",
            percentile(&times, 0.5),
            percentile(&times, 0.99),
            times[times.len() - 1]
        );
    }

    // Where the bytes go: each column encoded alone for the first 1,000 instances (the
    // per-block header is included in every column's figure, so this slightly overstates).
    println!();
    println!("bytes per sample by column (first 1000 instances, header included in each):");
    let names: Vec<&str> = std::iter::once("ts")
        .chain(VmSample::COLUMN_NAMES.iter().copied())
        .collect();
    let mut per_column = vec![[0usize; 2]; names.len()];
    let mut rng = StdRng::seed_from_u64(0x0ee7_5e71e5);
    let mut row = vec![0i64; VmSample::COLUMN_NAMES.len()];
    for _ in 0..1000 {
        generate(&mut rng, &mut samples);
        for (l, &rows_per_block) in layouts.iter().enumerate() {
            for chunk in samples.chunks(rows_per_block) {
                let mut ts_only = BlockBuilder::new(0).unwrap();
                let mut singles: Vec<BlockBuilder> = (1..names.len())
                    .map(|_| BlockBuilder::new(1).unwrap())
                    .collect();
                for s in chunk {
                    s.write_columns(&mut row);
                    ts_only.push(s.ts, &[]).unwrap();
                    for (b, &v) in singles.iter_mut().zip(&row) {
                        b.push(s.ts, &[v]).unwrap();
                    }
                }
                let ts_bytes = ts_only.finish().len();
                per_column[0][l] += ts_bytes;
                for (c, b) in singles.into_iter().enumerate() {
                    // Subtract the shared header and timestamp column.
                    per_column[c + 1][l] += b.finish().len().saturating_sub(ts_bytes);
                }
            }
        }
    }
    let n = (1000 * SAMPLES) as f64;
    println!("  {:<20} {:>8} {:>8}", "column", "60-row", "720-row");
    for (name, bytes) in names.iter().zip(&per_column) {
        println!(
            "  {:<20} {:>8.3} {:>8.3}",
            name,
            bytes[0] as f64 / n,
            bytes[1] as f64 / n
        );
    }
}
