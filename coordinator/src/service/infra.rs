//! Zones, pods, clusters, guest networks and network offerings: the records
//! placement and agents hang off. Validation lives here so the API and the
//! simulated-host bootstrap create them the same way.

use super::*;
use crate::store::records::*;
use std::net::Ipv4Addr;

pub struct ZoneArgs {
    pub name: String,
    pub description: Option<String>,
    pub network_type: String,
    pub dns1: Option<String>,
    pub internal_dns1: Option<String>,
    pub security_groups: bool,
    pub local_storage: bool,
    pub allocation_state: String,
}

pub struct PodArgs {
    pub zone_id: i64,
    pub name: String,
    pub gateway: String,
    pub netmask: String,
    pub start_ip: Option<String>,
    pub end_ip: Option<String>,
    pub allocation_state: String,
}

pub struct ClusterArgs {
    pub pod: Pod,
    pub name: String,
    pub hypervisor: String,
    pub allocation_state: String,
}

pub struct NetworkArgs {
    pub zone_id: i64,
    pub offering: NetworkOffering,
    pub name: String,
    pub display_text: String,
    pub account_id: Option<i64>,
    pub domain_id: i64,
    pub gateway: Option<String>,
    pub netmask: Option<String>,
    pub start_ip: Option<String>,
    pub end_ip: Option<String>,
}

/// listInfrastructure's counts.
#[derive(Debug, Clone, Copy, Default)]
pub struct InfraCounts {
    pub zones: u64,
    pub pods: u64,
    pub clusters: u64,
    pub hosts: u64,
    pub storage_pools: u64,
    pub cpu_sockets: u64,
}

/// createNetwork as a caller asks it, ids not yet resolved.
pub struct NetworkRequest {
    pub zone: String,
    pub offering: String,
    pub owner: Account,
    /// `acltype`: Account or Domain.
    pub acl_type: Option<String>,
    /// An owner account was named (`account`).
    pub account_named: bool,
    pub name: String,
    pub display_text: Option<String>,
    pub gateway: Option<String>,
    pub netmask: Option<String>,
    pub start_ip: Option<String>,
    pub end_ip: Option<String>,
}

/// Hypervisor names as CloudStack spells them in responses.
pub const HYPERVISORS: &[&str] = &["KVM", "VMware", "XenServer", "Simulator"];

pub fn hypervisor_name(param: &str, v: &str) -> SResult<String> {
    HYPERVISORS
        .iter()
        .find(|h| h.eq_ignore_ascii_case(v))
        .map(|h| h.to_string())
        .ok_or_else(|| {
            ServiceError::invalid(format!(
                "Invalid value for parameter {param}: {v}; use one of {}",
                HYPERVISORS.join(", ")
            ))
        })
}

pub fn ipv4(param: &str, v: &str) -> SResult<Ipv4Addr> {
    v.trim().parse().map_err(|_| {
        ServiceError::invalid(format!(
            "Invalid value for parameter {param}: {v} is not an IPv4 address"
        ))
    })
}

/// Prefix length of a contiguous netmask.
pub fn mask_bits(param: &str, v: &str) -> SResult<u32> {
    let m = u32::from(ipv4(param, v)?);
    let bits = m.leading_ones();
    if m.checked_shl(bits).unwrap_or(0) != 0 || bits == 0 {
        return Err(ServiceError::invalid(format!(
            "Invalid value for parameter {param}: {v} is not a contiguous netmask"
        )));
    }
    Ok(bits)
}

fn in_net(a: Ipv4Addr, net: u32, bits: u32) -> bool {
    let mask = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - bits)
    };
    u32::from(a) & mask == net & mask
}

