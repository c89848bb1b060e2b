//! Host placement: which host an instance should run on.
//!
//! A pure function of an immutable [`Snapshot`] (zones, pods, clusters, hosts,
//! instances, affinity groups, settings) and a [`Request`]: no I/O, no clock,
//! no store. The caller builds the snapshot, asks, and applies the answer
//! under its own concurrency control (re-checking capacity in the same
//! transaction, since the snapshot may be stale by then).
//!
//! A decision runs in two stages, as CloudStack's planner does:
//!
//! * **filters** ([`filters`]): a host must be in the requested scope, Up and
//!   Enabled, in an Enabled zone/pod/cluster, not in the avoid set, carry the
//!   offering's host tags (only the strict ones when an admin names the
//!   host), have free GPUs if asked for, enough and fast enough cores, room
//!   under the hypervisor's instance limit, satisfy the strict affinity
//!   groups, keep its cluster under the disable thresholds, and fit the CPU
//!   and memory within the over-provisioning factors;
//! * **order** ([`order`]): the allocation policy ([`Allocator`]), refined by
//!   OS-category preference, GPU hosts last, the last host first and the
//!   non-strict affinity priority.
//!
//! Each decision is O(hosts): per-host usage, per-group member placement and
//! per-account counts come from the index [`Snapshot::new`] builds once.

pub mod allocator;
mod filters;
mod ha;
mod order;
mod reject;
mod request;
mod snapshot;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use allocator::{
    allocator_for, AllocContext, AllocKey, Allocator, HostCandidate, ALLOCATOR_NAMES,
};
pub use ha::{ha_capacity, ha_report, ClusterHaReport};
pub use reject::{Level, Reason, Rejection, RejectionGroup};
pub use request::Request;
pub use snapshot::{
    AffinityGroup, AffinityKind, AllocationState, CapacityType, Cluster, Host, HostStatus, Id,
    Instance, Pod, ResourceState, Settings, Snapshot, SnapshotParts, VgpuCapacity, Zone,
};

use filters::{First, Sink, Verdict as Pass};
use reject::Tally;
use request::Cx;

/// Where to put the instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub host_id: Id,
    pub cluster_id: Id,
    pub pod_id: Id,
    pub zone_id: Id,
    /// Non-strict affinity priority of the host (0 without such groups).
    pub priority: i64,
    /// The host is the instance's last host.
    pub last_host: bool,
    /// Hosts that passed every check (the chosen one included).
    pub eligible_hosts: usize,
    /// Hosts in the requested scope.
    pub hosts_in_scope: usize,
    /// The policy that ordered the hosts.
    pub allocator: &'static str,
}

/// One eligible host in the order it would be tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ranked {
    pub host_id: Id,
    pub cluster_id: Id,
    pub pod_id: Id,
    pub priority: i64,
    pub last_host: bool,
}

/// One host's outcome in a dry run.
#[derive(Debug, Clone, PartialEq)]
pub struct HostVerdict {
    pub host_id: Id,
    pub cluster_id: Id,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Would be tried at position `rank` (0 = chosen), with this non-strict
    /// priority.
    Eligible { rank: usize, priority: i64 },
    /// Every check it fails.
    Rejected(Vec<Reason>),
}

impl HostVerdict {
    pub fn is_eligible(&self) -> bool {
        matches!(self.outcome, Outcome::Eligible { .. })
    }
}

/// Picks the host for `req`, or says why none fits.
pub fn plan(
    snapshot: &Snapshot,
    req: &Request,
    allocator: &dyn Allocator,
) -> Result<Plan, Rejection> {
    let cx = Cx::new(snapshot, req);
    if cx.pin_refused {
        return Err(refusal(&cx));
    }
    let acx = AllocContext::new(&cx);
    let mut best: Option<(order::OrderKey, usize, i64)> = None;
    let mut in_scope = 0;
    let mut eligible = 0;
    for hi in scope_hosts(&cx) {
        if !filters::scope(&cx, hi, &mut Pass) {
            continue;
        }
        in_scope += 1;
        if !filters::evaluate(&cx, hi, &mut Pass) {
            continue;
        }
        eligible += 1;
        let (key, priority) = order::order_key(&cx, &acx, allocator, hi);
        if best.as_ref().is_none_or(|(k, _, _)| key < *k) {
            best = Some((key, hi, priority));
        }
    }
    let Some((key, hi, priority)) = best else {
        return Err(rejection(&cx, in_scope));
    };
    let h = &snapshot.hosts()[hi];
    Ok(Plan {
        host_id: h.id,
        cluster_id: h.cluster_id,
        pod_id: h.pod_id,
        zone_id: h.zone_id,
        priority,
        last_host: key.1 == 0,
        eligible_hosts: eligible,
        hosts_in_scope: in_scope,
        allocator: allocator.name(),
    })
}

