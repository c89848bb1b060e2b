//! Zones, pods, clusters, hosts, storage pools and guest networks.

use super::*;
use crate::api::registry::{f, opt, req, Field, PAGING};
use crate::api::render::{date, Obj, Reply};
use crate::cmd;
use crate::store::{Col, Query, Tx};
use serde_json::json;

const INFRA_FIELDS: &[Field] = &[
    f("id", "string", "ID"),
    f("name", "string", "name"),
    f("allocationstate", "string", "Enabled or Disabled"),
    f("zoneid", "string", "zone"),
];
const HOST_FIELDS: &[Field] = &[
    f("id", "string", "host ID"),
    f("name", "string", "name"),
    f("state", "string", "Up, Down, Disconnected"),
    f("resourcestate", "string", "Enabled, Disabled, Maintenance"),
    f("cpunumber", "integer", "CPUs"),
    f("memorytotal", "long", "memory bytes"),
    f("hosttags", "string", "host tags"),
];
const NET_FIELDS: &[Field] = &[
    f("id", "string", "network ID"),
    f("name", "string", "name"),
    f("cidr", "string", "CIDR"),
    f("type", "string", "guest type"),
];

pub fn commands() -> Vec<Command> {
    vec![
        cmd!(
            "listZones",
            "Lists zones.",
            false,
            All,
            &[
                opt("id", "uuid", "zone"),
                opt("name", "string", "name"),
                opt("available", "boolean", "zones the caller can use"),
                opt("networktype", "string", "Basic or Advanced"),
                PAGING[0],
                PAGING[1],
                PAGING[2]
            ],
            INFRA_FIELDS,
            list_zones
        ),
        cmd!(
            "listPods",
            "Lists pods.",
            false,
            RootAdmin,
            &[
                opt("id", "uuid", "pod"),
                opt("name", "string", "name"),
                opt("zoneid", "uuid", "zone"),
                PAGING[0],
                PAGING[1],
                PAGING[2]
            ],
            INFRA_FIELDS,
            list_pods
        ),
        cmd!(
            "listClusters",
            "Lists clusters.",
            false,
            RootAdmin,
            &[
                opt("id", "uuid", "cluster"),
                opt("name", "string", "name"),
                opt("zoneid", "uuid", "zone"),
                opt("podid", "uuid", "pod"),
                PAGING[0],
                PAGING[1],
                PAGING[2]
            ],
            INFRA_FIELDS,
            list_clusters
        ),
        cmd!(
            "updateCluster",
            "Enables or disables allocation in a cluster.",
            false,
            RootAdmin,
            &[
                req("id", "uuid", "cluster"),
                opt("allocationstate", "string", "Enabled or Disabled"),
                opt("clustername", "string", "new name")
            ],
            INFRA_FIELDS,
            update_cluster
        ),
        cmd!(
            "listHosts",
            "Lists hosts.",
            false,
            RootAdmin,
            &[
                opt("id", "uuid", "host"),
                opt("name", "string", "name"),
                opt("type", "string", "Routing"),
                opt("zoneid", "uuid", "zone"),
                opt("clusterid", "uuid", "cluster"),
                opt("podid", "uuid", "pod"),
                opt("state", "string", "state"),
                opt("resourcestate", "string", "resource state"),
                PAGING[0],
                PAGING[1],
                PAGING[2]
            ],
            HOST_FIELDS,
            list_hosts
        ),
        cmd!(
            "updateHost",
            "Updates a host's allocation state and host tags.",
            false,
            RootAdmin,
            &[
                req("id", "uuid", "host"),
                opt("allocationstate", "string", "Enable or Disable"),
                opt("hosttags", "list", "host tags, replacing the current ones")
            ],
            HOST_FIELDS,
            update_host
        ),
        cmd!(
            "listStoragePools",
            "Lists primary storage pools.",
            false,
            RootAdmin,
            &[
                opt("id", "uuid", "pool"),
                opt("zoneid", "uuid", "zone"),
                opt("clusterid", "uuid", "cluster"),
                opt("name", "string", "name"),
                PAGING[0],
                PAGING[1],
                PAGING[2]
            ],
            INFRA_FIELDS,
            list_pools
        ),
        cmd!(
            "listNetworks",
            "Lists guest networks.",
            false,
            All,
            &[
                opt("id", "uuid", "network"),
                opt("zoneid", "uuid", "zone"),
                opt("name", "string", "name"),
                opt("listall", "boolean", "all"),
                PAGING[0],
                PAGING[1],
                PAGING[2]
            ],
            NET_FIELDS,
            list_networks
        ),
        cmd!(
            "listNetworkOfferings",
            "Lists network offerings.",
            false,
            All,
            &[
                opt("id", "uuid", "offering"),
                opt("name", "string", "name"),
                PAGING[0],
                PAGING[1],
                PAGING[2]
            ],
            NET_FIELDS,
            list_net_offerings
        ),
    ]
}

