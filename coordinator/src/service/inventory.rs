//! Zones, pods, clusters, hosts, storage pools, networks and network
//! offerings as the API lists and changes them. Infrastructure is the root
//! admin's (the command table admits no one else to its changes); networks
//! are seen by the accounts and domains they belong to.

use super::infra::Infrastructure;
use super::*;

/// Filters shared by the infrastructure lists.
/// A host's instances, as its metrics show them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostUse {
    pub memory_bytes: i64,
    pub cpu_mhz: i64,
    /// CPU the running ones used in their latest sampling interval.
    pub cpu_used_mhz: f64,
    pub running: u64,
    pub instances: u64,
}

#[derive(Debug, Clone, Default)]
pub struct InfraFilter {
    pub id: Option<String>,
    pub name: Option<String>,
    pub keyword: Option<String>,
    pub zone: Option<String>,
    pub pod: Option<String>,
    pub cluster: Option<String>,
    pub state: Option<String>,
    pub resource_state: Option<String>,
    pub page: Option<(u64, u64)>,
}

/// Changes to a cluster.
#[derive(Debug, Clone, Default)]
pub struct ClusterUpdate {
    pub allocation_state: Option<String>,
    pub name: Option<String>,
}

/// Changes to a host; `os_category: Some(None)` clears the preference.
#[derive(Debug, Clone, Default)]
pub struct HostUpdate {
    pub resource_state: Option<String>,
    pub host_tags: Option<Vec<String>>,
    pub os_category: Option<Option<String>>,
}

/// A new network offering.
#[derive(Debug, Clone, Default)]
pub struct NewNetworkOffering {
    pub name: String,
    pub display_text: Option<String>,
    pub guest_ip_type: String,
    pub specify_vlan: bool,
    pub specify_ip_ranges: Option<bool>,
    pub enabled: bool,
    pub availability: String,
    /// service -> provider
    pub providers: std::collections::BTreeMap<String, String>,
}

/// Changes to a network offering.
#[derive(Debug, Clone, Default)]
pub struct NetworkOfferingUpdate {
    pub name: Option<String>,
    pub display_text: Option<String>,
    pub state: Option<String>,
    pub availability: Option<String>,
}

/// Instance states that hold a host's capacity.
fn holding() -> Vec<Val> {
    ["Starting", "Running", "Stopping", "Migrating"]
        .iter()
        .map(|s| (*s).into())
        .collect()
}

impl Infrastructure {
    async fn infra_query(&self, f: &InfraFilter, q: Query) -> SResult<Query> {
        let mut q = common_filters(
            q,
            f.id.as_deref(),
            f.name.as_deref(),
            f.keyword.as_deref(),
            &[Col::Name],
        );
        if let Some(z) = &f.zone {
            let z: Zone = self.by_uuid("zoneid", z).await?;
            q = q.eq(Col::Zone, z.id);
        }
        q.page = f.page;
        Ok(q)
    }

    pub async fn list_zones(&self, f: &InfraFilter) -> SResult<(Vec<Zone>, u64)> {
        let q = self
            .infra_query(
                &InfraFilter {
                    zone: None,
                    ..f.clone()
                },
                Query::new(),
            )
            .await?;
        Ok(self.store.list::<Zone>(&q).await?)
    }

    pub async fn list_pods(&self, f: &InfraFilter) -> SResult<(Vec<Pod>, u64)> {
        let q = self.infra_query(f, Query::new()).await?;
        Ok(self.store.list::<Pod>(&q).await?)
    }

    pub async fn list_clusters(&self, f: &InfraFilter) -> SResult<(Vec<Cluster>, u64)> {
        let mut q = self.infra_query(f, Query::new()).await?;
        if let Some(p) = &f.pod {
            let p: Pod = self.by_uuid("podid", p).await?;
            q = q.eq(Col::Parent, p.id);
        }
        Ok(self.store.list::<Cluster>(&q).await?)
    }

    pub async fn list_hosts(&self, f: &InfraFilter) -> SResult<(Vec<Host>, u64)> {
        let mut q = self
            .infra_query(f, Query::new().and(Cond::Ne(Col::State, "Removed".into())))
            .await?;
        if let Some(c) = &f.cluster {
            let c: Cluster = self.by_uuid("clusterid", c).await?;
            q = q.eq(Col::Parent, c.id);
        }
        if let Some(p) = &f.pod {
            let p: Pod = self.by_uuid("podid", p).await?;
            q = q.eq(Col::Ref, p.id);
        }
        if let Some(s) = &f.state {
            q = q.and(Cond::EqNoCase(Col::State, s.clone()));
        }
        if let Some(s) = &f.resource_state {
            q = q.and(Cond::EqNoCase(Col::ResourceState, s.clone()));
        }
        Ok(self.store.list::<Host>(&q).await?)
    }