/// Every eligible host in the order it would be tried (the first is what
/// [`plan`] picks), for callers that fall back to the next host when the
/// first fails to start the instance.
pub fn rank(
    snapshot: &Snapshot,
    req: &Request,
    allocator: &dyn Allocator,
) -> Result<Vec<Ranked>, Rejection> {
    let cx = Cx::new(snapshot, req);
    if cx.pin_refused {
        return Err(refusal(&cx));
    }
    let acx = AllocContext::new(&cx);
    let mut keyed = Vec::new();
    let mut in_scope = 0;
    for hi in scope_hosts(&cx) {
        if !filters::scope(&cx, hi, &mut Pass) {
            continue;
        }
        in_scope += 1;
        if filters::evaluate(&cx, hi, &mut Pass) {
            let (key, priority) = order::order_key(&cx, &acx, allocator, hi);
            keyed.push((key, hi, priority));
        }
    }
    if keyed.is_empty() {
        return Err(rejection(&cx, in_scope));
    }
    keyed.sort_unstable_by_key(|a| a.0);
    Ok(keyed
        .into_iter()
        .map(|(key, hi, priority)| {
            let h = &snapshot.hosts()[hi];
            Ranked {
                host_id: h.id,
                cluster_id: h.cluster_id,
                pod_id: h.pod_id,
                priority,
                last_host: key.1 == 0,
            }
        })
        .collect())
}

/// Every host with its outcome: eligible hosts first in the order they would
/// be tried, then rejected hosts by id, each with all the checks it fails.
pub fn dry_run(snapshot: &Snapshot, req: &Request, allocator: &dyn Allocator) -> Vec<HostVerdict> {
    let cx = Cx::new(snapshot, req);
    let acx = AllocContext::new(&cx);
    let mut eligible = Vec::new();
    let mut rejected = Vec::new();
    for hi in 0..snapshot.hosts().len() {
        let mut all = filters::All::default();
        if cx.pin_refused {
            all.reject(|| Reason::PinRequiresAdmin);
        }
        filters::scope(&cx, hi, &mut all);
        filters::evaluate(&cx, hi, &mut all);
        if all.0.is_empty() {
            let (key, priority) = order::order_key(&cx, &acx, allocator, hi);
            eligible.push((key, hi, priority));
        } else {
            rejected.push((hi, all.0));
        }
    }
    eligible.sort_unstable_by_key(|a| a.0);
    let hosts = snapshot.hosts();
    rejected.sort_by_key(|(hi, _)| hosts[*hi].id);
    let verdict = |hi: usize, outcome| HostVerdict {
        host_id: hosts[hi].id,
        cluster_id: hosts[hi].cluster_id,
        outcome,
    };
    eligible
        .into_iter()
        .enumerate()
        .map(|(rank, (_, hi, priority))| verdict(hi, Outcome::Eligible { rank, priority }))
        .chain(
            rejected
                .into_iter()
                .map(|(hi, reasons)| verdict(hi, Outcome::Rejected(reasons))),
        )
        .collect()
}

/// Host indexes worth looking at: just the named host when an admin names
/// one, otherwise all of them.
fn scope_hosts(cx: &Cx<'_>) -> std::ops::Range<usize> {
    match cx.req.host_id {
        Some(id) => match cx.snap.idx.host_by_id.get(&id) {
            Some(&hi) => hi as usize..hi as usize + 1,
            None => 0..0,
        },
        None => 0..cx.snap.hosts().len(),
    }
}

fn narrowest_scope(req: &Request) -> Option<(Level, Id)> {
    [
        (Level::Host, req.host_id),
        (Level::Cluster, req.cluster_id),
        (Level::Pod, req.pod_id),
        (Level::Zone, req.zone_id),
    ]
    .into_iter()
    .find_map(|(l, id)| id.map(|id| (l, id)))
}

fn refusal(cx: &Cx<'_>) -> Rejection {
    Rejection {
        hosts_in_scope: 0,
        hosts_out_of_scope: cx.snap.hosts().len(),
        scope: narrowest_scope(cx.req),
        groups: Vec::new(),
        refused: Some(Reason::PinRequiresAdmin),
    }
}

/// The slow path, run only when nothing fits: each in-scope host's first
/// reason, tallied.
fn rejection(cx: &Cx<'_>, in_scope: usize) -> Rejection {
    let mut tally = Tally::default();
    for hi in scope_hosts(cx) {
        if !filters::scope(cx, hi, &mut Pass) {
            continue;
        }
        let mut first = First::default();
        filters::evaluate(cx, hi, &mut first);
        if let Some(r) = first.0 {
            tally.add(r);
        }
    }
    Rejection {
        hosts_in_scope: in_scope,
        hosts_out_of_scope: cx.snap.hosts().len() - in_scope,
        scope: narrowest_scope(cx.req),
        groups: tally.finish(),
        refused: None,
    }
}