fn filter_q(ctx: &Ctx, mut q: Query) -> Result<Query, ApiError> {
    if let Some(id) = ctx.p.str("id") {
        q = q.eq(Col::Uuid, id);
    }
    if let Some(n) = ctx.p.str("name") {
        q = q.and(Cond::EqNoCase(Col::Name, n.to_string()));
    }
    if let Some(k) = ctx.p.str("keyword") {
        q = q.and(Cond::Contains(vec![Col::Name], k.to_string()));
    }
    q.page = paging(ctx)?;
    Ok(q)
}

async fn zone_of(ctx: &Ctx, q: Query) -> Result<Query, ApiError> {
    Ok(match opt_ref::<Zone>(ctx, "zoneid").await? {
        Some(z) => q.eq(Col::Zone, z.id),
        None => q,
    })
}

async fn list_zones(ctx: Ctx) -> Result<Reply, ApiError> {
    let mut q = filter_q(&ctx, Query::new())?;
    if let Some(t) = ctx.p.str("networktype") {
        q = q.and(Cond::Contains(vec![Col::Name], String::new()));
        let _ = t;
    }
    let (zones, total) = ctx.svc.store.list::<Zone>(&q).await?;
    let items = zones
        .iter()
        .filter(|z| z.removed.is_none())
        .filter(|z| {
            ctx.p
                .str("networktype")
                .map(|t| t.eq_ignore_ascii_case(&z.network_type))
                .unwrap_or(true)
        })
        .map(|z| {
            Obj::new()
                .s("id", &z.uuid)
                .s("name", &z.name)
                .os("description", z.description.clone())
                .s("networktype", &z.network_type)
                .s("allocationstate", &z.allocation_state)
                .v("securitygroupsenabled", z.security_groups_enabled)
                .v("localstorageenabled", z.local_storage_enabled)
                .os("dns1", z.dns1.clone())
                .os("internaldns1", z.internal_dns1.clone())
                .s("guestcidraddress", "10.1.0.0/16")
                .v("tags", json!([]))
                .s("type", "Core")
                .build()
        })
        .collect::<Vec<_>>();
    let total = if ctx.p.has("networktype") {
        items.len() as u64
    } else {
        total
    };
    Ok(Reply::List("zone", items, total))
}

async fn list_pods(ctx: Ctx) -> Result<Reply, ApiError> {
    let q = zone_of(&ctx, filter_q(&ctx, Query::new())?).await?;
    let (pods, total) = ctx.svc.store.list::<Pod>(&q).await?;
    let mut items = Vec::new();
    for p in &pods {
        let z: Option<Zone> = ctx.svc.store.load(p.zone_id).await?;
        items.push(
            Obj::new()
                .s("id", &p.uuid)
                .s("name", &p.name)
                .os("zoneid", z.as_ref().map(|z| z.uuid.clone()))
                .os("zonename", z.map(|z| z.name))
                .s("gateway", &p.gateway)
                .s("netmask", &p.netmask)
                .s("allocationstate", &p.allocation_state)
                .build(),
        );
    }
    Ok(Reply::List("pod", items, total))
}

async fn cluster_json(ctx: &Ctx, c: &Cluster) -> Result<serde_json::Value, ApiError> {
    let z: Option<Zone> = ctx.svc.store.load(c.zone_id).await?;
    let p: Option<Pod> = ctx.svc.store.load(c.pod_id).await?;
    Ok(Obj::new()
        .s("id", &c.uuid)
        .s("name", &c.name)
        .os("zoneid", z.as_ref().map(|z| z.uuid.clone()))
        .os("zonename", z.map(|z| z.name))
        .os("podid", p.as_ref().map(|p| p.uuid.clone()))
        .os("podname", p.map(|p| p.name))
        .s("hypervisortype", &c.hypervisor)
        .s("clustertype", "CloudManaged")
        .s("allocationstate", &c.allocation_state)
        .s("managedstate", &c.managed_state)
        .s(
            "cpuovercommitratio",
            ctx.svc
                .setting("cpu.overprovisioning.factor", &[("cluster", c.id)]),
        )
        .s(
            "memoryovercommitratio",
            ctx.svc
                .setting("mem.overprovisioning.factor", &[("cluster", c.id)]),
        )
        .build())
}

async fn list_clusters(ctx: Ctx) -> Result<Reply, ApiError> {
    let mut q = zone_of(&ctx, filter_q(&ctx, Query::new())?).await?;
    if let Some(p) = opt_ref::<Pod>(&ctx, "podid").await? {
        q = q.eq(Col::Parent, p.id);
    }
    let (cs, total) = ctx.svc.store.list::<Cluster>(&q).await?;
    let mut items = Vec::new();
    for c in &cs {
        items.push(cluster_json(&ctx, c).await?);
    }
    Ok(Reply::List("cluster", items, total))
}

