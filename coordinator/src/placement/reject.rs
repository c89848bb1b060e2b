//! Why hosts were turned down, one host at a time ([`Reason`]) and summed over
//! a whole decision ([`Rejection`]), worded for an API error message.

use std::fmt;

use super::snapshot::{FxMap, HostStatus, Id, ResourceState};

/// The level of a placement pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Zone,
    Pod,
    Cluster,
    Host,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Zone => "zone",
            Self::Pod => "pod",
            Self::Cluster => "cluster",
            Self::Host => "host",
        }
    }
}

/// Why one host cannot take the instance.
#[derive(Debug, Clone, PartialEq)]
pub enum Reason {
    /// The request names a zone, pod, cluster or host this host is not in.
    OutsideScope {
        level: Level,
        wanted: Id,
    },
    /// A pod, cluster or host was named by a caller who is not an admin.
    PinRequiresAdmin,
    HostNotUp {
        status: HostStatus,
    },
    HostNotEnabled {
        state: ResourceState,
    },
    Disabled {
        level: Level,
        id: Id,
    },
    /// The host's zone, pod or cluster is missing from the snapshot.
    Unknown {
        level: Level,
        id: Id,
    },
    Avoided,
    MaxGuests {
        limit: u32,
    },
    CpuCores {
        need: u32,
        have: u32,
    },
    CpuSpeed {
        need_mhz: u32,
        have_mhz: u32,
    },
    Cpu {
        need_mhz: u64,
        free_mhz: u64,
    },
    Memory {
        need_mb: u64,
        free_mb: u64,
    },
    /// Allocating the instance would take the cluster's CPU past its disable
    /// threshold (fractions of the over-provisioned capacity).
    ClusterCpuThreshold {
        cluster: Id,
        would_be: f64,
        threshold: f64,
    },
    ClusterMemoryThreshold {
        cluster: Id,
        would_be: f64,
        threshold: f64,
    },
    MissingHostTag {
        tag: String,
    },
    /// A `vm.strict.host.tags` tag missing on a host an admin named.
    MissingStrictHostTag {
        tag: String,
    },
    Gpu {
        need: u32,
        free: u32,
    },
    /// Every device of the offering's vGPU type the host's cards hold is
    /// in use.
    Vgpu {
        vgpu_type: String,
        max: u32,
    },
    /// The instance boots with UEFI (`secure`: with secure boot) or has a
    /// vTPM, which the host's firmware or emulator does not offer.
    MissingFeature {
        feature: &'static str,
    },
    /// Another member of a strict anti-affinity group runs on the host.
    AntiAffinity {
        group: Id,
        instance: Id,
    },
    /// Members of a strict affinity group run on another host.
    Affinity {
        group: Id,
        host: Id,
    },
}

impl Reason {
    /// Reasons that read the same for many hosts share a key; the per-host
    /// numbers (free memory, conflicting instance) are folded into one group.
    fn merge_key(&self) -> (u8, i64, i64, &str) {
        use Reason::*;
        match self {
            OutsideScope { level, wanted } => (0, *level as i64, *wanted, ""),
            PinRequiresAdmin => (1, 0, 0, ""),
            HostNotUp { status } => (2, *status as i64, 0, ""),
            HostNotEnabled { state } => (3, *state as i64, 0, ""),
            Disabled { level, id } => (4, *level as i64, *id, ""),
            Unknown { level, id } => (5, *level as i64, *id, ""),
            Avoided => (6, 0, 0, ""),
            MaxGuests { .. } => (7, 0, 0, ""),
            CpuCores { need, .. } => (8, i64::from(*need), 0, ""),
            CpuSpeed { need_mhz, .. } => (9, i64::from(*need_mhz), 0, ""),
            Cpu { need_mhz, .. } => (10, *need_mhz as i64, 0, ""),
            Memory { need_mb, .. } => (11, *need_mb as i64, 0, ""),
            ClusterCpuThreshold { cluster, .. } => (12, *cluster, 0, ""),
            ClusterMemoryThreshold { cluster, .. } => (13, *cluster, 0, ""),
            MissingHostTag { tag } => (14, 0, 0, tag),
            MissingStrictHostTag { tag } => (15, 0, 0, tag),
            Gpu { need, .. } => (16, i64::from(*need), 0, ""),
            AntiAffinity { group, .. } => (17, *group, 0, ""),
            Affinity { group, .. } => (18, *group, 0, ""),
            MissingFeature { feature } => (19, 0, 0, feature),
            Vgpu { vgpu_type, max } => (20, i64::from(*max), 0, vgpu_type),
        }
    }

