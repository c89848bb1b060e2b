//! The `list*Metrics` commands CloudStack's web UI needs to show its zone,
//! pod, cluster, host, primary storage and volume pages (a page appears only
//! when `listApis` lists its command): the plain list, with the figures
//! those pages read added in CloudStack's units, and `listInfrastructure`.

use super::*;
use crate::api::registry::{f, Field};
use crate::api::render::Reply;
use crate::cmd;
use serde_json::{json, Value};

/// The base list a metrics command extends, and how it adds its figures.
struct Metrics {
    name: &'static str,
    base: &'static str,
    handler: crate::api::registry::Handler,
}

const METRICS: &[Metrics] = &[
    Metrics {
        name: "listZonesMetrics",
        base: "listZones",
        handler: |ctx| Box::pin(zones(ctx)),
    },
    Metrics {
        name: "listPodsMetrics",
        base: "listPods",
        handler: |ctx| Box::pin(pods(ctx)),
    },
    Metrics {
        name: "listClustersMetrics",
        base: "listClusters",
        handler: |ctx| Box::pin(clusters(ctx)),
    },
    Metrics {
        name: "listHostsMetrics",
        base: "listHosts",
        handler: |ctx| Box::pin(hosts(ctx)),
    },
    Metrics {
        name: "listStoragePoolsMetrics",
        base: "listStoragePools",
        handler: |ctx| Box::pin(pools(ctx)),
    },
    Metrics {
        name: "listVolumesMetrics",
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
                access: b.access,
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

fn gib(bytes: f64) -> String {
    format!("{:.2} GB", bytes / (1u64 << 30) as f64)
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

async fn hosts(ctx: Ctx) -> Result<Reply, ApiError> {
    let r = super::infra::list_hosts(ctx).await?;
    Ok(decorate(r, |o| {
        let v = Value::Object(o.clone());
        let total = num(&v, "cpunumber") * num(&v, "cpuspeed");
        o.insert("cputotalghz".into(), json!(ghz(total)));
        o.insert(
            "cpuallocatedghz".into(),
            json!(ghz(num(&v, "cpuallocatedvalue"))),
        );
        o.insert("memorytotalgb".into(), json!(gib(num(&v, "memorytotal"))));
        o.insert(
            "memoryallocatedgb".into(),
            json!(gib(num(&v, "memoryallocated"))),
        );
        o.insert("memoryusedgb".into(), json!(gib(num(&v, "memoryused"))));
        let up = v.get("state").and_then(Value::as_str) == Some("Up");
        o.insert("powerstate".into(), json!(if up { "On" } else { "Off" }));
    }))
}

async fn zones(ctx: Ctx) -> Result<Reply, ApiError> {
    let r = super::infra::list_zones(ctx).await?;
    Ok(decorate(r, |o| {
        o.entry("state").or_insert_with(|| json!("Enabled"));
    }))
}

async fn pods(ctx: Ctx) -> Result<Reply, ApiError> {
    super::infra::list_pods(ctx).await
}

async fn clusters(ctx: Ctx) -> Result<Reply, ApiError> {
    super::infra::list_clusters(ctx).await
}

async fn pools(ctx: Ctx) -> Result<Reply, ApiError> {
    let r = super::infra::list_pools(ctx).await?;
    Ok(decorate(r, |o| {
        let v = Value::Object(o.clone());
        let total = num(&v, "disksizetotal");
        let alloc = num(&v, "disksizeallocated");
        o.insert("disksizetotalgb".into(), json!(gib(total)));
        o.insert("disksizeallocatedgb".into(), json!(gib(alloc)));
        o.insert("disksizeusedgb".into(), json!(gib(alloc)));
    }))
}

async fn volumes(ctx: Ctx) -> Result<Reply, ApiError> {
    let r = super::volumes::list_volumes(ctx).await?;
    Ok(decorate(r, |o| {
        let v = Value::Object(o.clone());
        o.insert("sizegb".into(), json!(gib(num(&v, "size"))));
    }))
}

async fn infrastructure(ctx: Ctx) -> Result<Reply, ApiError> {
    let c = ctx.svc.infrastructure_counts().await?;
    Ok(Reply::Object(
        "infrastructure",
        json!({
            "zones": c.zones,
            "pods": c.pods,
            "clusters": c.clusters,
            "hosts": c.hosts,
            "storagepools": c.storage_pools,
            "imagestores": 1,
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