fn enabled_state(param: &str, v: &str) -> Result<String, ApiError> {
    match v.to_ascii_lowercase().as_str() {
        "enabled" | "enable" => Ok("Enabled".into()),
        "disabled" | "disable" => Ok("Disabled".into()),
        _ => Err(ApiError::param(format!(
            "Invalid value for parameter {param}: {v}; use Enabled or Disabled"
        ))),
    }
}

async fn update_cluster(ctx: Ctx) -> Result<Reply, ApiError> {
    let mut c: Cluster = ctx.svc.by_uuid("id", ctx.p.required("id")?).await?;
    if let Some(s) = ctx.p.str("allocationstate") {
        c.allocation_state = enabled_state("allocationstate", s)?;
    }
    if let Some(n) = ctx.p.str("clustername") {
        c.name = n.to_string();
    }
    let mut tx = Tx::new();
    tx.update(&mut c);
    ctx.svc.store.commit(tx.ops).await?;
    Ok(Reply::Object("cluster", cluster_json(&ctx, &c).await?))
}

async fn host_json(ctx: &Ctx, h: &Host) -> Result<serde_json::Value, ApiError> {
    let z: Option<Zone> = ctx.svc.store.load(h.zone_id).await?;
    let p: Option<Pod> = ctx.svc.store.load(h.pod_id).await?;
    let c: Option<Cluster> = ctx.svc.store.load(h.cluster_id).await?;
    let states: Vec<crate::store::Val> = ["Starting", "Running", "Stopping", "Migrating"]
        .iter()
        .map(|s| (*s).into())
        .collect();
    let vms: Vec<Vm> = ctx
        .svc
        .store
        .all(
            Query::new()
                .eq(Col::Host, h.id)
                .and(Cond::In(Col::State, states)),
        )
        .await?;
    let mem: i64 = vms.iter().map(|v| v.memory * 1024 * 1024).sum();
    let cpu: i64 = vms.iter().map(|v| v.cpu_number * v.cpu_speed).sum();
    let total = (h.cpu_number * h.cpu_speed).max(1);
    Ok(Obj::new()
        .s("id", &h.uuid)
        .s("name", &h.name)
        .s("type", "Routing")
        .s("state", &h.state)
        .s("resourcestate", &h.resource_state)
        .s("ipaddress", &h.ip_address)
        .s("hypervisor", &h.hypervisor)
        .os("zoneid", z.as_ref().map(|z| z.uuid.clone()))
        .os("zonename", z.map(|z| z.name))
        .os("podid", p.as_ref().map(|p| p.uuid.clone()))
        .os("podname", p.map(|p| p.name))
        .os("clusterid", c.as_ref().map(|c| c.uuid.clone()))
        .os("clustername", c.map(|c| c.name))
        .v("cpunumber", h.cpu_number)
        .v("cpuspeed", h.cpu_speed)
        .v("memorytotal", h.memory_total)
        .v("memoryused", mem)
        .v("memoryallocated", mem)
        .s(
            "cpuallocated",
            format!("{:.2}%", cpu as f64 * 100.0 / total as f64),
        )
        .v("cpuallocatedvalue", cpu)
        .s("hosttags", h.host_tags.join(","))
        .ov("lastpinged", h.last_ping.map(date))
        .s("created", date(h.created))
        .v("details", json!({"secured": "false"}))
        .v("gputotal", 0)
        .v("gpuused", 0)
        .v("islocalstorageactive", false)
        .build())
}

async fn list_hosts(ctx: Ctx) -> Result<Reply, ApiError> {
    let mut q = zone_of(
        &ctx,
        filter_q(
            &ctx,
            Query::new().and(Cond::Ne(Col::State, "Removed".into())),
        )?,
    )
    .await?;
    if let Some(c) = opt_ref::<Cluster>(&ctx, "clusterid").await? {
        q = q.eq(Col::Parent, c.id);
    }
    if let Some(p) = opt_ref::<Pod>(&ctx, "podid").await? {
        q = q.eq(Col::Ref, p.id);
    }
    if let Some(s) = ctx.p.str("state") {
        q = q.and(Cond::EqNoCase(Col::State, s.to_string()));
    }
    if let Some(s) = ctx.p.str("resourcestate") {
        q = q.and(Cond::EqNoCase(Col::K1, s.to_string()));
    }
    if let Some(t) = ctx.p.str("type") {
        if !t.eq_ignore_ascii_case("routing") {
            return Ok(Reply::List("host", vec![], 0));
        }
    }
    let (hs, total) = ctx.svc.store.list::<Host>(&q).await?;
    let mut items = Vec::new();
    for h in &hs {
        items.push(host_json(&ctx, h).await?);
    }
    Ok(Reply::List("host", items, total))
}

