//! Zones, pods, clusters, hosts, storage pools and guest networks.

use super::*;
use crate::api::registry::{f, opt, req, Field, PAGING};
use crate::api::render::{date, Obj, Reply};
use crate::cmd;
use crate::service::infra::{hypervisor_name, ClusterArgs, NetworkRequest, PodArgs, ZoneArgs};
use crate::service::inventory::{
    ClusterUpdate, HostUpdate, InfraFilter, NetworkOfferingUpdate, NewNetworkOffering,
};
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
                opt("showicon", "boolean", "include each zone's icon"),
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
                opt("hosttags", "list", "host tags, replacing the current ones"),
                opt(
                    "oscategoryid",
                    "uuid",
                    "OS category whose guests the host takes first; empty to clear"
                )
            ],
            HOST_FIELDS,
            update_host
        ),
        cmd!(
            "prepareHostForMaintenance",
            "Moves every running instance off a host by live migration, then puts it into Maintenance (ErrorInMaintenance, with the reasons, when some cannot move).",
            true,
            RootAdmin,
            &[req("id", "uuid", "host")],
            HOST_FIELDS,
            prepare_maintenance
        ),
        cmd!(
            "cancelHostMaintenance",
            "Returns a host in or entering maintenance to service.",
            true,
            RootAdmin,
            &[req("id", "uuid", "host")],
            HOST_FIELDS,
            cancel_maintenance
        ),
        cmd!(
            "deleteHost",
            "Removes a host; its certificate stops working at once.",
            false,
            RootAdmin,
            &[
                req("id", "uuid", "host"),
                opt(
                    "forced",
                    "boolean",
                    "remove even if the host is Up and not in maintenance"
                ),
                opt(
                    "forcedestroylocalstorage",
                    "boolean",
                    "accepted for compatibility"
                )
            ],
            &[f("success", "boolean", "true")],
            delete_host
        ),
        cmd!(
            "provisionCertificate",
            "Issues a host a new certificate over its live connection.",
            true,
            RootAdmin,
            &[
                req("hostid", "uuid", "host"),
                opt(
                    "reconnect",
                    "boolean",
                    "accepted for compatibility; the connection stays up"
                ),
                opt("provider", "string", "accepted for compatibility")
            ],
            &[f("success", "boolean", "true")],
            provision_certificate
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
        cmd!(
            "createZone",
            "Creates a zone.",
            false,
            RootAdmin,
            &[
                req("name", "string", "zone name"),
                req("networktype", "string", "Basic or Advanced"),
                opt("dns1", "string", "first DNS server for guests"),
                opt("internaldns1", "string", "first DNS server for system use"),
                opt("description", "string", "description"),
                opt("securitygroupenabled", "boolean", "security groups on"),
                opt("localstorageenabled", "boolean", "local storage on"),
                opt("allocationstate", "string", "Enabled or Disabled")
            ],
            INFRA_FIELDS,
            create_zone
        ),
        cmd!(
            "createPod",
            "Creates a pod in a zone.",
            false,
            RootAdmin,
            &[
                req("zoneid", "uuid", "zone"),
                req("name", "string", "pod name"),
                req("gateway", "string", "gateway of the pod's management range"),
                req("netmask", "string", "netmask of that range"),
                opt("startip", "string", "first address of the range"),
                opt("endip", "string", "last address of the range"),
                opt("allocationstate", "string", "Enabled or Disabled")
            ],
            INFRA_FIELDS,
            create_pod
        ),
        cmd!(
            "addCluster",
            "Adds a cluster to a pod, with its primary storage.",
            false,
            RootAdmin,
            &[
                req("clustername", "string", "cluster name"),
                req("zoneid", "uuid", "zone"),
                req("podid", "uuid", "pod"),
                req(
                    "hypervisor",
                    "string",
                    "KVM, VMware, XenServer or Simulator"
                ),
                req("clustertype", "string", "CloudManaged or ExternalManaged"),
                opt("allocationstate", "string", "Enabled or Disabled")
            ],
            INFRA_FIELDS,
            add_cluster
        ),
        cmd!(
            "createNetworkOffering",
            "Creates a network offering; it starts Disabled unless enable=true.",
            false,
            RootAdmin,
            &[
                req("name", "string", "name"),
                opt("displaytext", "string", "description"),
                req("guestiptype", "string", "Shared, Isolated or L2"),
                req("traffictype", "string", "Guest"),
                opt("specifyvlan", "boolean", "networks name their VLAN"),
                opt("specifyipranges", "boolean", "networks name their IP range"),
                opt("availability", "string", "Optional or Required"),
                opt("supportedservices", "list", "services (recorded)"),
                opt(
                    "serviceproviderlist",
                    "map",
                    "service -> provider; UserData: ConfigDrive gives instances a config drive, VirtualRouter (default) the host's metadata service"
                ),
                opt("enable", "boolean", "create it Enabled")
            ],
            NET_FIELDS,
            create_net_offering
        ),
        cmd!(
            "updateNetworkOffering",
            "Updates a network offering.",
            false,
            RootAdmin,
            &[
                req("id", "uuid", "offering"),
                opt("name", "string", "name"),
                opt("displaytext", "string", "description"),
                opt("state", "string", "Enabled or Disabled"),
                opt("availability", "string", "Optional or Required")
            ],
            NET_FIELDS,
            update_net_offering
        ),
        cmd!(
            "deleteNetworkOffering",
            "Deletes a network offering no network uses.",
            false,
            RootAdmin,
            &[req("id", "uuid", "offering")],
            &[f("success", "boolean", "true")],
            delete_net_offering
        ),
        cmd!(
            "createNetwork",
            "Creates a guest network.",
            false,
            All,
            &[
                req("name", "string", "name"),
                opt("displaytext", "string", "description"),
                req("networkofferingid", "uuid", "network offering"),
                req("zoneid", "uuid", "zone"),
                opt("gateway", "string", "gateway"),
                opt("netmask", "string", "netmask"),
                opt("startip", "string", "first guest address"),
                opt("endip", "string", "last guest address"),
                opt("account", "string", "owner account"),
                opt("domainid", "uuid", "owner domain"),
                opt("acltype", "string", "Account or Domain")
            ],
            NET_FIELDS,
            create_network
        ),
        cmd!(
            "deleteNetwork",
            "Deletes a guest network no instance uses.",
            true,
            All,
            &[
                req("id", "uuid", "network"),
                opt("forced", "boolean", "accepted for compatibility")
            ],
            &[f("success", "boolean", "true")],
            delete_network
        ),
    ]
}