/// The address plan of a guest network: gateway, netmask, CIDR and range, each
/// checked against the others.
pub fn address_plan(
    gateway: &str,
    netmask: &str,
    start: Option<&str>,
    end: Option<&str>,
) -> SResult<(String, String, String, String)> {
    let gw = ipv4("gateway", gateway)?;
    let bits = mask_bits("netmask", netmask)?;
    if bits > 30 {
        return Err(ServiceError::invalid(
            "Invalid value for parameter netmask: the network must have room for at least two hosts",
        ));
    }
    let mask = u32::MAX << (32 - bits);
    let base = u32::from(gw) & mask;
    let broadcast = base | !mask;
    // A range left out is the subnet's host addresses without the gateway:
    // the larger side of it when the gateway sits in the middle.
    let g = u32::from(gw);
    let (lo, hi) = if g > base && g < broadcast {
        if g - base > broadcast - g {
            (base + 1, g - 1)
        } else {
            (g + 1, broadcast - 1)
        }
    } else {
        (base + 1, broadcast - 1)
    };
    let (start, end) = match (start, end) {
        (None, None) => (Ipv4Addr::from(lo), Ipv4Addr::from(hi)),
        (Some(st), None) => {
            let st = ipv4("startip", st)?;
            let e = if u32::from(st) < g && g < broadcast {
                g - 1
            } else {
                broadcast - 1
            };
            (st, Ipv4Addr::from(e))
        }
        (None, Some(en)) => {
            let en = ipv4("endip", en)?;
            let st = if g > base && g < u32::from(en) {
                g + 1
            } else {
                base + 1
            };
            (Ipv4Addr::from(st), en)
        }
        (Some(st), Some(en)) => (ipv4("startip", st)?, ipv4("endip", en)?),
    };
    for (p, a) in [("startip", start), ("endip", end)] {
        if !in_net(a, base, bits) || u32::from(a) == base || u32::from(a) == broadcast {
            return Err(ServiceError::invalid(format!(
                "Invalid value for parameter {p}: {a} is not a host address of {}/{bits}",
                Ipv4Addr::from(base)
            )));
        }
    }
    if u32::from(start) > u32::from(end) {
        return Err(ServiceError::invalid(format!(
            "Invalid value for parameter endip: {end} is before startip {start}"
        )));
    }
    Ok((
        format!("{}/{bits}", Ipv4Addr::from(base)),
        Ipv4Addr::from(mask).to_string(),
        start.to_string(),
        end.to_string(),
    ))
}

fn ranges_overlap(a: &Network, s: u32, e: u32) -> bool {
    let (Ok(as_), Ok(ae)) = (a.start_ip.parse::<Ipv4Addr>(), a.end_ip.parse::<Ipv4Addr>()) else {
        return false;
    };
    u32::from(as_) <= e && s <= u32::from(ae)
}

/// The infrastructure part of the service: zones, pods, clusters, hosts'
/// records, storage pools, networks and network offerings, their lists and
/// the use of hosts and pools.
pub struct Infrastructure {
    ctx: Arc<Context>,
    /// For hosts' use in figures (their instances' latest statistics).
    pub(in crate::service) statistics: Arc<super::stats::Statistics>,
    /// The instances' address pools; a network's goes with it.
    pub(in crate::service) ip_pools: super::vm::IpPools,
}

super::context::part_of_service!(Infrastructure);

impl Infrastructure {
    pub(in crate::service) fn new(
        ctx: Arc<Context>,
        statistics: Arc<super::stats::Statistics>,
        ip_pools: super::vm::IpPools,
    ) -> Self {
        Infrastructure {
            ctx,
            statistics,
            ip_pools,
        }
    }

    pub async fn create_zone(&self, a: ZoneArgs) -> SResult<Zone> {
        if a.name.trim().is_empty() {
            return Err(ServiceError::invalid(
                "Invalid value for parameter name: empty",
            ));
        }
        let network_type = match a.network_type.to_ascii_lowercase().as_str() {
            "basic" => "Basic",
            "advanced" => "Advanced",
            _ => {
                return Err(ServiceError::invalid(format!(
                    "Invalid value for parameter networktype: {}; use Basic or Advanced",
                    a.network_type
                )))
            }
        };
        for (p, v) in [("dns1", &a.dns1), ("internaldns1", &a.internal_dns1)] {
            if let Some(v) = v {
                ipv4(p, v)?;
            }
        }
        let exists: Option<Zone> = self
            .store
            .first(Query::new().eq(Col::Ukey, a.name.to_lowercase()))
            .await?;
        if exists.is_some() {
            return Err(ServiceError::invalid(format!(
                "A zone with name {} already exists",
                a.name
            )));
        }
        let z = Zone {
            id: self.store.new_id::<Zone>().await?,
            uuid: new_uuid(),
            version: 1,
            name: a.name,
            description: a.description,
            network_type: network_type.into(),
            allocation_state: a.allocation_state,
            dns1: a.dns1,
            internal_dns1: a.internal_dns1,
            security_groups_enabled: a.security_groups,
            local_storage_enabled: a.local_storage,
            created: now(),
            removed: None,
        };
        let mut tx = Tx::new();
        tx.insert(&z);
        self.store.commit(tx.ops).await?;
        Ok(z)
    }

