//! What is being placed, and the per-decision context derived from it.

use std::collections::HashSet;

use super::snapshot::{normalise_tags, AffinityKind, Id, Instance, Snapshot};

/// One placement question: an instance of this size, for this account, with
/// these constraints.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// The instance being started again, when it already exists: its own
    /// usage, group memberships and account count are left out, so it never
    /// competes with itself.
    pub vm_id: Option<Id>,
    pub account_id: Id,
    pub cpu_number: u32,
    /// Speed of one core.
    pub cpu_speed_mhz: u32,
    pub memory_mb: u64,
    /// The service offering's host tags; every one must be on the host.
    pub host_tags: Vec<String>,
    /// The template's tag, which CloudStack matches against host tags too.
    pub template_tag: Option<String>,
    /// The guest OS category of the template, for hosts that prefer one.
    pub os_category: Option<Id>,
    /// GPU devices the offering asks for; 0 means none (and GPU hosts are
    /// then tried last).
    pub gpu_count: u32,
    /// Firmware and devices the instance boots with; hosts without them are
    /// skipped with the reason.
    pub needs_uefi: bool,
    pub needs_secure_boot: bool,
    pub needs_tpm: bool,
    /// A vGPU type the host must offer (its agent creates the device at
    /// start, refusing when the cards have no room left).
    pub vgpu_type: Option<String>,
    pub affinity_group_ids: Vec<Id>,
    /// Zone to deploy in (everyone may choose it).
    pub zone_id: Option<Id>,
    /// Pod, cluster or host chosen by an administrator.
    pub pod_id: Option<Id>,
    pub cluster_id: Option<Id>,
    pub host_id: Option<Id>,
    /// Hosts already tried and failed for this request.
    pub avoid_hosts: Vec<Id>,
    /// Where the instance last ran; tried first on start while it still fits.
    pub last_host_id: Option<Id>,
    pub caller_is_admin: bool,
    /// Seed for the `random` allocators, so a decision is a pure function of
    /// its inputs (the caller draws a fresh one per request).
    pub seed: u64,
}

impl Request {
    /// CPU the instance asks for: cores × per-core speed.
    pub fn cpu_mhz_total(&self) -> u64 {
        u64::from(self.cpu_number) * u64::from(self.cpu_speed_mhz)
    }

    /// Only administrators may narrow placement below the zone.
    pub fn pins_below_zone(&self) -> bool {
        self.pod_id.is_some() || self.cluster_id.is_some() || self.host_id.is_some()
    }
}

/// A strict host-affinity group of the request, resolved: the hosts where its
/// other members run now.
#[derive(Debug, Clone)]
pub(crate) struct AffinityTarget {
    pub group: Id,
    pub hosts: Vec<u32>,
}

/// Which disable thresholds a cluster would pass with the instance added:
/// `(would-be fraction, threshold)` for each that it passes.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ClusterOver {
    pub cpu: Option<(f64, f64)>,
    pub mem: Option<(f64, f64)>,
}

/// A cluster takes no new instance whose CPU or memory would lift its
/// allocated share of the over-provisioned capacity past
/// `cluster.{cpu,memory}.allocated.capacity.disablethreshold`. Sums run over
/// all its hosts, as CloudStack's capacity table sums them; the instance
/// being restarted is left out of its own cluster's use.
fn cluster_over(snap: &Snapshot, me: Option<(&Instance, u32)>, req: &Request) -> Vec<ClusterOver> {
    let settings = snap.settings();
    if !settings.cluster_threshold_enabled {
        return Vec::new();
    }
    let me_cluster = me.and_then(|(m, hi)| Some((m, snap.idx.links[hi as usize].cluster?)));
    let (need_cpu, need_mem) = (req.cpu_mhz_total(), req.memory_mb);
    snap.clusters()
        .iter()
        .zip(&snap.idx.cluster_usage)
        .enumerate()
        .map(|(ci, (cluster, cu))| {
            let (mut cpu_used, mut mem_used) = (cu.cpu_used_mhz, cu.mem_used_mb);
            if let Some((m, mc)) = me_cluster {
                if mc as usize == ci {
                    cpu_used = cpu_used.saturating_sub(m.cpu_mhz_total());
                    mem_used = mem_used.saturating_sub(m.memory_mb);
                }
            }
            let over = |used: u64, need: u64, total: f64, threshold: f64| {
                let would_be = (used + need) as f64 / total;
                (total > 0.0 && would_be > threshold).then_some((would_be, threshold))
            };
            ClusterOver {
                cpu: over(
                    cpu_used,
                    need_cpu,
                    cu.cpu_total_mhz as f64 * cluster.cpu_overprovisioning,
                    cluster
                        .cpu_disable_threshold
                        .unwrap_or(settings.cpu_disable_threshold),
                ),
                mem: over(
                    mem_used,
                    need_mem,
                    cu.mem_total_mb as f64 * cluster.mem_overprovisioning,
                    cluster
                        .mem_disable_threshold
                        .unwrap_or(settings.mem_disable_threshold),
                ),
            }
        })
        .collect()
}

