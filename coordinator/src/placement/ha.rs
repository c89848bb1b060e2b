//! The HA safety margin: how many instances a cluster can hold and still
//! restart everything if one host fails.

use super::snapshot::{Id, Snapshot};

/// With `hosts_in_cluster` hosts of `per_host_limit` instances each, the most
/// instances a cluster should hold so that one host can be down: (N-1) × limit.
pub fn ha_capacity(hosts_in_cluster: usize, per_host_limit: usize) -> usize {
    hosts_in_cluster.saturating_sub(1) * per_host_limit
}

/// One cluster's instance count against its HA-safe figure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterHaReport {
    pub cluster_id: Id,
    pub hosts: usize,
    /// Instances placed on the cluster's hosts now.
    pub instances: usize,
    /// The limit used for hosts that state none of their own.
    pub per_host_limit: usize,
    /// Instances the cluster may hold and survive losing its largest host:
    /// the sum of the hosts' limits minus the largest one, which is
    /// (N-1) × limit when all hosts share one limit.
    pub safe_instances: usize,
    /// `safe_instances - instances`; negative when over the safe figure.
    pub headroom: i64,
}

impl ClusterHaReport {
    /// Past the safe figure: the operator should disable allocation here.
    pub fn over_limit(&self) -> bool {
        self.headroom < 0
    }

    /// At or past the safe figure: the cluster should take no more.
    pub fn at_limit(&self) -> bool {
        self.headroom <= 0
    }
}

/// Per cluster (in snapshot order): instances now against the HA-safe figure.
/// A host's own `max_guests` overrides `per_host_limit` (the hypervisor's
/// default limit).
pub fn ha_report(snapshot: &Snapshot, per_host_limit: usize) -> Vec<ClusterHaReport> {
    let n = snapshot.clusters().len();
    let mut limits: Vec<(usize, usize)> = vec![(0, 0); n]; // (sum, largest)
    for (hi, h) in snapshot.hosts().iter().enumerate() {
        if let Some(ci) = snapshot.idx.links[hi].cluster {
            let limit = h.max_guests.map_or(per_host_limit, |m| m as usize);
            let e = &mut limits[ci as usize];
            e.0 += limit;
            e.1 = e.1.max(limit);
        }
    }
    snapshot
        .clusters()
        .iter()
        .enumerate()
        .map(|(ci, c)| {
            let cu = snapshot.idx.cluster_usage[ci];
            let (sum, largest) = limits[ci];
            let safe = sum - largest;
            ClusterHaReport {
                cluster_id: c.id,
                hosts: cu.hosts as usize,
                instances: cu.instances as usize,
                per_host_limit,
                safe_instances: safe,
                headroom: safe as i64 - i64::from(cu.instances),
            }
        })
        .collect()
}
