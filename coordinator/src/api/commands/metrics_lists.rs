//! The `list*Metrics` commands CloudStack's web UI needs to show its zone,
//! cluster, host, primary storage and volume pages (a page appears only when
//! `listApis` lists its command; pods have none in CloudStack either): the
//! plain list, with CloudStack's metrics fields added in its units and
//! formats ("2.40 Ghz", "3.13%", "48.00 GB", threshold flags), and
//! `listInfrastructure`. A figure Orrery does not measure (a host's own CPU
//! use before any instance reported, network counters of hosts) is left out,
//! as CloudStack leaves out a figure whose inputs are missing.

use super::*;
use crate::api::registry::{f, Field};
use crate::api::render::Reply;
use crate::cmd;
use crate::service::inventory::{HostUse, InfraFilter};
use serde_json::{json, Value};
use std::collections::HashMap;

/// The base list a metrics command extends, and how it adds its figures.
struct Metrics {
    name: &'static str,
    base: &'static str,
    /// Infrastructure figures are the root admin's, as in CloudStack;
    /// volumes' are their owners' too (`None`: the base list's access).
    access: Option<crate::api::registry::Access>,
    handler: crate::api::registry::Handler,
}

const METRICS: &[Metrics] = &[
    Metrics {
        name: "listZonesMetrics",
        access: Some(crate::api::registry::Access::RootAdmin),
        base: "listZones",
        handler: |ctx| Box::pin(zones(ctx)),
    },
    Metrics {
        name: "listClustersMetrics",
        access: Some(crate::api::registry::Access::RootAdmin),
        base: "listClusters",
        handler: |ctx| Box::pin(clusters(ctx)),
    },
    Metrics {
        name: "listHostsMetrics",
        access: Some(crate::api::registry::Access::RootAdmin),
        base: "listHosts",
        handler: |ctx| Box::pin(hosts(ctx)),
    },
    Metrics {
        name: "listStoragePoolsMetrics",
        access: Some(crate::api::registry::Access::RootAdmin),
        base: "listStoragePools",
        handler: |ctx| Box::pin(pools(ctx)),
    },
    Metrics {
        name: "listVolumesMetrics",
        access: None,
        base: "listVolumes",
        handler: |ctx| Box::pin(volumes(ctx)),
    },
];

const INFRA_FIELDS: &[Field] = &[
    f("zones", "integer", "zones"),
    f("pods", "integer", "pods"),
    f("clusters", "integer", "clusters"),
    f("hosts", "integer", "hosts"),
    f("storagepools", "integer", "primary storage pools"),
    f("imagestores", "integer", "secondary storage"),
    f(
        "imagecachestores",
        "integer",
        "secondary storage caches (none)",
    ),
    f(
        "backuprepositories",
        "integer",
        "backup repositories (none)",
    ),
    f("objectstores", "integer", "object stores (none)"),
    f("ilbvms", "integer", "internal load balancer VMs (none)"),
    f("systemvms", "integer", "system VMs (none)"),
    f("routers", "integer", "virtual routers (none)"),
    f("cpusockets", "integer", "CPU sockets of the hosts"),
    f("managementservers", "integer", "coordinators"),
    f("alerts", "integer", "alerts"),
];

/// The metrics commands, built from the lists they extend (`base` holds
/// every other command, so the parameters stay the lists' own).
pub fn commands(base: &[Command]) -> Vec<Command> {
    let mut out: Vec<Command> = METRICS
        .iter()
        .filter_map(|m| {
            let b = base.iter().find(|c| c.name == m.base)?;
            Some(Command {
                name: m.name,
                description: "The list, with the figures its metrics page shows.",
                is_async: false,
                access: m.access.unwrap_or(b.access),
                params: b.params,
                response: b.response,
                response_key: None,
                handler: m.handler,
            })
        })
        .collect();
    out.push(cmd!(
        "listInfrastructure",
        "Counts of the cloud's infrastructure, for the web UI's overview.",
        false,
        RootAdmin,
        &[],
        INFRA_FIELDS,
        infrastructure
    ));
    out
}

fn num(v: &Value, k: &str) -> f64 {
    match v.get(k) {
        Some(Value::Number(n)) => n.as_f64().unwrap_or(0.0),
        Some(Value::String(s)) => s.trim_end_matches('%').parse().unwrap_or(0.0),
        _ => 0.0,
    }
}