    /// Folds another host's reason of the same key into this one, keeping the
    /// most favourable figure (so "most free" is the best any host offered).
    fn absorb(&mut self, other: &Reason) {
        use Reason::*;
        match (self, other) {
            (MaxGuests { limit }, MaxGuests { limit: l }) => *limit = (*limit).max(*l),
            (CpuCores { have, .. }, CpuCores { have: h, .. }) => *have = (*have).max(*h),
            (CpuSpeed { have_mhz, .. }, CpuSpeed { have_mhz: h, .. }) => {
                *have_mhz = (*have_mhz).max(*h)
            }
            (Cpu { free_mhz, .. }, Cpu { free_mhz: f, .. }) => *free_mhz = (*free_mhz).max(*f),
            (Memory { free_mb, .. }, Memory { free_mb: f, .. }) => *free_mb = (*free_mb).max(*f),
            (Gpu { free, .. }, Gpu { free: f, .. }) => *free = (*free).max(*f),
            (ClusterCpuThreshold { would_be, .. }, ClusterCpuThreshold { would_be: w, .. })
            | (
                ClusterMemoryThreshold { would_be, .. },
                ClusterMemoryThreshold { would_be: w, .. },
            ) => *would_be = would_be.min(*w),
            _ => {}
        }
    }

    /// The id a grouped reason lists for each host (the conflicting instance
    /// or host), if it has one.
    fn related(&self) -> Option<Id> {
        match self {
            Reason::AntiAffinity { instance, .. } => Some(*instance),
            Reason::Affinity { host, .. } => Some(*host),
            _ => None,
        }
    }

    /// Words for `hosts` hosts; `related` lists the conflicting instances or
    /// hosts of an affinity reason.
    fn describe(&self, f: &mut fmt::Formatter<'_>, hosts: usize, related: &[Id]) -> fmt::Result {
        use Reason::*;
        let free = if hosts > 1 { "most free" } else { "free" };
        let have = if hosts > 1 { "most" } else { "host has" };
        match self {
            OutsideScope { level, wanted } => {
                write!(f, "not in the requested {} {wanted}", level.as_str())
            }
            PinRequiresAdmin => {
                f.write_str("only an administrator may choose the pod, cluster or host")
            }
            HostNotUp { status } => write!(f, "host is {status}, not Up"),
            HostNotEnabled { state } => match state {
                ResourceState::Disabled => f.write_str("host is disabled"),
                ResourceState::Maintenance
                | ResourceState::PrepareForMaintenance
                | ResourceState::ErrorInMaintenance => write!(f, "host is in {state}"),
                _ => write!(f, "host resource state is {state}"),
            },
            Disabled { level, id } => {
                write!(f, "{} {id} is disabled for allocation", level.as_str())
            }
            Unknown { level, id } => write!(f, "{} {id} is not known", level.as_str()),
            Avoided => f.write_str("already tried for this request"),
            MaxGuests { limit } => write!(f, "host runs its maximum of {limit} instances"),
            CpuCores { need, have: h } => {
                write!(f, "not enough CPU cores (need {need}, {have} {h})")
            }
            CpuSpeed { need_mhz, have_mhz } => write!(
                f,
                "CPU cores too slow (need {need_mhz} MHz, {have} {have_mhz} MHz)"
            ),
            Cpu { need_mhz, free_mhz } => write!(
                f,
                "not enough free CPU (need {need_mhz} MHz, {free} {free_mhz} MHz)"
            ),
            Memory { need_mb, free_mb } => write!(
                f,
                "not enough free memory (need {need_mb} MB, {free} {free_mb} MB)"
            ),
            ClusterCpuThreshold {
                cluster,
                would_be,
                threshold,
            } => write!(
                f,
                "cluster {cluster} would pass its CPU disable threshold ({:.1}% > {:.1}%)",
                would_be * 100.0,
                threshold * 100.0
            ),
            ClusterMemoryThreshold {
                cluster,
                would_be,
                threshold,
            } => write!(
                f,
                "cluster {cluster} would pass its memory disable threshold ({:.1}% > {:.1}%)",
                would_be * 100.0,
                threshold * 100.0
            ),
            MissingHostTag { tag } => write!(f, "missing host tag '{tag}'"),
            MissingStrictHostTag { tag } => write!(f, "missing strict host tag '{tag}'"),
            MissingFeature { feature } => write!(f, "the host offers no {feature}"),
            Gpu { need, free: fr } => {
                write!(f, "not enough free GPUs (need {need}, {free} {fr})")
            }
            Vgpu { vgpu_type, max } => {
                write!(f, "all {max} vGPUs of type '{vgpu_type}' in use")
            }
            AntiAffinity { .. } => {
                write!(f, "host anti-affinity with ")?;
                write_ids(f, "instance", related)
            }
            Affinity { .. } => {
                write!(f, "host affinity with instances on ")?;
                write_ids(f, "host", related)
            }
        }
    }
}

