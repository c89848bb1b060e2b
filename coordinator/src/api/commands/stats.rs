//! Statistics: listVirtualMachinesUsageHistory, listVolumesUsageHistory and
//! listVirtualMachinesMetrics.

use super::*;
use crate::api::registry::{f, opt, Field, P, PAGING};
use crate::api::render::{date, Obj, Reply};
use crate::api::views::{self, Lookup};
use crate::cmd;
use crate::service::stats::{vm_figures, volume_figures};
use serde_json::{json, Value};

const HISTORY_FIELDS: &[Field] = &[
    f("id", "string", "the instance or volume"),
    f("name", "string", "its name"),
    f("displayname", "string", "the instance's display name"),
    f(
        "stats",
        "list",
        "one entry per sample: timestamp, cpuused, disk, memory and network figures",
    ),
];

const HISTORY_PARAMS: &[P] = &[
    opt("id", "uuid", "one instance or volume"),
    opt("ids", "list", "several"),
    opt("name", "string", "by name"),
    opt("keyword", "string", "text in the name"),
    opt(
        "startdate",
        "string",
        "yyyy-MM-dd HH:mm:ss (UTC): samples from then",
    ),
    opt(
        "enddate",
        "string",
        "yyyy-MM-dd HH:mm:ss (UTC): samples up to then",
    ),
    PAGING[0],
    PAGING[1],
    PAGING[2],
];

pub fn commands() -> Vec<Command> {
    vec![
        cmd!(
            "listVirtualMachinesUsageHistory",
            "Lists instances with their statistics over time.",
            false,
            All,
            HISTORY_PARAMS,
            HISTORY_FIELDS,
            vm_history
        ),
        cmd!(
            "listVolumesUsageHistory",
            "Lists volumes with their statistics over time.",
            false,
            All,
            HISTORY_PARAMS,
            HISTORY_FIELDS,
            volume_history
        ),
        cmd!(
            "listVirtualMachinesMetrics",
            "Lists instances with their latest metrics.",
            false,
            All,
            &[
                opt("id", "uuid", "instance ID"),
                opt("ids", "list", "instance IDs"),
                opt("name", "string", "name"),
                opt("keyword", "string", "text in name or display name"),
                opt("state", "string", "state, or Present"),
                opt("zoneid", "uuid", "zone"),
                opt("hostid", "uuid", "host, admins only"),
                opt("account", "string", "account, with domainid"),
                opt("domainid", "uuid", "domain"),
                opt("listall", "boolean", "everything the caller may see"),
                PAGING[0],
                PAGING[1],
                PAGING[2]
            ],
            &[
                f("id", "string", "the instance"),
                f("cpuused", "string", "CPU used, e.g. 12.50%"),
                f("cputotal", "string", "CPU of the instance, e.g. 2.0 Ghz"),
                f("memorytotal", "string", "memory, e.g. 0.50 GiB"),
                f(
                    "networkread",
                    "string",
                    "received in the latest interval, e.g. 0.01 MiB"
                ),
                f("networkwrite", "string", "sent in the latest interval"),
                f(
                    "diskread",
                    "string",
                    "read from disks in the latest interval"
                ),
                f(
                    "diskwrite",
                    "string",
                    "written to disks in the latest interval"
                ),
                f(
                    "diskiopstotal",
                    "long",
                    "disk operations in the latest interval"
                )
            ],
            vm_metrics
        ),
    ]
}

/// `startdate` / `enddate` as unix milliseconds.
fn date_param(ctx: &Ctx, name: &str) -> Result<Option<i64>, ApiError> {
    let Some(raw) = ctx.p.str(name) else {
        return Ok(None);
    };
    let parsed = chrono::NaiveDateTime::parse_from_str(raw, "%Y-%m-%d %H:%M:%S")
        .or_else(|_| {
            chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d")
                .map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default())
        })
        .map_err(|_| {
            ApiError::param(format!(
                "Invalid value for parameter {name}: {raw} (expected yyyy-MM-dd HH:mm:ss)"
            ))
        })?;
    Ok(Some(parsed.and_utc().timestamp_millis()))
}

fn range(ctx: &Ctx) -> Result<(i64, i64), ApiError> {
    let from = date_param(ctx, "startdate")?.unwrap_or(0);
    // An end date names a moment the range includes.
    let to = date_param(ctx, "enddate")?
        .map(|t| t + 1)
        .unwrap_or(i64::MAX);
    if from >= to {
        return Err(ApiError::param(
            "Invalid value for parameter enddate: it must be after startdate",
        ));
    }
    Ok((from, to))
}

fn mib(kib: u64) -> String {
    format!("{:.2} MiB", kib as f64 / 1024.0)
}