    /// What the instances on a host hold and use, for the metrics pages:
    /// allocation as `host_allocation` counts it, CPU in use from their
    /// latest statistics, and how many run of how many are there.
    pub async fn host_use(&self, host_id: i64) -> SResult<HostUse> {
        let vms: Vec<Vm> = self.store.all(Query::new().eq(Col::Host, host_id)).await?;
        let mut u = HostUse::default();
        for v in vms.iter().filter(|v| v.removed.is_none()) {
            u.instances += 1;
            if super::capacity::holds_capacity(v.state) {
                u.memory_bytes += v.memory * 1024 * 1024;
                u.cpu_mhz += v.cpu_number * v.cpu_speed;
            }
            if v.state == orrery_model::VmState::Running {
                u.running += 1;
                if let Some(f) = self.statistics.hub.vm_latest(v.id) {
                    u.cpu_used_mhz += f.cpu_percent / 100.0 * (v.cpu_number * v.cpu_speed) as f64;
                }
            }
        }
        Ok(u)
    }

    /// Memory (bytes) and CPU (MHz) the instances on a host hold.
    pub async fn host_allocation(&self, host_id: i64) -> SResult<(i64, i64)> {
        let vms: Vec<Vm> = self
            .store
            .all(
                Query::new()
                    .eq(Col::Host, host_id)
                    .and(Cond::In(Col::State, holding())),
            )
            .await?;
        Ok((
            vms.iter().map(|v| v.memory * 1024 * 1024).sum(),
            vms.iter().map(|v| v.cpu_number * v.cpu_speed).sum(),
        ))
    }

    pub async fn list_storage_pools(&self, f: &InfraFilter) -> SResult<(Vec<StoragePool>, u64)> {
        let mut q = self.infra_query(f, Query::new()).await?;
        if let Some(c) = &f.cluster {
            let c: Cluster = self.by_uuid("clusterid", c).await?;
            q = q.eq(Col::Parent, c.id);
        }
        Ok(self.store.list::<StoragePool>(&q).await?)
    }

    /// Bytes of volumes placed on (or not yet placed in the zone of) a pool.
    pub async fn pool_allocated(&self, p: &StoragePool) -> SResult<i64> {
        let vols: Vec<Volume> = self
            .store
            .all(
                Query::new()
                    .eq(Col::Zone, p.zone_id)
                    .and(Cond::NotIn(Col::State, vec!["Expunged".into()])),
            )
            .await?;
        // Volumes without a pool are on their cluster's shared pool; a
        // host's own pool holds only the volumes placed on it.
        let shared = p.scope != "HOST";
        Ok(vols
            .iter()
            .filter(|v| v.pool_id == Some(p.id) || (shared && v.pool_id.is_none()))
            .map(|v| v.size)
            .sum())
    }

    /// The pool a volume is on: its own, or (without one) the shared pool
    /// of its zone, where the primary directory of every host is.
    pub async fn volume_pool(&self, v: &Volume) -> SResult<Option<StoragePool>> {
        if let Some(id) = v.pool_id {
            return self.load_cached(id).await;
        }
        let pools: Vec<StoragePool> = self
            .store
            .all(Query::new().eq(Col::Zone, v.zone_id))
            .await?;
        Ok(pools
            .into_iter()
            .filter(|p| p.scope != "HOST")
            .min_by_key(|p| p.id))
    }

    /// Whether the caller sees a network: its own account's, a shared one
    /// of its domain or a domain above, or any it administers.
    async fn network_visible(&self, caller: &Caller, n: &Network) -> SResult<bool> {
        if caller.is_root_admin() {
            return Ok(true);
        }
        let path = self.domain_path(n.domain_id).await?;
        Ok(match n.account_id {
            Some(a) => caller.can_access(a, &path),
            None => {
                in_subtree(&caller.domain.path, &path)
                    || (caller.is_domain_admin() && in_subtree(&path, &caller.domain.path))
            }
        })
    }