    pub async fn create_pod(&self, a: PodArgs) -> SResult<Pod> {
        let gw = ipv4("gateway", &a.gateway)?;
        let bits = mask_bits("netmask", &a.netmask)?;
        for (p, v) in [("startip", &a.start_ip), ("endip", &a.end_ip)] {
            if let Some(v) = v {
                let ip = ipv4(p, v)?;
                if !in_net(ip, u32::from(gw), bits) {
                    return Err(ServiceError::invalid(format!(
                        "Invalid value for parameter {p}: {v} is outside the pod's subnet"
                    )));
                }
            }
        }
        let dup: Option<Pod> = self
            .store
            .first(Query::new().eq(
                Col::Ukey,
                format!("{}/{}", a.zone_id, a.name.to_lowercase()),
            ))
            .await?;
        if dup.is_some() {
            return Err(ServiceError::invalid(format!(
                "A pod with name {} already exists in the zone",
                a.name
            )));
        }
        let p = Pod {
            id: self.store.new_id::<Pod>().await?,
            uuid: new_uuid(),
            version: 1,
            name: a.name,
            zone_id: a.zone_id,
            gateway: a.gateway,
            netmask: a.netmask,
            start_ip: a.start_ip,
            end_ip: a.end_ip,
            allocation_state: a.allocation_state,
            created: now(),
            removed: None,
        };
        let mut tx = Tx::new();
        tx.insert(&p);
        self.store.commit(tx.ops).await?;
        Ok(p)
    }

    /// Creates a cluster with its cluster-wide primary storage pool (a directory
    /// each host of the cluster keeps under its agent's state directory).
    pub async fn create_cluster(&self, a: ClusterArgs) -> SResult<Cluster> {
        let dup: Option<Cluster> = self
            .store
            .first(Query::new().eq(Col::Ukey, format!("{}/{}", a.pod.id, a.name.to_lowercase())))
            .await?;
        if dup.is_some() {
            return Err(ServiceError::invalid(format!(
                "A cluster with name {} already exists in the pod",
                a.name
            )));
        }
        let t = now();
        let c = Cluster {
            id: self.store.new_id::<Cluster>().await?,
            uuid: new_uuid(),
            version: 1,
            name: a.name.clone(),
            zone_id: a.pod.zone_id,
            pod_id: a.pod.id,
            hypervisor: a.hypervisor,
            allocation_state: a.allocation_state,
            managed_state: "Managed".into(),
            created: t,
            removed: None,
        };
        let mut tx = Tx::new();
        tx.insert(&c);
        tx.insert(&StoragePool {
            id: self.store.new_id::<StoragePool>().await?,
            uuid: new_uuid(),
            version: 1,
            name: format!("{}-primary", a.name),
            zone_id: c.zone_id,
            pod_id: Some(c.pod_id),
            cluster_id: Some(c.id),
            host_id: None,
            path: "primary".into(),
            pool_type: "Filesystem".into(),
            scope: "CLUSTER".into(),
            capacity_bytes: 10 << 40,
            state: "Up".into(),
            created: t,
        });
        self.store.commit(tx.ops).await?;
        Ok(c)
    }

    /// Creates a guest network. The first network of a zone becomes the zone's
    /// default, which deploys use when no network is named. Shared networks in
    /// one zone may not overlap, so no address is ever handed out twice.
    /// createNetwork with its access rules: only admins make Shared networks
    /// or networks of a whole domain.
    pub async fn create_network_for(&self, caller: &Caller, r: NetworkRequest) -> SResult<Network> {
        let zone: Zone = self.by_uuid("zoneid", &r.zone).await?;
        let offering: NetworkOffering = self.by_uuid("networkofferingid", &r.offering).await?;
        if offering.removed.is_some() {
            return Err(ServiceError::not_found("networkofferingid", &r.offering));
        }
        let domain_wide = match r.acl_type.as_deref() {
            None => offering.guest_ip_type == "Shared" && caller.is_admin() && !r.account_named,
            Some(a) if a.eq_ignore_ascii_case("domain") => true,
            Some(a) if a.eq_ignore_ascii_case("account") => false,
            Some(a) => {
                return Err(ServiceError::invalid(format!(
                    "Invalid value for parameter acltype: {a}; use Account or Domain"
                )))
            }
        };
        if domain_wide && !caller.is_admin() {
            return Err(ServiceError::denied(
                "Only admins can create networks shared by a whole domain",
            ));
        }
        if offering.guest_ip_type == "Shared" && !caller.is_admin() {
            return Err(ServiceError::denied(
                "Only admins can create Shared networks",
            ));
        }
        self.create_network(NetworkArgs {
            zone_id: zone.id,
            offering,
            display_text: r.display_text.unwrap_or_else(|| r.name.clone()),
            name: r.name,
            account_id: if domain_wide { None } else { Some(r.owner.id) },
            domain_id: r.owner.domain_id,
            gateway: r.gateway,
            netmask: r.netmask,
            start_ip: r.start_ip,
            end_ip: r.end_ip,
        })
        .await
    }