/// "instance 17", "instances 17, 18 and 21", "instances 1, 2, 3, 4, 5 and 9 more".
fn write_ids(f: &mut fmt::Formatter<'_>, noun: &str, ids: &[Id]) -> fmt::Result {
    const SHOWN: usize = 5;
    if ids.len() == 1 {
        return write!(f, "{noun} {}", ids[0]);
    }
    write!(f, "{noun}s ")?;
    let shown = &ids[..ids.len().min(SHOWN)];
    let last_joined = ids.len() <= SHOWN;
    for (i, id) in shown.iter().enumerate() {
        if i > 0 {
            if last_joined && i == shown.len() - 1 {
                f.write_str(" and ")?;
            } else {
                f.write_str(", ")?;
            }
        }
        write!(f, "{id}")?;
    }
    if !last_joined {
        write!(f, " and {} more", ids.len() - SHOWN)?;
    }
    Ok(())
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let related: Vec<Id> = self.related().into_iter().collect();
        self.describe(f, 1, &related)
    }
}

/// Hosts turned down for the same reason.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectionGroup {
    pub count: usize,
    /// The reason, with the most favourable figure any of these hosts had.
    pub reason: Reason,
    /// Conflicting instances (anti-affinity) or hosts (affinity), sorted.
    pub related: Vec<Id>,
}

impl fmt::Display for RejectionGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = if self.count == 1 { "" } else { "s" };
        write!(f, "{} host{s}: ", self.count)?;
        self.reason.describe(f, self.count, &self.related)
    }
}

/// No host can take the instance: how many hosts were considered, and why
/// each was turned down (each host counted once, under the first check it
/// failed), largest group first.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rejection {
    /// Hosts inside the requested zone/pod/cluster/host.
    pub hosts_in_scope: usize,
    /// Hosts outside it, not counted in `groups`.
    pub hosts_out_of_scope: usize,
    /// The narrowest pin of the request, for "no hosts in ..." wording.
    pub scope: Option<(Level, Id)>,
    pub groups: Vec<RejectionGroup>,
    /// The request was refused before any host was looked at.
    pub refused: Option<Reason>,
}

impl Rejection {
    /// How many hosts a reason of this key turned down.
    pub fn count_where(&self, pred: impl Fn(&Reason) -> bool) -> usize {
        self.groups
            .iter()
            .filter(|g| pred(&g.reason))
            .map(|g| g.count)
            .sum()
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(r) = &self.refused {
            return write!(f, "{r}");
        }
        if self.hosts_in_scope == 0 {
            return match self.scope {
                Some((level, id)) => write!(f, "no hosts in the requested {} {id}", level.as_str()),
                None => f.write_str("no hosts"),
            };
        }
        for (i, g) in self.groups.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{g}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Rejection {}

/// Accumulates per-host reasons into groups.
#[derive(Default)]
pub(crate) struct Tally {
    groups: Vec<RejectionGroup>,
    /// Numeric part of the merge key -> groups with it (more than one only
    /// for reasons told apart by text, such as the missing tag), so adding a
    /// host allocates nothing once its group exists.
    by_key: FxMap<(u8, i64, i64), Vec<usize>>,
}

impl Tally {
    pub fn add(&mut self, r: Reason) {
        let (a, b, c, text) = r.merge_key();
        let slots = self.by_key.entry((a, b, c)).or_default();
        let found = slots
            .iter()
            .copied()
            .find(|&i| self.groups[i].reason.merge_key().3 == text);
        match found {
            Some(i) => {
                let g = &mut self.groups[i];
                g.count += 1;
                g.reason.absorb(&r);
                if let Some(id) = r.related() {
                    g.related.push(id);
                }
            }
            None => {
                slots.push(self.groups.len());
                self.groups.push(RejectionGroup {
                    count: 1,
                    related: r.related().into_iter().collect(),
                    reason: r,
                });
            }
        }
    }

    /// Groups largest first; equal counts in the order the checks run, so
    /// the text is stable.
    pub fn finish(mut self) -> Vec<RejectionGroup> {
        self.groups.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.reason.merge_key().cmp(&b.reason.merge_key()))
        });
        for g in &mut self.groups {
            g.related.sort_unstable();
            g.related.dedup();
        }
        self.groups
    }
}
