//! The checks a host must pass to take the instance. Each is a small function
//! over the decision context and one host index; it reports each failure to a
//! [`Sink`] and returns whether the host passed.
//!
//! The sink decides what a failure costs: the fast path of [`plan`](super::plan)
//! only needs a yes/no and never builds a [`Reason`] (so a successful decision
//! allocates nothing per host); the rejection summary wants each host's first
//! reason; `dry_run` wants them all.

use super::reject::{Level, Reason};
use super::request::Cx;
use super::snapshot::{AllocationState, HostStatus, ResourceState};

/// Where failed checks go.
pub(crate) trait Sink {
    fn reject(&mut self, reason: impl FnOnce() -> Reason);
    /// Whether to stop at the first failure.
    fn stop(&self) -> bool;
}

/// Pass/fail only.
#[derive(Default)]
pub(crate) struct Verdict;

impl Sink for Verdict {
    fn reject(&mut self, _: impl FnOnce() -> Reason) {}
    fn stop(&self) -> bool {
        true
    }
}

/// The first reason.
#[derive(Default)]
pub(crate) struct First(pub Option<Reason>);

impl Sink for First {
    fn reject(&mut self, reason: impl FnOnce() -> Reason) {
        if self.0.is_none() {
            self.0 = Some(reason());
        }
    }
    fn stop(&self) -> bool {
        true
    }
}

/// Every reason.
#[derive(Default)]
pub(crate) struct All(pub Vec<Reason>);

impl Sink for All {
    fn reject(&mut self, reason: impl FnOnce() -> Reason) {
        self.0.push(reason());
    }
    fn stop(&self) -> bool {
        false
    }
}

/// Runs every check except the scope check, cheapest and most fundamental
/// first, so the first reason is the one an operator should fix first.
pub(crate) fn evaluate<S: Sink>(cx: &Cx<'_>, hi: usize, sink: &mut S) -> bool {
    let mut ok = true;
    // Direct calls rather than a table of function pointers, so each check
    // inlines into the per-host loop.
    macro_rules! run {
        ($($check:ident),*) => {$(
            if !$check(cx, hi, sink) {
                ok = false;
                if sink.stop() {
                    return false;
                }
            }
        )*};
    }
    run!(
        host_state,
        allocation_state,
        avoid,
        host_tags,
        gpu,
        features,
        vgpu,
        cpu_capability,
        max_guests,
        strict_affinity,
        cluster_thresholds,
        cpu_capacity,
        memory_capacity
    );
    ok
}

/// The request's zone, and an admin's pod, cluster or host.
pub(crate) fn scope<S: Sink>(cx: &Cx<'_>, hi: usize, sink: &mut S) -> bool {
    let h = &cx.snap.hosts()[hi];
    let r = cx.req;
    let miss = [
        (Level::Zone, r.zone_id, h.zone_id),
        (Level::Pod, r.pod_id, h.pod_id),
        (Level::Cluster, r.cluster_id, h.cluster_id),
        (Level::Host, r.host_id, h.id),
    ]
    .into_iter()
    .find(|(_, want, have)| want.is_some_and(|w| w != *have));
    match miss {
        Some((level, want, _)) => {
            sink.reject(|| Reason::OutsideScope {
                level,
                wanted: want.unwrap_or_default(),
            });
            false
        }
        None => true,
    }
}

/// Only hosts that are Up and Enabled take instances; Disabled and the
/// maintenance states are skipped.
pub(crate) fn host_state<S: Sink>(cx: &Cx<'_>, hi: usize, sink: &mut S) -> bool {
    let h = &cx.snap.hosts()[hi];
    let mut ok = true;
    if h.status != HostStatus::Up {
        sink.reject(|| Reason::HostNotUp { status: h.status });
        ok = false;
        if sink.stop() {
            return false;
        }
    }
    if h.resource_state != ResourceState::Enabled {
        sink.reject(|| Reason::HostNotEnabled {
            state: h.resource_state,
        });
        ok = false;
    }
    ok
}