fn ghz(mhz: f64) -> String {
    format!("{:.2} Ghz", mhz / 1000.0)
}

fn gb(bytes: f64) -> String {
    format!("{:.2} GB", bytes / (1u64 << 30) as f64)
}

fn pct(part: f64, whole: f64) -> String {
    format!(
        "{:.2}%",
        if whole > 0.0 {
            part * 100.0 / whole
        } else {
            0.0
        }
    )
}

/// Adds fields to every item of a list reply.
fn decorate(r: Reply, add: impl Fn(&mut serde_json::Map<String, Value>)) -> Reply {
    match r {
        Reply::List(key, mut items, total) => {
            for it in &mut items {
                if let Some(o) = it.as_object_mut() {
                    add(o);
                }
            }
            Reply::List(key, items, total)
        }
        other => other,
    }
}

/// A setting as a fraction, for one cluster (or globally).
fn fraction(ctx: &Ctx, name: &str, cluster: Option<i64>) -> f64 {
    let scopes: Vec<(&str, i64)> = cluster.map(|c| ("cluster", c)).into_iter().collect();
    ctx.svc.setting(name, &scopes).parse().unwrap_or(0.0)
}

/// The notification and disable thresholds for CPU and memory.
struct Thresholds {
    cpu: f64,
    cpu_disable: f64,
    mem: f64,
    mem_disable: f64,
}

impl Thresholds {
    fn of(ctx: &Ctx, cluster: Option<i64>) -> Self {
        Thresholds {
            cpu: fraction(
                ctx,
                "cluster.cpu.allocated.capacity.notificationthreshold",
                cluster,
            ),
            cpu_disable: fraction(
                ctx,
                "cluster.cpu.allocated.capacity.disablethreshold",
                cluster,
            ),
            mem: fraction(
                ctx,
                "cluster.memory.allocated.capacity.notificationthreshold",
                cluster,
            ),
            mem_disable: fraction(
                ctx,
                "cluster.memory.allocated.capacity.disablethreshold",
                cluster,
            ),
        }
    }
}

/// `<prefix>threshold` and `<prefix>disablethreshold`: whether `fraction`
/// is past the notification and the disable threshold.
fn flags(o: &mut serde_json::Map<String, Value>, prefix: &str, fraction: f64, limits: (f64, f64)) {
    o.insert(format!("{prefix}threshold"), json!(fraction > limits.0));
    o.insert(
        format!("{prefix}disablethreshold"),
        json!(fraction > limits.1),
    );
}

/// What the hosts of a zone or a cluster hold, summed for its metrics.
#[derive(Default)]
struct Sum {
    hosts: u64,
    up: u64,
    cpu_mhz: f64,
    cpu_allocated: f64,
    mem: f64,
    mem_allocated: f64,
    /// Per host: CPU used (%), memory used (bytes).
    cpu_used: Vec<f64>,
    mem_used: Vec<f64>,
}

impl Sum {
    fn add(&mut self, h: &Host, u: &HostUse) {
        let total = (h.cpu_number * h.cpu_speed) as f64;
        self.hosts += 1;
        self.up += u64::from(h.state == "Up");
        self.cpu_mhz += total;
        self.cpu_allocated += u.cpu_mhz as f64;
        self.mem += h.memory_total as f64;
        self.mem_allocated += u.memory_bytes as f64;
        self.cpu_used.push(if total > 0.0 {
            u.cpu_used_mhz * 100.0 / total
        } else {
            0.0
        });
        // Memory in use is what the instances hold (KVM backs it all).
        self.mem_used.push(u.memory_bytes as f64);
    }

