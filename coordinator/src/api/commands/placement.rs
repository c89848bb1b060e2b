//! Admin tools over the placement engine: CloudStack's findHostsForMigration,
//! a deployment dry run that explains every host, and the HA safety margin.

use super::*;
use crate::api::registry::{f, opt, req, Field, PAGING};
use crate::api::render::{Obj, Reply};
use crate::cmd;
use crate::placement::Outcome;
use crate::service::migration::MigrateRequest;
use crate::service::storage_motion::MigrateWithVolumes;
use crate::service::vm::Pin;
use serde_json::json;

const HOST_FIELDS: &[Field] = &[
    f("id", "string", "host ID"),
    f("name", "string", "host name"),
    f(
        "suitableformigration",
        "boolean",
        "the instance fits on the host",
    ),
    f(
        "requiresStorageMotion",
        "boolean",
        "its volumes must move too",
    ),
];
const POOL_FIELDS: &[Field] = &[
    f("id", "string", "storage pool ID"),
    f("name", "string", "storage pool name"),
    f("scope", "string", "HOST or CLUSTER"),
    f("suitableformigration", "boolean", "the volume fits"),
];
const PLAN_FIELDS: &[Field] = &[
    f("id", "string", "host ID"),
    f("name", "string", "host name"),
    f("eligible", "boolean", "the host passes every check"),
    f(
        "rank",
        "integer",
        "order in which eligible hosts are tried (0 = chosen)",
    ),
    f("priority", "integer", "non-strict affinity priority"),
    f("reasons", "list", "why the host was rejected"),
];
const HA_FIELDS: &[Field] = &[
    f("clusterid", "string", "cluster ID"),
    f("hosts", "integer", "hosts in the cluster"),
    f("instances", "integer", "instances running there"),
    f("safeinstances", "integer", "(N-1) x per-host limit"),
    f("headroom", "integer", "safeinstances - instances"),
];

pub fn commands() -> Vec<Command> {
    vec![
        cmd!(
            "findHostsForMigration",
            "Lists the hosts a running instance could move to, and whether each fits.",
            false,
            RootAdmin,
            &[
                req("id", "uuid", "the instance"),
                PAGING[0],
                PAGING[1],
                PAGING[2]
            ],
            HOST_FIELDS,
            find_hosts_for_migration
        ),
        cmd!(
            "migrateVirtualMachine",
            "Live-migrates a running instance to another host of its cluster (placement chooses one unless hostid names it).",
            true,
            RootAdmin,
            &[
                req("virtualmachineid", "uuid", "the instance"),
                opt("hostid", "uuid", "destination host; placement chooses when absent"),
                opt("autoselect", "boolean", "let placement choose the destination (the default without hostid)"),
                opt("storageid", "uuid", "destination storage pool for a stopped instance's volumes")
            ],
            crate::api::commands::vm::VM_FIELDS,
            migrate_vm
        ),
        cmd!(
            "migrateVirtualMachineWithVolume",
            "Live-migrates a running instance to a host together with its volumes' files, each to a pool that host can use (copy-storage-all).",
            true,
            RootAdmin,
            &[
                req("virtualmachineid", "uuid", "the instance"),
                req("hostid", "uuid", "destination host"),
                opt("migrateto", "map", "volume and pool pairs: migrateto[i].volume, migrateto[i].pool")
            ],
            crate::api::commands::vm::VM_FIELDS,
            migrate_with_volumes
        ),
        cmd!(
            "findStoragePoolsForMigration",
            "Lists the storage pools a volume could move to, and whether each fits.",
            false,
            RootAdmin,
            &[
                req("id", "uuid", "the volume"),
                PAGING[0],
                PAGING[1],
                PAGING[2]
            ],
            POOL_FIELDS,
            pools_for_migration
        ),
        cmd!(
            "listDeploymentPlan",
            "Dry run of placement for an instance: every host of its zone with its rank or every reason it is rejected.",
            false,
            RootAdmin,
            &[
                req("virtualmachineid", "uuid", "the instance, as it would be started now"),
                opt("hostid", "uuid", "destination host to test"),
                opt("podid", "uuid", "destination pod to test"),
                opt("clusterid", "uuid", "destination cluster to test")
            ],
            PLAN_FIELDS,
            deployment_plan
        ),
        cmd!(
            "listClusterHaCapacity",
            "Instances per cluster against the HA-safe figure (N-1) x per-host limit.",
            false,
            RootAdmin,
            &[
                req("zoneid", "uuid", "zone"),
                opt("perhostlimit", "integer", "instances per host (default vm.max.guests.per.host)")
            ],
            HA_FIELDS,
            ha_capacity
        ),
    ]
}

async fn host_names(
    ctx: &Ctx,
    ids: &[i64],
) -> Result<std::collections::HashMap<i64, Host>, ApiError> {
    let mut m = std::collections::HashMap::new();
    for id in ids {
        if let Some(h) = ctx.svc.load_cached::<Host>(*id).await? {
            m.insert(*id, h);
        }
    }
    Ok(m)
}

async fn find_hosts_for_migration(ctx: Ctx) -> Result<Reply, ApiError> {
    let (_, candidates) = ctx
        .svc
        .migration_candidates(&ctx.caller, ctx.p.required("id")?)
        .await?;
    let items: Vec<_> = candidates
        .iter()
        .map(|c| {
            let h = &c.host;
            Obj::new()
                .s("id", &h.uuid)
                .s("name", &h.name)
                .s("hypervisor", &h.hypervisor)
                .s("state", &h.state)
                .s("resourcestate", &h.resource_state)
                .s("ipaddress", &h.ip_address)
                .v("cpunumber", h.cpu_number)
                .v("cpuspeed", h.cpu_speed)
                .v("memorytotal", h.memory_total)
                .v("suitableformigration", c.suitable)
                .v("requiresStorageMotion", c.requires_storage_motion)
                .build()
        })
        .collect();
    let n = items.len() as u64;
    Ok(Reply::List("host", items, n))
}