    /// Live zones, pods, clusters, hosts and primary pools, and the hosts'
    /// CPU sockets (one per host: agents report cores, not sockets).
    pub async fn infrastructure_counts(&self) -> SResult<InfraCounts> {
        let zones: Vec<Zone> = self.store.all(Query::new()).await?;
        let pods: Vec<Pod> = self.store.all(Query::new()).await?;
        let clusters: Vec<Cluster> = self.store.all(Query::new()).await?;
        let hosts: Vec<Host> = self.store.all(Query::new()).await?;
        let pools: Vec<StoragePool> = self.store.all(Query::new()).await?;
        let hosts = hosts.iter().filter(|h| h.removed.is_none()).count() as u64;
        Ok(InfraCounts {
            zones: zones.iter().filter(|z| z.removed.is_none()).count() as u64,
            pods: pods.iter().filter(|p| p.removed.is_none()).count() as u64,
            clusters: clusters.iter().filter(|c| c.removed.is_none()).count() as u64,
            hosts,
            storage_pools: pools.len() as u64,
            cpu_sockets: hosts,
        })
    }

    /// The hypervisors of the live hosts (of one zone when given), in
    /// CloudStack's spelling; before any host, every one Orrery drives.
    pub async fn hypervisors_in_use(&self, zone: Option<&str>) -> SResult<Vec<String>> {
        let mut q = Query::new();
        if let Some(z) = zone {
            let z: Zone = self.by_uuid("zoneid", z).await?;
            q = q.eq(Col::Zone, z.id);
        }
        let hosts: Vec<Host> = self.store.all(q).await?;
        let mut names: Vec<String> = hosts
            .iter()
            .filter(|h| h.removed.is_none())
            .map(|h| h.hypervisor.clone())
            .collect();
        names.sort();
        names.dedup();
        if names.is_empty() {
            names = HYPERVISORS.iter().map(|h| h.to_string()).collect();
        }
        Ok(names)
    }

    pub async fn create_network(&self, a: NetworkArgs) -> SResult<Network> {
        if a.offering.removed.is_some() || a.offering.state != "Enabled" {
            return Err(ServiceError::invalid(format!(
                "Invalid value for parameter networkofferingid: network offering {} is not in Enabled state",
                a.offering.uuid
            )));
        }
        if a.name.trim().is_empty() {
            return Err(ServiceError::invalid(
                "Invalid value for parameter name: empty",
            ));
        }
        let (gw, nm) = match (&a.gateway, &a.netmask) {
            (Some(g), Some(n)) => (g.clone(), n.clone()),
            (None, None) if a.offering.guest_ip_type != "Shared" => {
                // Isolated networks get a private range, as CloudStack's
                // default guest CIDR does.
                ("10.1.1.1".to_string(), "255.255.255.0".to_string())
            }
            (None, None) => {
                return Err(ServiceError::invalid(
                    "Parameters gateway and netmask are required for a Shared network",
                ))
            }
            (Some(_), None) => return Err(ServiceError::missing("createNetwork", "netmask")),
            (None, Some(_)) => return Err(ServiceError::missing("createNetwork", "gateway")),
        };
        let (cidr, netmask, start, end) =
            address_plan(&gw, &nm, a.start_ip.as_deref(), a.end_ip.as_deref())?;
        let gw_ip = ipv4("gateway", &gw)?;
        let (s, e) = (
            u32::from(ipv4("startip", &start)?),
            u32::from(ipv4("endip", &end)?),
        );
        if (s..=e).contains(&u32::from(gw_ip)) {
            return Err(ServiceError::invalid(format!(
                "Invalid value for parameter gateway: {gw} lies inside the range {start}-{end}"
            )));
        }
        let existing: Vec<Network> = self
            .store
            .all(
                Query::new()
                    .eq(Col::Zone, a.zone_id)
                    .and(Cond::Ne(Col::State, "Removed".into())),
            )
            .await?;
        if a.offering.guest_ip_type == "Shared" {
            if let Some(o) = existing
                .iter()
                .filter(|n| n.guest_type == "Shared")
                .find(|n| ranges_overlap(n, s, e))
            {
                return Err(ServiceError::invalid(format!(
                    "The IP range {start}-{end} overlaps with network {} ({}-{})",
                    o.name, o.start_ip, o.end_ip
                )));
            }
        }
        let n = Network {
            id: self.store.new_id::<Network>().await?,
            uuid: new_uuid(),
            version: 1,
            name: a.name,
            display_text: a.display_text,
            zone_id: a.zone_id,
            network_offering_id: a.offering.id,
            account_id: a.account_id,
            domain_id: a.domain_id,
            cidr,
            gateway: gw_ip.to_string(),
            netmask,
            start_ip: start,
            end_ip: end,
            state: if a.offering.guest_ip_type == "Shared" {
                "Setup".into()
            } else {
                "Allocated".into()
            },
            guest_type: a.offering.guest_ip_type.clone(),
            acl_type: if a.account_id.is_some() {
                "Account".into()
            } else {
                "Domain".into()
            },
            is_zone_default: existing.is_empty(),
            created: now(),
            removed: None,
        };
        let mut tx = Tx::new();
        tx.insert(&n);
        self.store.commit(tx.ops).await?;
        Ok(n)
    }