async fn vm_history(ctx: Ctx) -> Result<Reply, ApiError> {
    let (from, to) = range(&ctx)?;
    let (vms, total) = super::vm::query_vms(&ctx).await?;
    let mut items = Vec::with_capacity(vms.len());
    for v in &vms {
        let samples = ctx
            .svc
            .statistics
            .hub
            .vm_samples(v.id, from, to)
            .await
            .map_err(crate::service::ServiceError::from)?;
        let stats: Vec<Value> = samples
            .iter()
            .enumerate()
            .filter(|(_, s)| s.ts >= from)
            .map(|(i, s)| {
                let f = vm_figures(i.checked_sub(1).map(|p| &samples[p]), s);
                json!({
                    "timestamp": date(s.ts / 1000),
                    "cpuused": format!("{:.2}%", f.cpu_percent),
                    "diskioread": f.disk_io_read,
                    "diskiowrite": f.disk_io_write,
                    "diskiopstotal": f.disk_io_read + f.disk_io_write,
                    "diskkbsread": f.disk_kbs_read,
                    "diskkbswrite": f.disk_kbs_write,
                    "memorykbs": f.memory_kbs,
                    "memoryintfreekbs": f.memory_free_kbs,
                    "memorytargetkbs": f.memory_target_kbs,
                    "networkkbsread": f.network_kbs_read,
                    "networkkbswrite": f.network_kbs_write,
                    "networkread": mib(f.network_kbs_read),
                    "networkwrite": mib(f.network_kbs_write),
                })
            })
            .collect();
        items.push(
            Obj::new()
                .s("id", &v.uuid)
                .s("name", &v.name)
                .s("displayname", &v.display_name)
                .v("stats", Value::Array(stats))
                .build(),
        );
    }
    Ok(Reply::List("virtualmachine", items, total))
}

async fn volume_history(ctx: Ctx) -> Result<Reply, ApiError> {
    let (from, to) = range(&ctx)?;
    let (vols, total) = super::volumes::query_volumes(&ctx).await?;
    let mut items = Vec::with_capacity(vols.len());
    for v in &vols {
        let samples = ctx
            .svc
            .statistics
            .hub
            .volume_samples(v.id, from, to)
            .await
            .map_err(crate::service::ServiceError::from)?;
        let stats: Vec<Value> = samples
            .iter()
            .enumerate()
            .filter(|(_, s)| s.ts >= from)
            .map(|(i, s)| {
                let f = volume_figures(i.checked_sub(1).map(|p| &samples[p]), s);
                json!({
                    "timestamp": date(s.ts / 1000),
                    "diskioread": f.io_read,
                    "diskiowrite": f.io_write,
                    "diskiopstotal": f.io_read + f.io_write,
                    "diskkbsread": f.kbs_read,
                    "diskkbswrite": f.kbs_write,
                    "physicalsize": f.physical_size,
                })
            })
            .collect();
        items.push(
            Obj::new()
                .s("id", &v.uuid)
                .s("name", &v.name)
                .v("stats", Value::Array(stats))
                .build(),
        );
    }
    Ok(Reply::List("volume", items, total))
}

async fn vm_metrics(ctx: Ctx) -> Result<Reply, ApiError> {
    let (vms, total) = super::vm::query_vms(&ctx).await?;
    let mut l = Lookup::new(&ctx.svc);
    l.prefetch_nics(&vms.iter().map(|v| v.id).collect::<Vec<_>>())
        .await?;
    let mut items = Vec::with_capacity(vms.len());
    for v in &vms {
        let mut item = views::vm(&mut l, &ctx.caller, v, None).await?;
        let f = ctx.svc.statistics.hub.vm_latest(v.id);
        let extra = Obj::new()
            .s(
                "cputotal",
                // CloudStack's formats: one decimal here, GiB and MiB.
                format!("{:.1} Ghz", (v.cpu_number * v.cpu_speed) as f64 / 1000.0),
            )
            .s(
                "memorytotal",
                format!("{:.2} GiB", v.memory as f64 / 1024.0),
            )
            .when_some(f, |o, f| {
                let mb = |kib: u64| format!("{:.2} MiB", kib as f64 / 1024.0);
                o.s("cpuused", format!("{:.2}%", f.cpu_percent))
                    .s("networkread", mb(f.network_kbs_read))
                    .s("networkwrite", mb(f.network_kbs_write))
                    .s("diskread", mb(f.disk_kbs_read))
                    .s("diskwrite", mb(f.disk_kbs_write))
                    .v("diskiopstotal", f.disk_io_read + f.disk_io_write)
            })
            .build();
        if let (Some(obj), Value::Object(add)) = (item.as_object_mut(), extra) {
            obj.extend(add);
        }
        items.push(item);
    }
    Ok(Reply::List("virtualmachine", items, total))
}