    /// The networks the caller may see.
    pub async fn list_networks(
        &self,
        caller: &Caller,
        f: &InfraFilter,
    ) -> SResult<(Vec<Network>, u64)> {
        let q = self
            .infra_query(
                &InfraFilter {
                    page: None,
                    ..f.clone()
                },
                Query::new().and(Cond::Ne(Col::State, "Removed".into())),
            )
            .await?;
        let mut visible = Vec::new();
        for n in self.store.all::<Network>(q).await? {
            if self.network_visible(caller, &n).await? {
                visible.push(n);
            }
        }
        let total = visible.len() as u64;
        let page = match f.page {
            Some((o, l)) => visible
                .into_iter()
                .skip(o as usize)
                .take(l as usize)
                .collect(),
            None => visible,
        };
        Ok((page, total))
    }

    /// A network the caller may act on, by uuid; others are unknown ids.
    pub async fn visible_network(
        &self,
        caller: &Caller,
        param: &str,
        uuid: &str,
    ) -> SResult<Network> {
        let n: Network = self.by_uuid(param, uuid).await?;
        if n.removed.is_some() || !self.network_visible(caller, &n).await? {
            return Err(ServiceError::not_found(param, uuid));
        }
        Ok(n)
    }

    pub async fn list_network_offerings(
        &self,
        f: &InfraFilter,
    ) -> SResult<(Vec<NetworkOffering>, u64)> {
        let q = self
            .infra_query(f, Query::new().and(Cond::Ne(Col::State, "Removed".into())))
            .await?;
        Ok(self.store.list::<NetworkOffering>(&q).await?)
    }

    pub async fn update_cluster(&self, uuid: &str, u: ClusterUpdate) -> SResult<Cluster> {
        let mut c: Cluster = self.by_uuid("id", uuid).await?;
        if let Some(s) = u.allocation_state {
            c.allocation_state = s;
        }
        if let Some(n) = u.name {
            c.name = n;
        }
        let mut tx = Tx::new();
        tx.update(&mut c);
        self.store.commit(tx.ops).await?;
        Ok(c)
    }

    pub async fn update_host(&self, uuid: &str, u: HostUpdate) -> SResult<Host> {
        let mut h: Host = self.by_uuid("id", uuid).await?;
        if let Some(s) = u.resource_state {
            h.resource_state = s;
        }
        if let Some(t) = u.host_tags {
            h.host_tags = t;
        }
        if let Some(c) = u.os_category {
            h.os_category_id = match c {
                Some(c) => Some(self.by_uuid::<OsCategory>("oscategoryid", &c).await?.id),
                None => None,
            };
        }
        let mut tx = Tx::new();
        tx.update(&mut h);
        self.store.commit(tx.ops).await?;
        Ok(h)
    }

    pub async fn create_network_offering(&self, r: NewNetworkOffering) -> SResult<NetworkOffering> {
        let dup: Option<NetworkOffering> = self
            .store
            .first(Query::new().eq(Col::Ukey, r.name.to_lowercase()))
            .await?;
        if dup.is_some() {
            return Err(ServiceError::invalid(format!(
                "A network offering named {} already exists",
                r.name
            )));
        }
        let o = NetworkOffering {
            id: self.store.new_id::<NetworkOffering>().await?,
            uuid: new_uuid(),
            version: 1,
            display_text: r.display_text.unwrap_or_else(|| r.name.clone()),
            name: r.name,
            specify_vlan: r.specify_vlan,
            specify_ip_ranges: r.specify_ip_ranges.unwrap_or(r.guest_ip_type == "Shared"),
            guest_ip_type: r.guest_ip_type,
            traffic_type: "Guest".into(),
            state: if r.enabled { "Enabled" } else { "Disabled" }.into(),
            is_default: false,
            availability: r.availability,
            created: now(),
            removed: None,
            providers: r.providers,
        };
        let mut tx = Tx::new();
        tx.insert(&o);
        self.store.commit(tx.ops).await?;
        Ok(o)
    }

    /// A network offering that has not been deleted.
    pub async fn live_network_offering(&self, uuid: &str) -> SResult<NetworkOffering> {
        let o: NetworkOffering = self.by_uuid("id", uuid).await?;
        if o.removed.is_some() {
            return Err(ServiceError::not_found("id", uuid));
        }
        Ok(o)
    }

    pub async fn update_network_offering(
        &self,
        uuid: &str,
        u: NetworkOfferingUpdate,
    ) -> SResult<NetworkOffering> {
        let mut o = self.live_network_offering(uuid).await?;
        if let Some(n) = u.name {
            o.name = n;
        }
        if let Some(d) = u.display_text {
            o.display_text = d;
        }
        if let Some(s) = u.state {
            o.state = s;
        }
        if let Some(a) = u.availability {
            o.availability = a;
        }
        let mut tx = Tx::new();
        tx.update(&mut o);
        self.store.commit(tx.ops).await?;
        Ok(o)
    }
}
