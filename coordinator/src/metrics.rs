//! The Prometheus endpoint (`GET /metrics` on the API listener): API latency
//! histograms per command, jobs by status, connected agents, per-host
//! capacity and per-instance statistics, in the Prometheus text format
//! (version 0.0.4).

use crate::service::{SResult, Service};
use crate::store::records::{Host, Vm};
use crate::store::{Col, Cond, Kind, Query, StoreExt, Val};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::Mutex;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// Latency of API commands, by command name and outcome.
#[derive(Default)]
pub struct ApiMetrics {
    by_command: Mutex<BTreeMap<(String, bool), Histogram>>,
}

impl ApiMetrics {
    pub fn observe(&self, command: &str, ok: bool, seconds: f64) {
        let mut m = self.by_command.lock().expect("api metrics");
        let h = m.entry((command.to_string(), ok)).or_default();
        for (i, b) in BUCKETS.iter().enumerate() {
            if seconds <= *b {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += seconds;
    }

    fn render(&self, out: &mut String) {
        let m = self.by_command.lock().expect("api metrics").clone();
        out.push_str("# HELP orrery_api_request_duration_seconds Time to answer an API command.\n");
        out.push_str("# TYPE orrery_api_request_duration_seconds histogram\n");
        for ((cmd, ok), h) in &m {
            let labels = format!(
                "command=\"{}\",outcome=\"{}\"",
                esc(cmd),
                if *ok { "ok" } else { "error" }
            );
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "orrery_api_request_duration_seconds_bucket{{{labels},le=\"{b}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "orrery_api_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "orrery_api_request_duration_seconds_sum{{{labels}}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "orrery_api_request_duration_seconds_count{{{labels}}} {}",
                h.count
            );
        }
    }
}

/// A label value with the text format's escapes.
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The whole exposition.
pub async fn render(svc: &Service) -> SResult<String> {
    let mut out = String::new();
    svc.metrics.render(&mut out);

    family(&mut out, "orrery_jobs", "gauge", "Async jobs by status.");
    for (status, label) in [(0, "pending"), (1, "succeeded"), (2, "failed")] {
        let n = svc
            .store
            .count(Kind::Job, &Query::new().eq(Col::State, status.to_string()))
            .await?;
        let _ = writeln!(out, "orrery_jobs{{status=\"{label}\"}} {n}");
    }

    family(
        &mut out,
        "orrery_agents_connected",
        "gauge",
        "Host agents connected now.",
    );
    let _ = writeln!(
        out,
        "orrery_agents_connected {}",
        svc.agents.connected_agents()
    );

    let hosts: Vec<Host> = svc
        .store
        .all(Query::new().and(Cond::Ne(Col::State, "Removed".into())))
        .await?;
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
    family(
        &mut out,
        "orrery_host_up",
        "gauge",
        "1 when the host is Up.",
    );
    for h in hosts.iter().filter(|h| h.removed.is_none()) {
        let _ = writeln!(
            out,
            "orrery_host_up{{host=\"{}\",name=\"{}\",state=\"{}\"}} {}",
            h.uuid,
            esc(&h.name),
            esc(&h.state),
            u8::from(h.state == "Up")
        );
    }
    type HostGet = fn(&Host, (u64, u64, u64)) -> u64;
    let host_series: [(&str, &str, HostGet); 5] = [
        (
            "orrery_host_instances",
            "Instances holding capacity on the host.",
            |_, a| a.0,
        ),
        (
            "orrery_host_cpu_allocated_mhz",
            "CPU allocated to instances (cores x MHz).",
            |_, a| a.1,
        ),
        (
            "orrery_host_cpu_total_mhz",
            "CPU of the host (cores x MHz).",
            |h, _| (h.cpu_number.max(0) * h.cpu_speed.max(0)) as u64,
        ),
        (
            "orrery_host_memory_allocated_bytes",
            "Memory allocated to instances.",
            |_, a| a.2,
        ),
        (
            "orrery_host_memory_total_bytes",
            "Memory of the host.",
            |h, _| h.memory_total.max(0) as u64,
        ),
    ];
    for (name, help, f) in host_series {
        family(&mut out, name, "gauge", help);
        for h in hosts.iter().filter(|h| h.removed.is_none()) {
            let a = per_host.get(&h.id).copied().unwrap_or_default();
            let _ = writeln!(out, "{name}{{host=\"{}\"}} {}", h.uuid, f(h, a));
        }
    }

    let latest = svc.stats.all_latest();
    let mut names: HashMap<i64, (String, String)> = HashMap::new();
    // Names of the sampled instances, a few hundred per query.
    for chunk in latest.chunks(500) {
        let ids = chunk.iter().map(|(id, _)| Val::I(*id)).collect();
        let vms: Vec<Vm> = svc
            .store
            .all(Query::new().and(Cond::In(Col::Id, ids)))
            .await?;
        for v in vms.into_iter().filter(|v| v.removed.is_none()) {
            names.insert(v.id, (v.uuid, v.name));
        }
    }
    type Get = fn(&crate::service::stats::VmFigures) -> f64;
    let vm_series: [(&str, &str, Get); 6] = [
        (
            "orrery_instance_cpu_used_percent",
            "CPU used in the latest interval.",
            |f| f.cpu_percent,
        ),
        (
            "orrery_instance_memory_kib",
            "Memory of the instance (balloon size).",
            |f| f.memory_kbs as f64,
        ),
        (
            "orrery_instance_memory_free_kib",
            "Memory unused inside the guest.",
            |f| f.memory_free_kbs as f64,
        ),
        (
            "orrery_instance_network_read_kib",
            "KiB received in the latest interval.",
            |f| f.network_kbs_read as f64,
        ),
        (
            "orrery_instance_network_write_kib",
            "KiB sent in the latest interval.",
            |f| f.network_kbs_write as f64,
        ),
        (
            "orrery_instance_disk_read_kib",
            "KiB read from disks in the latest interval.",
            |f| f.disk_kbs_read as f64,
        ),
    ];
    for (name, help, f) in vm_series {
        family(&mut out, name, "gauge", help);
        for (id, fig) in &latest {
            if let Some((uuid, n)) = names.get(id) {
                let _ = writeln!(
                    out,
                    "{name}{{instance=\"{uuid}\",name=\"{}\"}} {}",
                    esc(n),
                    f(fig)
                );
            }
        }
    }
    family(
        &mut out,
        "orrery_stats_store_bytes",
        "gauge",
        "Size of the statistics database.",
    );
    let _ = writeln!(
        out,
        "orrery_stats_store_bytes {}",
        svc.stats.size_bytes().await.unwrap_or(0)
    );
    Ok(out)
}