    /// CloudStack's zone and cluster fields; `count` is "clusters" or
    /// "hosts" with its "up / total" text.
    fn fields(&self, o: &mut serde_json::Map<String, Value>, t: &Thresholds) {
        let n = self.hosts.max(1) as f64;
        let cpu_avg = self.cpu_used.iter().sum::<f64>() / n;
        let cpu_max = self.cpu_used.iter().copied().fold(0.0, f64::max);
        let mem_used: f64 = self.mem_used.iter().sum();
        let mem_avg = mem_used / n;
        let mem_max = self.mem_used.iter().copied().fold(0.0, f64::max);
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        o.insert("cputotal".into(), json!(ghz(self.cpu_mhz)));
        o.insert(
            "cpuallocated".into(),
            json!(pct(self.cpu_allocated, self.cpu_mhz)),
        );
        o.insert("memorytotal".into(), json!(gb(self.mem)));
        o.insert(
            "memoryallocated".into(),
            json!(pct(self.mem_allocated, self.mem)),
        );
        let alloc_cpu = ratio(self.cpu_allocated, self.cpu_mhz);
        let alloc_mem = ratio(self.mem_allocated, self.mem);
        flags(o, "cpuallocated", alloc_cpu, (t.cpu, t.cpu_disable));
        flags(o, "memoryallocated", alloc_mem, (t.mem, t.mem_disable));
        // Use figures only once there is use, as CloudStack does.
        if cpu_avg > 0.0 {
            o.insert("cpuused".into(), json!(format!("{cpu_avg:.2}%")));
            // CloudStack's deviation is a fraction printed with a % sign.
            o.insert(
                "cpumaxdeviation".into(),
                json!(format!("{:.2}%", (cpu_max - cpu_avg) / cpu_avg)),
            );
            flags(o, "cpu", cpu_avg / 100.0, (t.cpu, t.cpu_disable));
        }
        if mem_used > 0.0 {
            o.insert("memoryused".into(), json!(pct(mem_used, self.mem)));
            o.insert(
                "memorymaxdeviation".into(),
                json!(format!("{:.2}%", (mem_max - mem_avg) * 100.0 / mem_avg)),
            );
            flags(
                o,
                "memory",
                ratio(mem_used, self.mem),
                (t.mem, t.mem_disable),
            );
        }
    }
}

/// Every host's use, summed per zone and per cluster (by uuid).
async fn sums(ctx: &Ctx) -> Result<(HashMap<String, Sum>, HashMap<String, Sum>), ApiError> {
    let (hosts, _) = ctx
        .svc
        .infrastructure
        .list_hosts(&InfraFilter::default())
        .await?;
    let (mut zones, mut clusters) = (HashMap::new(), HashMap::new());
    for h in &hosts {
        let u = ctx.svc.infrastructure.host_use(h.id).await?;
        if let Some(z) = ctx.svc.load_cached::<Zone>(h.zone_id).await? {
            zones.entry(z.uuid).or_insert_with(Sum::default).add(h, &u);
        }
        if let Some(c) = ctx.svc.load_cached::<Cluster>(h.cluster_id).await? {
            clusters
                .entry(c.uuid)
                .or_insert_with(Sum::default)
                .add(h, &u);
        }
    }
    Ok((zones, clusters))
}