/// Zone, pod and cluster must be Enabled for allocation (and known: a host
/// whose cluster is missing from the snapshot cannot be judged).
pub(crate) fn allocation_state<S: Sink>(cx: &Cx<'_>, hi: usize, sink: &mut S) -> bool {
    let h = &cx.snap.hosts()[hi];
    let levels = [
        (
            Level::Zone,
            h.zone_id,
            cx.snap.host_zone(hi).map(|z| z.allocation_state),
        ),
        (
            Level::Pod,
            h.pod_id,
            cx.snap.host_pod(hi).map(|p| p.allocation_state),
        ),
        (
            Level::Cluster,
            h.cluster_id,
            cx.snap.host_cluster(hi).map(|c| c.allocation_state),
        ),
    ];
    let mut ok = true;
    for (level, id, state) in levels {
        match state {
            Some(AllocationState::Enabled) => continue,
            Some(AllocationState::Disabled) => sink.reject(|| Reason::Disabled { level, id }),
            None => sink.reject(|| Reason::Unknown { level, id }),
        }
        ok = false;
        if sink.stop() {
            break;
        }
    }
    ok
}

/// Hosts already tried for this request.
pub(crate) fn avoid<S: Sink>(cx: &Cx<'_>, hi: usize, sink: &mut S) -> bool {
    if cx.avoid.is_empty() || !cx.avoid.contains(&cx.snap.hosts()[hi].id) {
        return true;
    }
    sink.reject(|| Reason::Avoided);
    false
}

/// Every offering and template tag must be on the host. When an admin names
/// the host, CloudStack skips this check except for the strict host tags
/// (`vm.strict.host.tags`), which must match whatever the caller chose.
pub(crate) fn host_tags<S: Sink>(cx: &Cx<'_>, hi: usize, sink: &mut S) -> bool {
    let pinned = cx.req.host_id.is_some();
    let wanted = if pinned { &cx.strict_tags } else { &cx.tags };
    let mut ok = true;
    let have = &cx.snap.idx.host_tags[hi];
    for (tag, id) in wanted {
        if id.is_some_and(|id| have.contains(&id)) {
            continue;
        }
        ok = false;
        if pinned {
            sink.reject(|| Reason::MissingStrictHostTag { tag: tag.clone() });
        } else {
            sink.reject(|| Reason::MissingHostTag { tag: tag.clone() });
        }
        if sink.stop() {
            break;
        }
    }
    ok
}

/// An offering with GPUs needs that many free devices on the host.
pub(crate) fn gpu<S: Sink>(cx: &Cx<'_>, hi: usize, sink: &mut S) -> bool {
    let need = cx.req.gpu_count;
    if need == 0 {
        return true;
    }
    let (_, _, used, _) = cx.used_on(hi);
    let free = cx.snap.hosts()[hi].gpu_devices.saturating_sub(used);
    if free >= need {
        return true;
    }
    sink.reject(|| Reason::Gpu { need, free });
    false
}

/// A vGPU offering needs a device of its type the host's cards can still
/// make: what they hold in all, less what its instances hold.
pub(crate) fn vgpu<S: Sink>(cx: &Cx<'_>, hi: usize, sink: &mut S) -> bool {
    let Some(t) = cx.req.vgpu_type.as_deref() else {
        return true;
    };
    // No such type at all is the feature filter's reason.
    let Some(cap) = cx.snap.hosts()[hi].vgpu.iter().find(|v| v.is(t)) else {
        return true;
    };
    let used = cx.snap.vgpus_on(hi, cap, cx.req.vm_id);
    if used < cap.max {
        return true;
    }
    sink.reject(|| Reason::Vgpu {
        vgpu_type: t.to_string(),
        max: cap.max,
    });
    false
}

/// UEFI, secure boot and vTPM need the host's firmware and swtpm.
pub(crate) fn features<S: Sink>(cx: &Cx<'_>, hi: usize, sink: &mut S) -> bool {
    let h = &cx.snap.hosts()[hi];
    let r = cx.req;
    let missing = [
        (r.needs_uefi && !h.uefi, "UEFI firmware"),
        (
            r.needs_secure_boot && !h.secure_boot,
            "UEFI secure boot firmware",
        ),
        (r.needs_tpm && !h.tpm, "vTPM (swtpm)"),
        (
            r.vgpu_type
                .as_ref()
                .is_some_and(|t| !h.vgpu.iter().any(|v| v.is(t))),
            "the offering's vGPU type",
        ),
    ];
    let mut ok = true;
    for (miss, feature) in missing {
        if miss {
            sink.reject(|| Reason::MissingFeature { feature });
            ok = false;
        }
    }
    ok
}