async fn migrate_vm(ctx: Ctx) -> Result<Reply, ApiError> {
    if let Some(pool) = ctx.p.str("storageid") {
        if ctx.p.str("hostid").is_some() {
            return Err(ApiError::param(
                "Invalid parameter storageid: give hostid (a running instance) or storageid (a stopped one), not both",
            ));
        }
        let job = ctx
            .svc
            .migrate_stopped_vm_storage(&ctx.caller, ctx.p.required("virtualmachineid")?, pool)
            .await?;
        return Ok(Reply::Async { job, id: None });
    }
    let req = MigrateRequest {
        vm_uuid: ctx.p.required("virtualmachineid")?.to_string(),
        host_uuid: ctx.p.string("hostid"),
    };
    let job = ctx.svc.migrate_vm(&ctx.caller, req).await?;
    Ok(Reply::Async { job, id: None })
}

async fn migrate_with_volumes(ctx: Ctx) -> Result<Reply, ApiError> {
    let mut mapping = Vec::new();
    for e in ctx.p.map_entries("migrateto") {
        let get = |k: &str| {
            e.iter()
                .find(|(ek, _)| ek.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.clone())
        };
        match (get("volume"), get("pool")) {
            (Some(v), Some(p)) => mapping.push((v, p)),
            _ => {
                return Err(ApiError::param(
                    "Invalid parameter migrateto: each entry needs volume and pool",
                ))
            }
        }
    }
    let req = MigrateWithVolumes {
        vm_uuid: ctx.p.required("virtualmachineid")?.to_string(),
        host_uuid: ctx.p.required("hostid")?.to_string(),
        mapping,
    };
    let job = ctx.svc.migrate_vm_with_volumes(&ctx.caller, req).await?;
    Ok(Reply::Async { job, id: None })
}

async fn pools_for_migration(ctx: Ctx) -> Result<Reply, ApiError> {
    let pools = ctx
        .svc
        .storage_pools_for_migration(&ctx.caller, ctx.p.required("id")?)
        .await?;
    let mut items = Vec::new();
    for c in &pools {
        let mut v = crate::api::views::storage_pool(&ctx.svc, &c.pool).await?;
        if let Some(o) = v.as_object_mut() {
            o.insert("suitableformigration".into(), c.suitable.into());
            if let Some(r) = &c.reason {
                o.insert("reason".into(), r.clone().into());
            }
        }
        items.push(v);
    }
    let n = items.len() as u64;
    Ok(Reply::List("storagepool", items, n))
}

async fn deployment_plan(ctx: Ctx) -> Result<Reply, ApiError> {
    let vm: Vm = ctx
        .svc
        .owned(
            &ctx.caller,
            "virtualmachineid",
            ctx.p.required("virtualmachineid")?,
        )
        .await?;
    let pin = Pin {
        host_id: opt_ref::<Host>(&ctx, "hostid").await?.map(|h| h.id),
        pod_id: opt_ref::<Pod>(&ctx, "podid").await?.map(|p| p.id),
        cluster_id: opt_ref::<Cluster>(&ctx, "clusterid").await?.map(|c| c.id),
    };
    let verdicts = ctx.svc.placement_dry_run(&vm, &pin).await?;
    let ids: Vec<i64> = verdicts.iter().map(|v| v.host_id).collect();
    let hosts = host_names(&ctx, &ids).await?;
    let mut items = Vec::new();
    for v in &verdicts {
        let Some(h) = hosts.get(&v.host_id) else {
            continue;
        };
        let o = Obj::new().s("id", &h.uuid).s("name", &h.name);
        items.push(match &v.outcome {
            Outcome::Eligible { rank, priority } => o
                .v("eligible", true)
                .v("rank", *rank)
                .v("priority", *priority)
                .v("reasons", json!([]))
                .build(),
            Outcome::Rejected(reasons) => o
                .v("eligible", false)
                .v(
                    "reasons",
                    json!(reasons.iter().map(|r| r.to_string()).collect::<Vec<_>>()),
                )
                .build(),
        });
    }
    let n = items.len() as u64;
    Ok(Reply::List("host", items, n))
}

async fn ha_capacity(ctx: Ctx) -> Result<Reply, ApiError> {
    let zone: Zone = ctx.svc.by_uuid("zoneid", ctx.p.required("zoneid")?).await?;
    let limit = match ctx.p.i64("perhostlimit")? {
        Some(l) if l < 1 => {
            return Err(ApiError::param(
                "Invalid value for parameter perhostlimit: it must be 1 or more",
            ))
        }
        Some(l) => l as usize,
        None => ctx.svc.setting_i64("vm.max.guests.per.host").max(1) as usize,
    };
    let snap = ctx.svc.placement_snapshot(zone.id).await?;
    let mut items = Vec::new();
    for r in crate::placement::ha_report(&snap, limit) {
        let c: Option<Cluster> = ctx.svc.load_cached(r.cluster_id).await?;
        items.push(
            Obj::new()
                .os("clusterid", c.as_ref().map(|c| c.uuid.clone()))
                .os("clustername", c.map(|c| c.name))
                .v("hosts", r.hosts)
                .v("instances", r.instances)
                .v("perhostlimit", r.per_host_limit)
                .v("safeinstances", r.safe_instances)
                .v("headroom", r.headroom)
                .v("overlimit", r.over_limit())
                .build(),
        );
    }
    let n = items.len() as u64;
    Ok(Reply::List("clusterhacapacity", items, n))
}