/// The filters the infrastructure lists share.
fn infra_filter(ctx: &Ctx) -> Result<InfraFilter, ApiError> {
    Ok(InfraFilter {
        id: ctx.p.string("id"),
        name: ctx.p.string("name"),
        keyword: ctx.p.string("keyword"),
        zone: ctx.p.string("zoneid"),
        pod: ctx.p.string("podid"),
        cluster: ctx.p.string("clusterid"),
        state: ctx.p.string("state"),
        resource_state: ctx.p.string("resourcestate"),
        page: paging(ctx)?,
    })
}

fn zone_json(z: &Zone) -> serde_json::Value {
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
}

pub(crate) async fn list_zones(ctx: Ctx) -> Result<Reply, ApiError> {
    let (zones, total) = ctx
        .svc
        .infrastructure
        .list_zones(&infra_filter(&ctx)?)
        .await?;
    let items = zones
        .iter()
        .filter(|z| z.removed.is_none())
        .filter(|z| {
            ctx.p
                .str("networktype")
                .map(|t| t.eq_ignore_ascii_case(&z.network_type))
                .unwrap_or(true)
        })
        .map(|z| (z.uuid.clone(), zone_json(z)))
        .collect::<Vec<_>>();
    let mut out = Vec::with_capacity(items.len());
    for (uuid, mut item) in items {
        if ctx.p.bool("showicon") == Some(true) {
            super::ui::add_icon(&ctx, &mut item, "Zone", &uuid).await?;
        }
        out.push(item);
    }
    let items = out;
    let total = if ctx.p.has("networktype") {
        items.len() as u64
    } else {
        total
    };
    Ok(Reply::List("zone", items, total))
}

async fn pod_json(ctx: &Ctx, p: &Pod) -> Result<serde_json::Value, ApiError> {
    let z: Option<Zone> = ctx.svc.load_cached(p.zone_id).await?;
    Ok(Obj::new()
        .s("id", &p.uuid)
        .s("name", &p.name)
        .os("zoneid", z.as_ref().map(|z| z.uuid.clone()))
        .os("zonename", z.map(|z| z.name))
        .s("gateway", &p.gateway)
        .s("netmask", &p.netmask)
        .v("startip", json!([p.start_ip.clone().unwrap_or_default()]))
        .v("endip", json!([p.end_ip.clone().unwrap_or_default()]))
        .s("allocationstate", &p.allocation_state)
        .build())
}