/// Per-decision values computed once from the snapshot and the request, so
/// that each host's evaluation is a handful of lookups.
pub(crate) struct Cx<'a> {
    pub snap: &'a Snapshot,
    pub req: &'a Request,
    /// The instance being restarted and its host index, when in the snapshot.
    pub me: Option<&'a Instance>,
    pub me_host: Option<u32>,
    pub need_cpu_mhz: u64,
    pub need_mem_mb: u64,
    /// Every tag the host must carry when placement is free to choose, with
    /// its number in the snapshot (`None`: no host has it).
    pub tags: Vec<(String, Option<u32>)>,
    /// The subset of `tags` that are strict: the only ones checked when an
    /// administrator names the host.
    pub strict_tags: Vec<(String, Option<u32>)>,
    /// Per cluster index: the disable thresholds this instance would pass,
    /// computed once per decision since every host of a cluster shares them.
    pub cluster_over: Vec<ClusterOver>,
    pub avoid: HashSet<Id>,
    /// Strict anti-affinity groups of the request (group indexes).
    pub anti: Vec<u32>,
    /// Strict affinity groups of the request.
    pub affinity: Vec<AffinityTarget>,
    /// A non-admin asked for a pod, cluster or host.
    pub pin_refused: bool,
    /// Per host index: the non-strict priority (empty without such groups).
    /// Built densely per decision from the sparse group index, so each host
    /// costs one array read instead of a lookup per group.
    soft_priority: Vec<i64>,
    /// Per host index: another member of a strict anti-affinity group runs
    /// there (empty without such groups).
    pub anti_blocked: Vec<bool>,
}

