//! Placement engine benchmarks: decisions per second and latency of
//! `placement::plan` over synthetic clouds of 1,000 and 10,000 hosts holding
//! 100,000 instances in 50 affinity groups, plus the one-off cost of building
//! the snapshot index.
//!
//! ```text
//! cargo bench -p orrery-coordinator --bench placement
//! ```
//!
//! Before the criterion runs, a plain loop times 10,000 individual decisions
//! per size (varied accounts, groups, tags and seeds) and prints mean, median,
//! p99 and max, since criterion reports only aggregate statistics.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use orrery_coordinator::placement::allocator::mix;
use orrery_coordinator::placement::{
    allocator_for, plan, AffinityGroup, AffinityKind, AllocationState, Cluster, Host, HostStatus,
    Id, Instance, Pod, Request, ResourceState, Settings, Snapshot, SnapshotParts, Zone,
};

const GIB: u64 = 1024 * 1024 * 1024;
const INSTANCES: usize = 100_000;
const GROUPS: usize = 50;
const ACCOUNTS: u64 = 1_000;
const HOSTS_PER_CLUSTER: usize = 50;
const CLUSTERS_PER_POD: usize = 10;

/// Deterministic pseudo-random stream.
struct Rng(u64, i64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.1 += 1;
        mix(self.0, self.1)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn group_kind(g: usize) -> AffinityKind {
    match g % 10 {
        0 | 1 => AffinityKind::HostAntiAffinity,
        2 => AffinityKind::HostAffinity,
        3..=6 => AffinityKind::NonStrictHostAntiAffinity,
        _ => AffinityKind::NonStrictHostAffinity,
    }
}

/// One zone; pods of 10 clusters of 50 hosts. Hosts of 32-64 cores and
/// 256-512 GiB; 5% with GPUs, 30% tagged `ssd`, 20% preferring an OS
/// category, 2% down or in maintenance. Instances of 1-4 cores and 1-4 GiB
/// spread at random; 50 groups (strict and non-strict, both kinds) of about
/// 200 members each, the strict affinity groups on a single host.
fn cloud(hosts: usize) -> SnapshotParts {
    let mut rng = Rng(0x5eed, 0);
    let clusters = hosts.div_ceil(HOSTS_PER_CLUSTER);
    let pods = clusters.div_ceil(CLUSTERS_PER_POD);
    let hosts: Vec<Host> = (0..hosts)
        .map(|i| {
            let cluster = i / HOSTS_PER_CLUSTER;
            let size = 1 + rng.below(2);
            let mut status = HostStatus::Up;
            let mut resource_state = ResourceState::Enabled;
            match rng.below(100) {
                0 => status = HostStatus::Down,
                1 => resource_state = ResourceState::Maintenance,
                _ => {}
            }
            Host {
                id: i as Id + 1,
                name: format!("host-{i}"),
                zone_id: 1,
                pod_id: (cluster / CLUSTERS_PER_POD) as Id + 1,
                cluster_id: cluster as Id + 1,
                status,
                resource_state,
                cpu_number: 32 * size as u32,
                cpu_speed_mhz: 2400,
                memory_bytes: 256 * GIB * size,
                tags: if rng.chance(30) {
                    vec!["ssd".into()]
                } else {
                    vec![]
                },
                gpu_devices: if rng.chance(5) { 4 } else { 0 },
                preferred_os_category: rng.chance(20).then(|| 1 + rng.below(4) as Id),
                max_guests: None,
                uefi: true,
                secure_boot: true,
                tpm: true,
                vgpu: Vec::new(),
            }
        })
        .collect();
    let n = hosts.len() as u64;
    let affinity_groups: Vec<AffinityGroup> = (0..GROUPS)
        .map(|g| AffinityGroup {
            id: g as Id + 1,
            kind: group_kind(g),
            account_id: 1 + (g as u64 % ACCOUNTS) as Id,
        })
        .collect();
    let instances: Vec<Instance> = (0..INSTANCES)
        .map(|i| {
            let in_group = i % 10 == 0; // 10,000 members, ~200 per group
            let g = (i / 10) % GROUPS;
            let host = if in_group && group_kind(g) == AffinityKind::HostAffinity {
                1 + (g as u64 * 37) % n
            } else {
                1 + rng.below(n)
            };
            Instance {
                id: i as Id + 1,
                host_id: Some(host as Id),
                account_id: 1 + rng.below(ACCOUNTS) as Id,
                cpu_number: 1 + rng.below(4) as u32,
                cpu_speed_mhz: 500,
                memory_mb: 1024 * (1 + rng.below(4)),
                gpu_count: 0,
                vgpu_type: None,
                affinity_group_ids: if in_group { vec![g as Id + 1] } else { vec![] },
                os_category: Some(1 + rng.below(4) as Id),
            }
        })
        .collect();
    SnapshotParts {
        zones: vec![Zone {
            id: 1,
            allocation_state: AllocationState::Enabled,
        }],
        pods: (0..pods)
            .map(|p| Pod {
                id: p as Id + 1,
                zone_id: 1,
                allocation_state: AllocationState::Enabled,
            })
            .collect(),
        clusters: (0..clusters)
            .map(|c| Cluster {
                id: c as Id + 1,
                zone_id: 1,
                pod_id: (c / CLUSTERS_PER_POD) as Id + 1,
                allocation_state: AllocationState::Enabled,
                cpu_overprovisioning: 2.0,
                mem_overprovisioning: 1.5,
                cpu_disable_threshold: None,
                mem_disable_threshold: None,
            })
            .collect(),
        hosts,
        instances,
        affinity_groups,
        settings: Settings::default(),
    }
}

/// The `i`th request of a varied stream: most join a non-strict
/// anti-affinity group, some a strict one, some want `ssd` or a GPU.
fn request(i: u64) -> Request {
    let mut rng = Rng(0xbeef, i as i64);
    let mut groups = Vec::new();
    if rng.chance(70) {
        groups.push(4 + 10 * rng.below(5) as Id); // non-strict anti-affinity
    }
    if rng.chance(30) {
        groups.push(1 + 10 * rng.below(5) as Id); // strict anti-affinity
    }
    if rng.chance(10) {
        groups.push(8 + 10 * rng.below(5) as Id); // non-strict affinity
    }
    Request {
        account_id: 1 + rng.below(ACCOUNTS) as Id,
        cpu_number: 1 + rng.below(4) as u32,
        cpu_speed_mhz: 1000,
        memory_mb: 1024 * (1 + rng.below(8)),
        host_tags: if rng.chance(20) {
            vec!["ssd".into()]
        } else {
            vec![]
        },
        os_category: Some(1 + rng.below(4) as Id),
        gpu_count: u32::from(rng.chance(2)),
        affinity_group_ids: groups,
        zone_id: Some(1),
        seed: rng.next(),
        ..Default::default()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Times `decisions` single decisions per size and prints the distribution.
fn latency_report(decisions: u64) {
    println!("placement latency ({decisions} decisions per size, one at a time)");
    for hosts in [1_000usize, 10_000] {
        let t = Instant::now();
        let parts = cloud(hosts);
        let generated = t.elapsed();
        let mut builds = Vec::new();
        let mut snap = None;
        for _ in 0..3 {
            let p = parts.clone();
            let t = Instant::now();
            snap = Some(black_box(Snapshot::new(p)));
            builds.push(t.elapsed());
        }
        builds.sort();
        let snap = snap.unwrap();
        for name in [
            "random",
            "firstfit",
            "userdispersing",
            "firstfitleastconsumed",
        ] {
            let alloc = allocator_for(name).unwrap();
            let reqs: Vec<Request> = (0..decisions).map(request).collect();
            let mut times = Vec::with_capacity(reqs.len());
            let mut placed = 0usize;
            let total = Instant::now();
            for r in &reqs {
                let t = Instant::now();
                let out = black_box(plan(&snap, r, alloc));
                times.push(t.elapsed());
                placed += usize::from(out.is_ok());
            }
            let wall = total.elapsed();
            times.sort();
            let mean = times.iter().sum::<Duration>() / times.len() as u32;
            println!(
                "  {hosts:>6} hosts {name:<22} mean {:>7.1} us  median {:>7.1} us  p99 {:>7.1} us  max {:>7.1} us  {:>7.0} decisions/s  ({placed} placed)",
                micros(mean),
                micros(percentile(&times, 0.5)),
                micros(percentile(&times, 0.99)),
                micros(*times.last().unwrap()),
                reqs.len() as f64 / wall.as_secs_f64(),
            );
        }
        // The rejection path: nothing fits, every host is explained.
        let mut r = request(1);
        r.memory_mb = 64 * 1024 * 1024;
        let alloc = allocator_for("random").unwrap();
        let mut times: Vec<Duration> = (0..decisions.min(1_000))
            .map(|_| {
                let t = Instant::now();
                let _ = black_box(plan(&snap, &r, alloc));
                t.elapsed()
            })
            .collect();
        times.sort();
        println!(
            "  {hosts:>6} hosts {:<22} median {:>7.1} us  p99 {:>7.1} us",
            "rejection (none fit)",
            micros(percentile(&times, 0.5)),
            micros(percentile(&times, 0.99)),
        );
        println!(
            "  {hosts:>6} hosts snapshot build ({INSTANCES} instances, {GROUPS} groups): median {:.1} ms (generating the input: {:.1} ms)",
            builds[builds.len() / 2].as_secs_f64() * 1e3,
            generated.as_secs_f64() * 1e3,
        );
    }
}

fn bench_plan(c: &mut Criterion) {
    let mut g = c.benchmark_group("plan");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(4));
    for hosts in [1_000usize, 10_000] {
        let snap = Snapshot::new(cloud(hosts));
        let reqs: Vec<Request> = (0..1024).map(request).collect();
        for name in ["random", "firstfit"] {
            let alloc = allocator_for(name).unwrap();
            let mut i = 0;
            g.bench_with_input(BenchmarkId::new(name, hosts), &hosts, |b, _| {
                b.iter(|| {
                    i = (i + 1) % reqs.len();
                    plan(&snap, &reqs[i], alloc)
                })
            });
        }
    }
    g.finish();
}

fn bench_build(c: &mut Criterion) {
    let mut g = c.benchmark_group("snapshot_build");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(8));
    for hosts in [1_000usize, 10_000] {
        let parts = cloud(hosts);
        g.bench_with_input(BenchmarkId::from_parameter(hosts), &hosts, |b, _| {
            b.iter_batched(
                || parts.clone(),
                Snapshot::new,
                criterion::BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

fn main() {
    // `cargo bench` passes --bench; under `cargo test --benches` this runs as
    // a quick smoke test instead.
    let full = std::env::args().any(|a| a == "--bench");
    latency_report(if full { 10_000 } else { 50 });
    let mut c = Criterion::default().configure_from_args();
    bench_plan(&mut c);
    bench_build(&mut c);
    c.final_summary();
}