pub(crate) async fn list_pods(ctx: Ctx) -> Result<Reply, ApiError> {
    let (pods, total) = ctx
        .svc
        .infrastructure
        .list_pods(&infra_filter(&ctx)?)
        .await?;
    let mut items = Vec::new();
    for p in &pods {
        items.push(pod_json(&ctx, p).await?);
    }
    Ok(Reply::List("pod", items, total))
}

async fn cluster_json(ctx: &Ctx, c: &Cluster) -> Result<serde_json::Value, ApiError> {
    let z: Option<Zone> = ctx.svc.load_cached(c.zone_id).await?;
    let p: Option<Pod> = ctx.svc.load_cached(c.pod_id).await?;
    Ok(Obj::new()
        .s("id", &c.uuid)
        .s("name", &c.name)
        .os("zoneid", z.as_ref().map(|z| z.uuid.clone()))
        .os("zonename", z.map(|z| z.name))
        .os("podid", p.as_ref().map(|p| p.uuid.clone()))
        .os("podname", p.map(|p| p.name))
        .s("hypervisortype", &c.hypervisor)
        .s("clustertype", "CloudManaged")
        .s("arch", "x86_64")
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

pub(crate) async fn list_clusters(ctx: Ctx) -> Result<Reply, ApiError> {
    let (cs, total) = ctx
        .svc
        .infrastructure
        .list_clusters(&infra_filter(&ctx)?)
        .await?;
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
    let u = ClusterUpdate {
        allocation_state: ctx
            .p
            .str("allocationstate")
            .map(|s| enabled_state("allocationstate", s))
            .transpose()?,
        name: ctx.p.string("clustername"),
    };
    let c = ctx
        .svc
        .infrastructure
        .update_cluster(ctx.p.required("id")?, u)
        .await?;
    Ok(Reply::Object("cluster", cluster_json(&ctx, &c).await?))
}

async fn host_json(ctx: &Ctx, h: &Host) -> Result<serde_json::Value, ApiError> {
    crate::api::views::host(&ctx.svc, h).await
}

pub(crate) async fn list_hosts(ctx: Ctx) -> Result<Reply, ApiError> {
    if let Some(t) = ctx.p.str("type") {
        if !t.eq_ignore_ascii_case("routing") {
            return Ok(Reply::List("host", vec![], 0));
        }
    }
    let (hs, total) = ctx
        .svc
        .infrastructure
        .list_hosts(&infra_filter(&ctx)?)
        .await?;
    let mut items = Vec::new();
    for h in &hs {
        items.push(host_json(&ctx, h).await?);
    }
    Ok(Reply::List("host", items, total))
}

async fn prepare_maintenance(ctx: Ctx) -> Result<Reply, ApiError> {
    let job = ctx
        .svc
        .prepare_host_maintenance(&ctx.caller, ctx.p.required("id")?)
        .await?;
    Ok(Reply::Async { job, id: None })
}

async fn cancel_maintenance(ctx: Ctx) -> Result<Reply, ApiError> {
    let job = ctx
        .svc
        .cancel_host_maintenance(&ctx.caller, ctx.p.required("id")?)
        .await?;
    Ok(Reply::Async { job, id: None })
}

async fn update_host(ctx: Ctx) -> Result<Reply, ApiError> {
    let u = HostUpdate {
        resource_state: ctx
            .p
            .str("allocationstate")
            .map(|s| enabled_state("allocationstate", s))
            .transpose()?,
        host_tags: ctx.p.raw("hosttags").map(|_| ctx.p.list("hosttags")),
        os_category: ctx
            .p
            .raw("oscategoryid")
            .map(|raw| (!raw.trim().is_empty()).then(|| raw.to_string())),
    };
    let h = ctx
        .svc
        .infrastructure
        .update_host(ctx.p.required("id")?, u)
        .await?;
    Ok(Reply::Object("host", host_json(&ctx, &h).await?))
}

pub(crate) async fn list_pools(ctx: Ctx) -> Result<Reply, ApiError> {
    let (ps, total) = ctx
        .svc
        .infrastructure
        .list_storage_pools(&infra_filter(&ctx)?)
        .await?;
    let mut items = Vec::new();
    for p in &ps {
        items.push(crate::api::views::storage_pool(&ctx.svc, p).await?);
    }
    Ok(Reply::List("storagepool", items, total))
}

async fn network_json(ctx: &Ctx, n: &Network) -> Result<serde_json::Value, ApiError> {
    let z: Option<Zone> = ctx.svc.load_cached(n.zone_id).await?;
    let o: Option<NetworkOffering> = ctx.svc.load_cached(n.network_offering_id).await?;
    let acct: Option<Account> = match n.account_id {
        Some(a) => ctx.svc.load_cached(a).await?,
        None => None,
    };
    let dom: Option<Domain> = ctx.svc.load_cached(n.domain_id).await?;
    Ok(Obj::new()
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
        .os("networkofferingname", o.as_ref().map(|o| o.name.clone()))
        .os("networkofferingdisplaytext", o.map(|o| o.display_text))
        .os("account", acct.map(|a| a.name))
        .os("domainid", dom.as_ref().map(|d| d.uuid.clone()))
        .os("domain", dom.map(|d| d.name))
        .v("service", json!([]))
        .v("tags", json!([]))
        .v("canusefordeploy", true)
        .build())
}

async fn list_networks(ctx: Ctx) -> Result<Reply, ApiError> {
    let (ns, total) = ctx
        .svc
        .infrastructure
        .list_networks(&ctx.caller, &infra_filter(&ctx)?)
        .await?;
    let mut items = Vec::new();
    for n in &ns {
        items.push(network_json(&ctx, n).await?);
    }
    Ok(Reply::List("network", items, total))
}

async fn list_net_offerings(ctx: Ctx) -> Result<Reply, ApiError> {
    let (os, total) = ctx
        .svc
        .infrastructure
        .list_network_offerings(&infra_filter(&ctx)?)
        .await?;
    let items = os.iter().map(net_offering_json).collect();
    Ok(Reply::List("networkoffering", items, total))
}

/// `serviceproviderlist[i].service` / `.provider`. Only the providers
/// Orrery has are accepted, so an offering never promises what no host does.
fn service_providers(ctx: &Ctx) -> Result<std::collections::BTreeMap<String, String>, ApiError> {
    const KNOWN: &[(&str, &[&str])] = &[
        ("UserData", &["VirtualRouter", "ConfigDrive"]),
        ("Dhcp", &["VirtualRouter"]),
        ("Dns", &["VirtualRouter"]),
        ("SourceNat", &["VirtualRouter"]),
    ];
    let mut out = std::collections::BTreeMap::new();
    for e in ctx.p.map_entries("serviceproviderlist") {
        let (Some(service), Some(provider)) = (e.get("service"), e.get("provider")) else {
            return Err(ApiError::param(
                "Invalid value for parameter serviceproviderlist: each entry needs service and provider",
            ));
        };
        let Some((name, providers)) = KNOWN.iter().find(|(n, _)| n.eq_ignore_ascii_case(service))
        else {
            return Err(ApiError::param(format!(
                "Invalid value for parameter serviceproviderlist: unsupported service {service}"
            )));
        };
        let Some(p) = providers.iter().find(|p| p.eq_ignore_ascii_case(provider)) else {
            return Err(ApiError::param(format!(
                "Invalid value for parameter serviceproviderlist: provider {provider} does not offer {name} (one of {})",
                providers.join(", ")
            )));
        };
        out.insert(name.to_string(), p.to_string());
    }
    Ok(out)
}

fn net_offering_json(o: &NetworkOffering) -> serde_json::Value {
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
        // Fixed for every offering Orrery has: no conserve-mode choice,
        // egress denied by default, nothing persistent or stretched.
        .v("conservemode", true)
        .v("egressdefaultpolicy", false)
        .v("ispersistent", false)
        .v("supportspublicaccess", false)
        .v("supportsstrechedl2subnet", false)
        .s("internetprotocol", "IPv4")
        .s("created", date(o.created))
        .v(
            "service",
            o.providers
                .iter()
                .map(|(name, p)| json!({"name": name, "provider": [{"name": p}]}))
                .collect::<Vec<_>>(),
        )
        .build()
}

fn alloc_state(ctx: &Ctx) -> Result<String, ApiError> {
    match ctx.p.str("allocationstate") {
        Some(v) => enabled_state("allocationstate", v),
        None => Ok("Enabled".into()),
    }
}

async fn create_zone(ctx: Ctx) -> Result<Reply, ApiError> {
    let z = ctx
        .svc
        .infrastructure
        .create_zone(ZoneArgs {
            name: ctx.p.required("name")?.to_string(),
            description: ctx.p.string("description"),
            network_type: ctx.p.required("networktype")?.to_string(),
            dns1: ctx.p.str("dns1").map(str::to_string),
            internal_dns1: ctx.p.str("internaldns1").map(str::to_string),
            security_groups: ctx.p.bool_or("securitygroupenabled", false),
            local_storage: ctx.p.bool_or("localstorageenabled", false),
            allocation_state: alloc_state(&ctx)?,
        })
        .await?;
    Ok(Reply::Object("zone", zone_json(&z)))
}

async fn create_pod(ctx: Ctx) -> Result<Reply, ApiError> {
    let zone: Zone = ctx.svc.by_uuid("zoneid", ctx.p.required("zoneid")?).await?;
    let p = ctx
        .svc
        .infrastructure
        .create_pod(PodArgs {
            zone_id: zone.id,
            name: ctx.p.required("name")?.to_string(),
            gateway: ctx.p.required("gateway")?.to_string(),
            netmask: ctx.p.required("netmask")?.to_string(),
            start_ip: ctx.p.string("startip"),
            end_ip: ctx.p.string("endip"),
            allocation_state: alloc_state(&ctx)?,
        })
        .await?;
    Ok(Reply::Object("pod", pod_json(&ctx, &p).await?))
}

async fn add_cluster(ctx: Ctx) -> Result<Reply, ApiError> {
    let zone: Zone = ctx.svc.by_uuid("zoneid", ctx.p.required("zoneid")?).await?;
    let pod: Pod = ctx.svc.by_uuid("podid", ctx.p.required("podid")?).await?;
    if pod.zone_id != zone.id {
        return Err(ApiError::param(format!(
            "Pod {} is not in zone {}",
            pod.uuid, zone.uuid
        )));
    }
    let hv = hypervisor_name("hypervisor", ctx.p.required("hypervisor")?)?;
    let ct = ctx.p.required("clustertype")?;
    if !["cloudmanaged", "externalmanaged"].contains(&ct.to_ascii_lowercase().as_str()) {
        return Err(ApiError::param(format!(
            "Invalid value for parameter clustertype: {ct}; use CloudManaged or ExternalManaged"
        )));
    }
    let c = ctx
        .svc
        .infrastructure
        .create_cluster(ClusterArgs {
            pod,
            name: ctx.p.required("clustername")?.to_string(),
            hypervisor: hv,
            allocation_state: alloc_state(&ctx)?,
        })
        .await?;
    // CloudStack answers addCluster with a list of the clusters it added.
    Ok(Reply::List(
        "cluster",
        vec![cluster_json(&ctx, &c).await?],
        1,
    ))
}

fn guest_ip_type(v: &str) -> Result<String, ApiError> {
    ["Shared", "Isolated", "L2"]
        .iter()
        .find(|t| t.eq_ignore_ascii_case(v))
        .map(|t| t.to_string())
        .ok_or_else(|| {
            ApiError::param(format!(
                "Invalid value for parameter guestiptype: {v}; use Shared, Isolated or L2"
            ))
        })
}

fn availability(v: &str) -> Result<String, ApiError> {
    ["Optional", "Required"]
        .iter()
        .find(|t| t.eq_ignore_ascii_case(v))
        .map(|t| t.to_string())
        .ok_or_else(|| {
            ApiError::param(format!(
                "Invalid value for parameter availability: {v}; use Optional or Required"
            ))
        })
}

async fn create_net_offering(ctx: Ctx) -> Result<Reply, ApiError> {
    let name = ctx.p.required("name")?.to_string();
    let guest = guest_ip_type(ctx.p.required("guestiptype")?)?;
    let traffic = ctx.p.required("traffictype")?;
    if !traffic.eq_ignore_ascii_case("guest") {
        return Err(ApiError::param(format!(
            "Invalid value for parameter traffictype: {traffic}; only Guest is supported"
        )));
    }
    let o = ctx
        .svc
        .infrastructure
        .create_network_offering(NewNetworkOffering {
            display_text: ctx.p.string("displaytext"),
            name,
            specify_vlan: ctx.p.bool_or("specifyvlan", false),
            specify_ip_ranges: ctx.p.bool("specifyipranges"),
            guest_ip_type: guest,
            enabled: ctx.p.bool_or("enable", false),
            availability: availability(ctx.p.str("availability").unwrap_or("Optional"))?,
            providers: service_providers(&ctx)?,
        })
        .await?;
    Ok(Reply::Object("networkoffering", net_offering_json(&o)))
}

async fn update_net_offering(ctx: Ctx) -> Result<Reply, ApiError> {
    let u = NetworkOfferingUpdate {
        name: ctx.p.string("name"),
        display_text: ctx.p.string("displaytext"),
        state: ctx
            .p
            .str("state")
            .map(|s| enabled_state("state", s))
            .transpose()?,
        availability: ctx.p.str("availability").map(availability).transpose()?,
    };
    let o = ctx
        .svc
        .infrastructure
        .update_network_offering(ctx.p.required("id")?, u)
        .await?;
    Ok(Reply::Object("networkoffering", net_offering_json(&o)))
}

async fn delete_net_offering(ctx: Ctx) -> Result<Reply, ApiError> {
    let o = ctx
        .svc
        .infrastructure
        .live_network_offering(ctx.p.required("id")?)
        .await?;
    ctx.svc.infrastructure.delete_network_offering(o).await?;
    Ok(Reply::Success(None))
}

async fn create_network(ctx: Ctx) -> Result<Reply, ApiError> {
    let owner = owner(&ctx).await?;
    let n = ctx
        .svc
        .infrastructure
        .create_network_for(
            &ctx.caller,
            NetworkRequest {
                zone: ctx.p.required("zoneid")?.to_string(),
                offering: ctx.p.required("networkofferingid")?.to_string(),
                owner,
                acl_type: ctx.p.string("acltype"),
                account_named: ctx.p.has("account"),
                name: ctx.p.required("name")?.to_string(),
                display_text: ctx.p.string("displaytext"),
                gateway: ctx.p.string("gateway"),
                netmask: ctx.p.string("netmask"),
                start_ip: ctx.p.string("startip"),
                end_ip: ctx.p.string("endip"),
            },
        )
        .await?;
    Ok(Reply::Object("network", network_json(&ctx, &n).await?))
}

async fn delete_network(ctx: Ctx) -> Result<Reply, ApiError> {
    let id = ctx.p.required("id")?;
    let n: Network = ctx.svc.by_uuid("id", id).await?;
    let path = ctx.svc.domain_path(n.domain_id).await?;
    let visible = n.removed.is_none()
        && match n.account_id {
            Some(a) => ctx.caller.can_access(a, &path),
            None => ctx.caller.is_admin() && ctx.caller.can_access(-1, &path),
        };
    if !visible {
        return Err(ApiError::unknown_id("id", id));
    }
    ctx.svc.infrastructure.delete_network(n.clone()).await?;
    let job = ctx
        .svc
        .done_job(&ctx.caller, "deleteNetwork", "Network", &n.uuid)
        .await?;
    Ok(Reply::Async { job, id: None })
}

async fn live_host(ctx: &Ctx, param: &str) -> Result<Host, ApiError> {
    let id = ctx.p.required(param)?;
    let h: Host = ctx.svc.by_uuid(param, id).await?;
    if h.removed.is_some() {
        return Err(ApiError::unknown_id(param, id));
    }
    Ok(h)
}

async fn delete_host(ctx: Ctx) -> Result<Reply, ApiError> {
    let h = live_host(&ctx, "id").await?;
    let id = h.id;
    ctx.svc
        .infrastructure
        .delete_host(h, ctx.p.bool_or("forced", false))
        .await?;
    ctx.svc.agents.disconnect(id);
    Ok(Reply::Success(None))
}

async fn provision_certificate(ctx: Ctx) -> Result<Reply, ApiError> {
    let h = live_host(&ctx, "hostid").await?;
    if h.simulated {
        return Err(ApiError::param(format!(
            "Host {} is simulated and has no certificate",
            h.uuid
        )));
    }
    if h.state != "Up" {
        return Err(ApiError::state(format!(
            "Host {} is {}; its agent must be connected to receive a certificate",
            h.uuid, h.state
        )));
    }
    let job = ctx
        .svc
        .queue_host_job(&ctx.caller, "provisionCertificate", &h)
        .await?;
    Ok(Reply::Async { job, id: None })
}