/// The host must have at least as many cores as asked, each at least as fast
/// (CloudStack's "CPU capability", checked before capacity).
pub(crate) fn cpu_capability<S: Sink>(cx: &Cx<'_>, hi: usize, sink: &mut S) -> bool {
    let h = &cx.snap.hosts()[hi];
    let mut ok = true;
    if h.cpu_number < cx.req.cpu_number {
        sink.reject(|| Reason::CpuCores {
            need: cx.req.cpu_number,
            have: h.cpu_number,
        });
        ok = false;
        if sink.stop() {
            return false;
        }
    }
    if h.cpu_speed_mhz < cx.req.cpu_speed_mhz {
        sink.reject(|| Reason::CpuSpeed {
            need_mhz: cx.req.cpu_speed_mhz,
            have_mhz: h.cpu_speed_mhz,
        });
        ok = false;
    }
    ok
}

/// The hypervisor's per-host instance limit.
pub(crate) fn max_guests<S: Sink>(cx: &Cx<'_>, hi: usize, sink: &mut S) -> bool {
    let Some(limit) = cx.snap.hosts()[hi].max_guests else {
        return true;
    };
    let (_, _, _, running) = cx.used_on(hi);
    if running < limit {
        return true;
    }
    sink.reject(|| Reason::MaxGuests { limit });
    false
}

/// Strict groups: no other member of a host anti-affinity group on the host;
/// and once any member of a host affinity group is placed, only its host.
pub(crate) fn strict_affinity<S: Sink>(cx: &Cx<'_>, hi: usize, sink: &mut S) -> bool {
    let mut ok = true;
    let blocked = cx.anti_blocked.get(hi).copied().unwrap_or(false);
    for &gi in cx.anti.iter().filter(|_| blocked) {
        if let Some(instance) = cx.others_in_group_on(gi, hi).next() {
            let group = cx.snap.group_at(gi as usize).id;
            sink.reject(|| Reason::AntiAffinity { group, instance });
            ok = false;
            if sink.stop() {
                return false;
            }
        }
    }
    for target in &cx.affinity {
        // Members split over several hosts (placed before the group existed)
        // leave no host that satisfies them all.
        if let Some(&other) = target.hosts.iter().find(|&&t| t as usize != hi) {
            let host = cx.snap.hosts()[other as usize].id;
            sink.reject(|| Reason::Affinity {
                group: target.group,
                host,
            });
            ok = false;
            if sink.stop() {
                return false;
            }
        }
    }
    ok
}

/// A cluster whose allocated share of its (over-provisioned) capacity would
/// pass `cluster.{cpu,memory}.allocated.capacity.disablethreshold` with this
/// instance takes no new instances (unless `cluster.threshold.enabled` is
/// false); the arithmetic is in `request::cluster_over`.
pub(crate) fn cluster_thresholds<S: Sink>(cx: &Cx<'_>, hi: usize, sink: &mut S) -> bool {
    let Some(ci) = cx.snap.idx.links[hi].cluster else {
        return true;
    };
    let Some(over) = cx.cluster_over.get(ci as usize) else {
        return true;
    };
    let cluster = cx.snap.clusters()[ci as usize].id;
    let mut ok = true;
    if let Some((would_be, threshold)) = over.cpu {
        sink.reject(|| Reason::ClusterCpuThreshold {
            cluster,
            would_be,
            threshold,
        });
        ok = false;
        if sink.stop() {
            return false;
        }
    }
    if let Some((would_be, threshold)) = over.mem {
        sink.reject(|| Reason::ClusterMemoryThreshold {
            cluster,
            would_be,
            threshold,
        });
        ok = false;
    }
    ok
}

/// Used + requested CPU within cores × speed × `cpu.overprovisioning.factor`.
pub(crate) fn cpu_capacity<S: Sink>(cx: &Cx<'_>, hi: usize, sink: &mut S) -> bool {
    let (cap, _) = cx.capacity_of(hi);
    let (used, _, _, _) = cx.used_on(hi);
    if (used + cx.need_cpu_mhz) as f64 <= cap {
        return true;
    }
    sink.reject(|| Reason::Cpu {
        need_mhz: cx.need_cpu_mhz,
        free_mhz: (cap - used as f64).max(0.0) as u64,
    });
    false
}

/// Used + requested memory within total × `mem.overprovisioning.factor`.
pub(crate) fn memory_capacity<S: Sink>(cx: &Cx<'_>, hi: usize, sink: &mut S) -> bool {
    let (_, cap) = cx.capacity_of(hi);
    let (_, used, _, _) = cx.used_on(hi);
    if (used + cx.need_mem_mb) as f64 <= cap {
        return true;
    }
    sink.reject(|| Reason::Memory {
        need_mb: cx.need_mem_mb,
        free_mb: (cap - used as f64).max(0.0) as u64,
    });
    false
}