impl<'a> Cx<'a> {
    pub fn new(snap: &'a Snapshot, req: &'a Request) -> Self {
        let me_idx = req
            .vm_id
            .and_then(|id| snap.idx.instance_by_id.get(&id).copied());
        let me = me_idx.map(|i| snap.instance_at(i as usize));
        let me_host = me_idx.and_then(|i| snap.idx.instance_host[i as usize]);

        let mut raw: Vec<String> = req.host_tags.clone();
        if let Some(t) = &req.template_tag {
            raw.push(t.clone());
        }
        let tags: Vec<(String, Option<u32>)> = normalise_tags(&raw)
            .into_iter()
            .map(|t| {
                let id = snap.idx.tag_ids.get(&t).copied();
                (t, id)
            })
            .collect();
        let strict_tags = tags
            .iter()
            .filter(|(t, _)| snap.idx.strict_tags.binary_search(t).is_ok())
            .cloned()
            .collect();

        let mut anti = Vec::new();
        let mut affinity = Vec::new();
        // Non-strict groups with their priority step: -1 for anti-affinity,
        // +1 for affinity.
        let mut soft: Vec<(u32, i64)> = Vec::new();
        let mut seen = HashSet::new();
        for gid in &req.affinity_group_ids {
            // A group named twice must not count its members twice.
            if !seen.insert(*gid) {
                continue;
            }
            // Unknown groups constrain nothing: the API validates ids, and a
            // group deleted meanwhile no longer binds its former members.
            let Some(&gi) = snap.idx.group_by_id.get(gid) else {
                continue;
            };
            match snap.group_at(gi as usize).kind {
                AffinityKind::HostAntiAffinity => anti.push(gi),
                AffinityKind::HostAffinity => {
                    let mut hosts: Vec<u32> = snap.idx.group_members[gi as usize]
                        .iter()
                        .filter(|(_, ids)| ids.iter().any(|id| Some(*id) != req.vm_id))
                        .map(|(h, _)| *h)
                        .collect();
                    hosts.sort_unstable();
                    affinity.push(AffinityTarget { group: *gid, hosts });
                }
                AffinityKind::NonStrictHostAntiAffinity => soft.push((gi, -1)),
                AffinityKind::NonStrictHostAffinity => soft.push((gi, 1)),
            }
        }

        let n = snap.hosts().len();
        let others = |ids: &Vec<Id>| {
            ids.len() - usize::from(req.vm_id.is_some_and(|me| ids.binary_search(&me).is_ok()))
        };
        let mut soft_priority = Vec::new();
        if !soft.is_empty() {
            soft_priority = vec![0; n];
            for &(gi, step) in &soft {
                for (&h, ids) in &snap.idx.group_members[gi as usize] {
                    soft_priority[h as usize] += step * others(ids) as i64;
                }
            }
        }
        let mut anti_blocked = Vec::new();
        if !anti.is_empty() {
            anti_blocked = vec![false; n];
            for &gi in &anti {
                for (&h, ids) in &snap.idx.group_members[gi as usize] {
                    if others(ids) > 0 {
                        anti_blocked[h as usize] = true;
                    }
                }
            }
        }

        let cluster_over = cluster_over(snap, me.zip(me_host), req);

        Self {
            cluster_over,
            soft_priority,
            anti_blocked,
            snap,
            req,
            me,
            me_host,
            need_cpu_mhz: req.cpu_mhz_total(),
            need_mem_mb: req.memory_mb,
            tags,
            strict_tags,
            avoid: req.avoid_hosts.iter().copied().collect(),
            anti,
            affinity,
            pin_refused: !req.caller_is_admin && req.pins_below_zone(),
        }
    }

    /// Whether the instance being restarted currently sits on host `hi`.
    pub fn me_on(&self, hi: usize) -> bool {
        self.me_host == Some(hi as u32)
    }

    /// Members of group `gi` on host `hi`, other than the instance itself.
    pub fn others_in_group_on(&self, gi: u32, hi: usize) -> impl Iterator<Item = Id> + '_ {
        let me = self.req.vm_id;
        self.snap.idx.group_members[gi as usize]
            .get(&(hi as u32))
            .into_iter()
            .flatten()
            .copied()
            .filter(move |id| Some(*id) != me)
    }

    /// CPU (MHz) and memory (MB) held on host `hi`, without the instance
    /// being restarted.
    pub fn used_on(&self, hi: usize) -> (u64, u64, u32, u32) {
        let u = self.snap.idx.usage[hi];
        match self.me.filter(|_| self.me_on(hi)) {
            Some(me) => (
                u.cpu_mhz.saturating_sub(me.cpu_mhz_total()),
                u.mem_mb.saturating_sub(me.memory_mb),
                u.gpus.saturating_sub(me.gpu_count),
                u.instances.saturating_sub(1),
            ),
            None => (u.cpu_mhz, u.mem_mb, u.gpus, u.instances),
        }
    }

    /// Over-provisioned CPU and memory capacity of host `hi`.
    pub fn capacity_of(&self, hi: usize) -> (f64, f64) {
        self.snap.idx.capacity[hi]
    }

    /// Free CPU (MHz) and memory (MB) on host `hi` after over-provisioning;
    /// negative when already over-committed.
    pub fn free_on(&self, hi: usize) -> (f64, f64) {
        let (cpu_cap, mem_cap) = self.capacity_of(hi);
        let (cpu, mem, _, _) = self.used_on(hi);
        (cpu_cap - cpu as f64, mem_cap - mem as f64)
    }

    /// Non-strict affinity priority of host `hi`: 0, minus one per member of
    /// a non-strict anti-affinity group there, plus one per member of a
    /// non-strict affinity group there.
    pub fn priority(&self, hi: usize) -> i64 {
        self.soft_priority.get(hi).copied().unwrap_or(0)
    }
}