fn id_of(o: &serde_json::Map<String, Value>) -> String {
    o.get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

async fn zones(ctx: Ctx) -> Result<Reply, ApiError> {
    let (by_zone, _) = sums(&ctx).await?;
    let (clusters, _) = ctx
        .svc
        .infrastructure
        .list_clusters(&InfraFilter::default())
        .await?;
    // Clusters per zone: enabled and managed ones, and all.
    let mut counts: HashMap<i64, (u64, u64)> = HashMap::new();
    for c in &clusters {
        let e = counts.entry(c.zone_id).or_default();
        e.1 += 1;
        e.0 += u64::from(c.allocation_state == "Enabled" && c.managed_state != "Unmanaged");
    }
    let mut zone_counts = HashMap::new();
    for (zid, n) in counts {
        if let Some(z) = ctx.svc.load_cached::<Zone>(zid).await? {
            zone_counts.insert(z.uuid, n);
        }
    }
    let t = Thresholds::of(&ctx, None);
    let r = super::infra::list_zones(ctx).await?;
    Ok(decorate(r, |o| {
        let id = id_of(o);
        let state = o
            .get("allocationstate")
            .cloned()
            .unwrap_or(json!("Enabled"));
        o.insert("state".into(), state);
        let (up, all) = zone_counts.get(&id).copied().unwrap_or_default();
        o.insert("clusters".into(), json!(format!("{up} / {all}")));
        by_zone.get(&id).unwrap_or(&Sum::default()).fields(o, &t);
    }))
}

async fn clusters(ctx: Ctx) -> Result<Reply, ApiError> {
    let (_, by_cluster) = sums(&ctx).await?;
    let (all, _) = ctx
        .svc
        .infrastructure
        .list_clusters(&InfraFilter::default())
        .await?;
    let thresholds: HashMap<String, Thresholds> = all
        .iter()
        .map(|c| (c.uuid.clone(), Thresholds::of(&ctx, Some(c.id))))
        .collect();
    let r = super::infra::list_clusters(ctx).await?;
    Ok(decorate(r, |o| {
        let id = id_of(o);
        let unmanaged = o.get("managedstate").and_then(Value::as_str) == Some("Unmanaged");
        let state = if unmanaged {
            json!("Unmanaged")
        } else {
            o.get("allocationstate")
                .cloned()
                .unwrap_or(json!("Enabled"))
        };
        o.insert("state".into(), state);
        let empty = Sum::default();
        let sum = by_cluster.get(&id).unwrap_or(&empty);
        o.insert("hosts".into(), json!(format!("{} / {}", sum.up, sum.hosts)));
        if let Some(t) = thresholds.get(&id) {
            sum.fields(o, t);
        }
    }))
}

async fn hosts(ctx: Ctx) -> Result<Reply, ApiError> {
    let svc = ctx.svc.clone();
    let mut limits = HashMap::new();
    for c in svc
        .infrastructure
        .list_clusters(&InfraFilter::default())
        .await?
        .0
    {
        limits.insert(c.id, Thresholds::of(&ctx, Some(c.id)));
    }
    let r = super::infra::list_hosts(ctx).await?;
    // The figures of the listed page's hosts only.
    let mut per_host = HashMap::new();
    if let Reply::List(_, items, _) = &r {
        for it in items {
            let Some(uuid) = it.get("id").and_then(Value::as_str) else {
                continue;
            };
            if let Some(h) = svc.load_uuid_cached::<Host>(uuid).await? {
                per_host.insert(
                    uuid.to_string(),
                    (svc.infrastructure.host_use(h.id).await?, h.cluster_id),
                );
            }
        }
    }
    Ok(decorate(r, |o| {
        let Some((u, cluster)) = per_host.get(&id_of(o)) else {
            return;
        };
        let Some(t) = limits.get(cluster) else {
            return;
        };
        let v = Value::Object(o.clone());
        let total = num(&v, "cpunumber") * num(&v, "cpuspeed");
        let mem = num(&v, "memorytotal");
        let mem_alloc = u.memory_bytes as f64;
        let frac = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        // No out-of-band management: CloudStack's answer for such hosts.
        o.insert("powerstate".into(), json!("Disabled"));
        o.insert(
            "instances".into(),
            json!(format!("{} / {}", u.running, u.instances)),
        );
        o.insert("cputotalghz".into(), json!(ghz(total)));
        o.insert("cpuallocatedghz".into(), json!(ghz(u.cpu_mhz as f64)));
        o.insert("memorytotalgb".into(), json!(gb(mem)));
        o.insert("memoryallocatedgb".into(), json!(gb(mem_alloc)));
        o.insert("memoryusedgb".into(), json!(gb(mem_alloc)));
        let alloc_cpu = frac(u.cpu_mhz as f64, total);
        flags(o, "cpuallocated", alloc_cpu, (t.cpu, t.cpu_disable));
        flags(o, "memory", frac(mem_alloc, mem), (t.mem, t.mem_disable));
        flags(
            o,
            "memoryallocated",
            frac(mem_alloc, mem),
            (t.mem, t.mem_disable),
        );
        if u.cpu_used_mhz > 0.0 {
            o.insert("cpuused".into(), json!(pct(u.cpu_used_mhz, total)));
            o.insert("cpuusedghz".into(), json!(ghz(u.cpu_used_mhz)));
            flags(
                o,
                "cpu",
                frac(u.cpu_used_mhz, total),
                (t.cpu, t.cpu_disable),
            );
        }
    }))
}

async fn pools(ctx: Ctx) -> Result<Reply, ApiError> {
    let (ps, _) = ctx
        .svc
        .infrastructure
        .list_storage_pools(&InfraFilter::default())
        .await?;
    // Per pool: (notification, disable) thresholds for use and allocation.
    let mut limits = HashMap::new();
    for p in &ps {
        let cluster = p.cluster_id;
        let zone = [("zone", p.zone_id)];
        let f = |name: &str, scopes: &[(&str, i64)]| -> f64 {
            ctx.svc.setting(name, scopes).parse().unwrap_or(0.0)
        };
        let cl: Vec<(&str, i64)> = cluster.map(|c| ("cluster", c)).into_iter().collect();
        limits.insert(
            p.uuid.clone(),
            [
                f("cluster.storage.capacity.notificationthreshold", &cl),
                f("pool.storage.capacity.disablethreshold", &zone),
                f(
                    "cluster.storage.allocated.capacity.notificationthreshold",
                    &cl,
                ),
                f("pool.storage.allocated.capacity.disablethreshold", &zone),
            ],
        );
    }
    let r = super::infra::list_pools(ctx).await?;
    Ok(decorate(r, |o| {
        let v = Value::Object(o.clone());
        let total = num(&v, "disksizetotal");
        let alloc = num(&v, "disksizeallocated");
        // Volumes are thin files: what they may grow to is what they use.
        let used = num(&v, "disksizeused").max(alloc);
        // Orrery does not over-provision primary storage.
        let factor = 1.0;
        o.insert(
            "disksizetotalgb".into(),
            json!(format!("{} (x{factor:.1})", gb(total))),
        );
        o.insert("disksizeallocatedgb".into(), json!(gb(alloc)));
        o.insert("disksizeusedgb".into(), json!(gb(used)));
        o.insert(
            "disksizeunallocatedgb".into(),
            json!(gb((total * factor - alloc).max(0.0))),
        );
        if let Some([use_n, use_d, alloc_n, alloc_d]) = limits.get(&id_of(o)) {
            let cap = total * factor;
            flags(o, "storageusage", used / cap.max(1.0), (*use_n, *use_d));
            flags(
                o,
                "storageallocated",
                alloc / cap.max(1.0),
                (*alloc_n, *alloc_d),
            );
        }
    }))
}

async fn volumes(ctx: Ctx) -> Result<Reply, ApiError> {
    let admin = ctx.caller.is_admin();
    let svc = ctx.svc.clone();
    let r = super::volumes::list_volumes(ctx).await?;
    // The listed volumes' latest I/O, by uuid (the list holds only what
    // the caller may see).
    let mut iops = HashMap::new();
    if let Reply::List(_, items, _) = &r {
        for it in items {
            let Some(uuid) = it.get("id").and_then(Value::as_str) else {
                continue;
            };
            if let Some(v) = svc.load_uuid_cached::<Volume>(uuid).await? {
                if let Some(f) = svc.statistics.hub.volume_latest(v.id) {
                    iops.insert(uuid.to_string(), f.io_read + f.io_write);
                }
            }
        }
    }
    Ok(decorate(r, |o| {
        let v = Value::Object(o.clone());
        o.insert(
            "sizegb".into(),
            json!(format!("{:.2} GiB", num(&v, "size") / (1u64 << 30) as f64)),
        );
        if let Some(n) = iops.get(&id_of(o)) {
            o.insert("diskiopstotal".into(), json!(n));
        }
        // Admins see where and what: "Shared (ROOT)", as CloudStack shows it.
        if admin {
            let st = v
                .get("storagetype")
                .and_then(Value::as_str)
                .unwrap_or("shared");
            let mut c = st.chars();
            let cap: String = c
                .next()
                .map(|f| f.to_uppercase().chain(c).collect())
                .unwrap_or_default();
            let ty = v.get("type").and_then(Value::as_str).unwrap_or("");
            o.insert("storagetype".into(), json!(format!("{cap} ({ty})")));
        }
    }))
}

async fn infrastructure(ctx: Ctx) -> Result<Reply, ApiError> {
    let c = ctx.svc.infrastructure.infrastructure_counts().await?;
    Ok(Reply::Object(
        "infrastructure",
        json!({
            "zones": c.zones,
            "pods": c.pods,
            "clusters": c.clusters,
            "hosts": c.hosts,
            "storagepools": c.storage_pools,
            "imagestores": 1,
            "imagecachestores": 0,
            "backuprepositories": 0,
            "objectstores": 0,
            "systemvms": 0,
            "routers": 0,
            "cpusockets": c.cpu_sockets,
            "managementservers": 1,
            "alerts": 0,
            "ilbvms": 0,
        }),
    ))
}