    /// Removes a network no NIC uses any more.
    pub async fn delete_network(&self, mut n: Network) -> SResult<()> {
        let nics: Vec<Nic> = self
            .store
            .all(Query {
                page: Some((0, 1)),
                ..Query::new().eq(Col::Ref, n.id)
            })
            .await?;
        if !nics.is_empty() {
            return Err(ServiceError::in_use(format!(
                "Network {} still has instances; expunge them first",
                n.uuid
            )));
        }
        n.removed = Some(now());
        n.state = "Destroy".into();
        let mut tx = Tx::new();
        tx.update(&mut n);
        self.store.commit(tx.ops).await?;
        self.ip_pools.lock().await.remove(&n.id);
        Ok(())
    }

    pub async fn delete_network_offering(&self, mut o: NetworkOffering) -> SResult<()> {
        if o.is_default {
            return Err(ServiceError::invalid(format!(
                "Default network offering {} can't be deleted",
                o.name
            )));
        }
        let nets: Vec<Network> = self
            .store
            .all(
                Query::new()
                    .eq(Col::Ref, o.id)
                    .and(Cond::Ne(Col::State, "Removed".into())),
            )
            .await?;
        if !nets.is_empty() {
            return Err(ServiceError::invalid(format!(
                "Can't delete network offering {} as it is used by {} network(s)",
                o.uuid,
                nets.len()
            )));
        }
        o.removed = Some(now());
        let mut tx = Tx::new();
        tx.update(&mut o);
        self.store.commit(tx.ops).await?;
        Ok(())
    }

    /// The zone, pod and cluster an enrolling host joins when none is named: the
    /// only ones, created with default names when there are none yet.
    pub async fn default_cluster(&self, hypervisor: &str) -> SResult<(Zone, Pod, Cluster)> {
        let zones: Vec<Zone> = self.store.all(Query::new()).await?;
        let zones: Vec<Zone> = zones.into_iter().filter(|z| z.removed.is_none()).collect();
        let zone = match zones.as_slice() {
            [] => {
                let z = self
                    .create_zone(ZoneArgs {
                        name: "zone1".into(),
                        description: Some("Default zone".into()),
                        network_type: "Basic".into(),
                        dns1: None,
                        internal_dns1: None,
                        security_groups: false,
                        local_storage: false,
                        allocation_state: "Enabled".into(),
                    })
                    .await?;
                self.ensure_guest_network(&z).await?;
                z
            }
            [z] => z.clone(),
            _ => {
                return Err(ServiceError::invalid(
                    "There are several zones; name one with --zone",
                ))
            }
        };
        let pods: Vec<Pod> = self.store.all(Query::new().eq(Col::Zone, zone.id)).await?;
        let pods: Vec<Pod> = pods.into_iter().filter(|p| p.removed.is_none()).collect();
        let pod = match pods.as_slice() {
            [] => {
                self.create_pod(PodArgs {
                    zone_id: zone.id,
                    name: "pod1".into(),
                    gateway: "10.0.0.1".into(),
                    netmask: "255.255.0.0".into(),
                    start_ip: Some("10.0.0.10".into()),
                    end_ip: Some("10.0.255.250".into()),
                    allocation_state: "Enabled".into(),
                })
                .await?
            }
            [p] => p.clone(),
            _ => {
                return Err(ServiceError::invalid(
                    "There are several pods; name one with --pod",
                ))
            }
        };
        let clusters: Vec<Cluster> = self.store.all(Query::new().eq(Col::Parent, pod.id)).await?;
        let clusters: Vec<Cluster> = clusters
            .into_iter()
            .filter(|c| c.removed.is_none() && c.hypervisor == hypervisor)
            .collect();
        let cluster = match clusters.as_slice() {
            [] => {
                self.create_cluster(ClusterArgs {
                    pod: pod.clone(),
                    name: if hypervisor == "Simulator" {
                        "cluster1".into()
                    } else {
                        format!("{}-cluster1", hypervisor.to_lowercase())
                    },
                    hypervisor: hypervisor.into(),
                    allocation_state: "Enabled".into(),
                })
                .await?
            }
            [c] => c.clone(),
            _ => {
                return Err(ServiceError::invalid(
                    "There are several clusters; name one with --cluster",
                ))
            }
        };
        Ok((zone, pod, cluster))
    }