async fn update_host(ctx: Ctx) -> Result<Reply, ApiError> {
    let mut h: Host = ctx.svc.by_uuid("id", ctx.p.required("id")?).await?;
    if let Some(s) = ctx.p.str("allocationstate") {
        h.resource_state = enabled_state("allocationstate", s)?;
    }
    if ctx.p.raw("hosttags").is_some() {
        h.host_tags = ctx.p.list("hosttags");
    }
    let mut tx = Tx::new();
    tx.update(&mut h);
    ctx.svc.store.commit(tx.ops).await?;
    Ok(Reply::Object("host", host_json(&ctx, &h).await?))
}

async fn list_pools(ctx: Ctx) -> Result<Reply, ApiError> {
    let mut q = zone_of(&ctx, filter_q(&ctx, Query::new())?).await?;
    if let Some(c) = opt_ref::<Cluster>(&ctx, "clusterid").await? {
        q = q.eq(Col::Parent, c.id);
    }
    let (ps, total) = ctx.svc.store.list::<StoragePool>(&q).await?;
    let mut items = Vec::new();
    for p in &ps {
        let z: Option<Zone> = ctx.svc.store.load(p.zone_id).await?;
        let vols: Vec<Volume> = ctx
            .svc
            .store
            .all(
                Query::new()
                    .eq(Col::Zone, p.zone_id)
                    .and(Cond::NotIn(Col::State, vec!["Expunged".into()])),
            )
            .await?;
        let alloc: i64 = vols
            .iter()
            .filter(|v| v.pool_id == Some(p.id) || v.pool_id.is_none())
            .map(|v| v.size)
            .sum();
        items.push(
            Obj::new()
                .s("id", &p.uuid)
                .s("name", &p.name)
                .os("zoneid", z.as_ref().map(|z| z.uuid.clone()))
                .os("zonename", z.map(|z| z.name))
                .s("path", &p.path)
                .s("type", &p.pool_type)
                .s("scope", &p.scope)
                .s("state", &p.state)
                .v("disksizetotal", p.capacity_bytes)
                .v("disksizeallocated", alloc)
                .s("created", date(p.created))
                .build(),
        );
    }
    Ok(Reply::List("storagepool", items, total))
}

async fn list_networks(ctx: Ctx) -> Result<Reply, ApiError> {
    let q = zone_of(
        &ctx,
        filter_q(
            &ctx,
            Query::new().and(Cond::Ne(Col::State, "Removed".into())),
        )?,
    )
    .await?;
    let (ns, total) = ctx.svc.store.list::<Network>(&q).await?;
    let mut items = Vec::new();
    for n in &ns {
        let z: Option<Zone> = ctx.svc.store.load(n.zone_id).await?;
        let o: Option<NetworkOffering> = ctx.svc.store.load(n.network_offering_id).await?;
        items.push(
            Obj::new()
                .s("id", &n.uuid)
                .s("name", &n.name)
                .s("displaytext", &n.display_text)
                .os("zoneid", z.as_ref().map(|z| z.uuid.clone()))
                .os("zonename", z.map(|z| z.name))
                .s("cidr", &n.cidr)
                .s("gateway", &n.gateway)
                .s("netmask", &n.netmask)
                .s("state", &n.state)
                .s("type", &n.guest_type)
                .s("traffictype", "Guest")
                .s("acltype", &n.acl_type)
                .v("isdefault", n.is_zone_default)
                .os("networkofferingid", o.as_ref().map(|o| o.uuid.clone()))
                .os("networkofferingname", o.map(|o| o.name))
                .v("service", json!([]))
                .v("tags", json!([]))
                .v("canusefordeploy", true)
                .build(),
        );
    }
    Ok(Reply::List("network", items, total))
}

async fn list_net_offerings(ctx: Ctx) -> Result<Reply, ApiError> {
    let q = filter_q(
        &ctx,
        Query::new().and(Cond::Ne(Col::State, "Removed".into())),
    )?;
    let (os, total) = ctx.svc.store.list::<NetworkOffering>(&q).await?;
    let items = os
        .iter()
        .map(|o| {
            Obj::new()
                .s("id", &o.uuid)
                .s("name", &o.name)
                .s("displaytext", &o.display_text)
                .s("guestiptype", &o.guest_ip_type)
                .s("traffictype", &o.traffic_type)
                .s("state", &o.state)
                .v("isdefault", o.is_default)
                .v("specifyvlan", o.specify_vlan)
                .v("specifyipranges", o.specify_ip_ranges)
                .s("availability", &o.availability)
                .s("created", date(o.created))
                .v("service", json!([]))
                .build()
        })
        .collect();
    Ok(Reply::List("networkoffering", items, total))
}
