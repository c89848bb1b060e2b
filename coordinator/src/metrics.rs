//! The Prometheus endpoint (`GET /metrics` on its own listener, see
//! docs/metrics.md): API latency histograms per command, jobs by status,
//! connected agents, per-host capacity and per-instance statistics, encoded
//! by `prometheus-client` in the Prometheus text format (version 0.0.4).

use crate::service::records::Host;
use crate::service::{SResult, Service};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;

/// The exposition's content type.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    command: String,
    outcome: &'static str,
}

fn api_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// Latency of API commands, by command name and outcome.
pub struct ApiMetrics {
    by_command: Family<ApiLabels, Histogram, fn() -> Histogram>,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        ApiMetrics {
            by_command: Family::new_with_constructor(api_histogram),
        }
    }
}

impl ApiMetrics {
    pub fn observe(&self, command: &str, ok: bool, seconds: f64) {
        self.by_command
            .get_or_create(&ApiLabels {
                command: command.to_string(),
                outcome: if ok { "ok" } else { "error" },
            })
            .observe(seconds);
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostUpLabels {
    host: String,
    name: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabels {
    host: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceLabels {
    instance: String,
    name: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The whole exposition.
pub async fn render(svc: &Service) -> SResult<String> {
    let mut reg = Registry::default();
    reg.register(
        "orrery_api_request_duration_seconds",
        "Time to answer an API command",
        svc.metrics.by_command.clone(),
    );

    let jobs = Family::<StatusLabels, Gauge>::default();
    for (status, label) in [(0, "pending"), (1, "succeeded"), (2, "failed")] {
        let n = svc.jobs_in_status(status).await?;
        jobs.get_or_create(&StatusLabels { status: label })
            .set(int(n));
    }
    reg.register("orrery_jobs", "Async jobs by status", jobs);

    let leader = Gauge::<i64>::default();
    leader.set(i64::from(svc.leads()));
    reg.register(
        "orrery_coordinator_leader",
        "1 while this coordinator runs the background loops (always with the embedded store)",
        leader,
    );

    let agents = Gauge::<i64>::default();
    agents.set(int(svc.agents.connected_agents() as u64));
    reg.register(
        "orrery_agents_connected",
        "Host agents connected now",
        agents,
    );

    let hosts: Vec<Host> = svc.live_hosts().await?;
    let mut per_host: HashMap<i64, (u64, u64, u64)> = HashMap::new();
    let zones: std::collections::BTreeSet<i64> = hosts.iter().map(|h| h.zone_id).collect();
    for z in zones {
        for i in svc.capacity.instances(z) {
            if let Some(h) = i.host_id {
                let e = per_host.entry(h).or_default();
                e.0 += 1;
                e.1 += u64::from(i.cpu_number) * u64::from(i.cpu_speed_mhz);
                e.2 += i.memory_mb * 1024 * 1024;
            }
        }
    }
    let up = Family::<HostUpLabels, Gauge>::default();
    for h in &hosts {
        up.get_or_create(&HostUpLabels {
            host: h.uuid.clone(),
            name: h.name.clone(),
            state: h.state.clone(),
        })
        .set(i64::from(h.state == "Up"));
    }
    reg.register("orrery_host_up", "1 when the host is Up", up);
    type HostGet = fn(&Host, (u64, u64, u64)) -> u64;
    let host_series: [(&str, &str, HostGet); 5] = [
        (
            "orrery_host_instances",
            "Instances holding capacity on the host",
            |_, a| a.0,
        ),
        (
            "orrery_host_cpu_allocated_mhz",
            "CPU allocated to instances (cores x MHz)",
            |_, a| a.1,
        ),
        (
            "orrery_host_cpu_total_mhz",
            "CPU of the host (cores x MHz)",
            |h, _| (h.cpu_number.max(0) * h.cpu_speed.max(0)) as u64,
        ),
        (
            "orrery_host_memory_allocated_bytes",
            "Memory allocated to instances",
            |_, a| a.2,
        ),
        (
            "orrery_host_memory_total_bytes",
            "Memory of the host",
            |h, _| h.memory_total.max(0) as u64,
        ),
    ];
    for (name, help, f) in host_series {
        let fam = Family::<HostLabels, Gauge>::default();
        for h in &hosts {
            let a = per_host.get(&h.id).copied().unwrap_or_default();
            fam.get_or_create(&HostLabels {
                host: h.uuid.clone(),
            })
            .set(int(f(h, a)));
        }
        reg.register(name, help, fam);
    }

    let latest = svc.statistics.hub.all_latest();
    let ids: Vec<i64> = latest.iter().map(|(id, _)| *id).collect();
    let names: HashMap<i64, (String, String)> = svc.vm_names(&ids).await?;
    type Get = fn(&crate::service::stats::VmFigures) -> f64;
    let vm_series: [(&str, &str, Get); 6] = [
        (
            "orrery_instance_cpu_used_percent",
            "CPU used in the latest interval",
            |f| f.cpu_percent,
        ),
        (
            "orrery_instance_memory_kib",
            "Memory of the instance (balloon size)",
            |f| f.memory_kbs as f64,
        ),
        (
            "orrery_instance_memory_free_kib",
            "Memory unused inside the guest",
            |f| f.memory_free_kbs as f64,
        ),
        (
            "orrery_instance_network_read_kib",
            "KiB received in the latest interval",
            |f| f.network_kbs_read as f64,
        ),
        (
            "orrery_instance_network_write_kib",
            "KiB sent in the latest interval",
            |f| f.network_kbs_write as f64,
        ),
        (
            "orrery_instance_disk_read_kib",
            "KiB read from disks in the latest interval",
            |f| f.disk_kbs_read as f64,
        ),
    ];
    for (name, help, f) in vm_series {
        let fam = Family::<InstanceLabels, FloatGauge>::default();
        for (id, fig) in &latest {
            if let Some((uuid, n)) = names.get(id) {
                fam.get_or_create(&InstanceLabels {
                    instance: uuid.clone(),
                    name: n.clone(),
                })
                .set(f(fig));
            }
        }
        reg.register(name, help, fam);
    }
    let size = Gauge::<i64>::default();
    size.set(int(svc.statistics.hub.size_bytes().await.unwrap_or(0)));
    reg.register(
        "orrery_stats_store_bytes",
        "Size of the statistics database",
        size,
    );
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &reg)
        .map_err(|e| crate::service::ServiceError::internal(format!("encoding metrics: {e}")))?;
    Ok(out)
}