    /// Gives a zone without networks its default shared guest network.
    pub async fn ensure_guest_network(&self, zone: &Zone) -> SResult<()> {
        let nets: Vec<Network> = self.store.all(Query::new().eq(Col::Zone, zone.id)).await?;
        if nets.iter().any(|n| n.removed.is_none()) {
            return Ok(());
        }
        let offering: NetworkOffering = self
            .store
            .first(Query::new().eq(Col::Ukey, "defaultsharednetworkoffering"))
            .await?
            .ok_or_else(|| {
                ServiceError::internal("the default shared network offering is missing")
            })?;
        // A /12 leaves room for a million instances in one zone.
        self.create_network(NetworkArgs {
            zone_id: zone.id,
            offering,
            name: "guestNetworkForBasicZone".into(),
            display_text: "Default guest network".into(),
            account_id: None,
            domain_id: 1,
            gateway: Some("10.16.0.1".into()),
            netmask: Some("255.240.0.0".into()),
            start_ip: Some("10.16.0.10".into()),
            end_ip: Some("10.31.255.250".into()),
        })
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_plan_checks_the_range_against_the_subnet() {
        let (cidr, mask, s, e) = address_plan("10.1.1.1", "255.255.255.0", None, None).unwrap();
        // The default range leaves the gateway out.
        assert_eq!(
            (cidr.as_str(), mask.as_str(), s.as_str(), e.as_str()),
            ("10.1.1.0/24", "255.255.255.0", "10.1.1.2", "10.1.1.254")
        );
        let (_, _, s, e) = address_plan("10.1.1.254", "255.255.255.0", None, None).unwrap();
        assert_eq!((s.as_str(), e.as_str()), ("10.1.1.1", "10.1.1.253"));
        let (_, _, s, e) = address_plan("10.1.1.200", "255.255.255.0", None, None).unwrap();
        assert_eq!((s.as_str(), e.as_str()), ("10.1.1.1", "10.1.1.199"));
        let (_, _, s, e) =
            address_plan("10.1.1.1", "255.255.255.0", Some("10.1.1.10"), None).unwrap();
        assert_eq!((s.as_str(), e.as_str()), ("10.1.1.10", "10.1.1.254"));
        let err = address_plan("10.1.1.1", "255.255.255.0", Some("10.1.2.5"), None).unwrap_err();
        assert!(err.text().contains("startip"), "{}", err.text());
        let err = address_plan(
            "10.1.1.1",
            "255.255.255.0",
            Some("10.1.1.50"),
            Some("10.1.1.20"),
        )
        .unwrap_err();
        assert!(err.text().contains("endip"), "{}", err.text());
        let err = address_plan("10.1.1.1", "255.0.255.0", None, None).unwrap_err();
        assert!(err.text().contains("netmask"), "{}", err.text());
        let err = address_plan("10.1.1.x", "255.255.255.0", None, None).unwrap_err();
        assert!(err.text().contains("gateway"), "{}", err.text());
    }

    #[test]
    fn hypervisor_names_are_case_insensitive() {
        assert_eq!(hypervisor_name("hypervisor", "kvm").unwrap(), "KVM");
        assert!(hypervisor_name("hypervisor", "hyperv")
            .unwrap_err()
            .text()
            .contains("hypervisor"));
    }
}
