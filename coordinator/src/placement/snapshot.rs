//! The immutable picture of the cloud that placement decides over, and the
//! index built from it once so that each decision costs O(hosts) rather than
//! O(hosts × instances).

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

/// Multiply-rotate hashing for the index's integer keys: several times faster
/// than SipHash per lookup, which matters at one lookup per host per group.
/// The keys are record ids the store assigns, not attacker-chosen, so
/// flooding resistance buys nothing here.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.add(u64::from(b));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn write_i64(&mut self, i: i64) {
        self.add(i as u64);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

pub(crate) type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// Record ids, as the store numbers them.
pub type Id = i64;

const MIB: u64 = 1024 * 1024;

/// `allocationstate` of a zone, pod or cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum AllocationState {
    #[default]
    Enabled,
    Disabled,
}

impl AllocationState {
    /// CloudStack spelling; anything but `Enabled` takes no new instances.
    pub fn parse(s: &str) -> Self {
        if s.eq_ignore_ascii_case("Enabled") {
            Self::Enabled
        } else {
            Self::Disabled
        }
    }
}

/// A host's connection status (CloudStack `Status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum HostStatus {
    #[default]
    Up,
    Connecting,
    Disconnected,
    Down,
    Alert,
    Error,
    Unknown,
}

impl HostStatus {
    pub fn parse(s: &str) -> Self {
        match s.to_ascii_lowercase().as_str() {
            "up" => Self::Up,
            "connecting" => Self::Connecting,
            "disconnected" => Self::Disconnected,
            "down" => Self::Down,
            "alert" => Self::Alert,
            "error" => Self::Error,
            _ => Self::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "Up",
            Self::Connecting => "Connecting",
            Self::Disconnected => "Disconnected",
            Self::Down => "Down",
            Self::Alert => "Alert",
            Self::Error => "Error",
            Self::Unknown => "Unknown",
        }
    }
}

impl fmt::Display for HostStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A host's administrative state (CloudStack `ResourceState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum ResourceState {
    #[default]
    Enabled,
    Disabled,
    PrepareForMaintenance,
    Maintenance,
    ErrorInMaintenance,
    Creating,
    Error,
    Unknown,
}

impl ResourceState {
    pub fn parse(s: &str) -> Self {
        match s.to_ascii_lowercase().as_str() {
            "enabled" => Self::Enabled,
            "disabled" => Self::Disabled,
            "prepareformaintenance" => Self::PrepareForMaintenance,
            "maintenance" => Self::Maintenance,
            "errorinmaintenance" => Self::ErrorInMaintenance,
            "creating" => Self::Creating,
            "error" => Self::Error,
            _ => Self::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enabled => "Enabled",
            Self::Disabled => "Disabled",
            Self::PrepareForMaintenance => "PrepareForMaintenance",
            Self::Maintenance => "Maintenance",
            Self::ErrorInMaintenance => "ErrorInMaintenance",
            Self::Creating => "Creating",
            Self::Error => "Error",
            Self::Unknown => "Unknown",
        }
    }
}

impl fmt::Display for ResourceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The four affinity group types CloudStack offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AffinityKind {
    /// `host anti-affinity`: members never share a host.
    HostAntiAffinity,
    /// `host affinity`: members always share one host.
    HostAffinity,
    /// `non-strict host anti-affinity`: members prefer different hosts.
    NonStrictHostAntiAffinity,
    /// `non-strict host affinity`: members prefer the same host.
    NonStrictHostAffinity,
}

impl AffinityKind {
    /// Accepts the CloudStack type names (`host anti-affinity`,
    /// `non-strict host affinity`, ...).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "host anti-affinity" => Some(Self::HostAntiAffinity),
            "host affinity" => Some(Self::HostAffinity),
            "non-strict host anti-affinity" => Some(Self::NonStrictHostAntiAffinity),
            "non-strict host affinity" => Some(Self::NonStrictHostAffinity),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::HostAntiAffinity => "host anti-affinity",
            Self::HostAffinity => "host affinity",
            Self::NonStrictHostAntiAffinity => "non-strict host anti-affinity",
            Self::NonStrictHostAffinity => "non-strict host affinity",
        }
    }

    pub fn is_strict(self) -> bool {
        matches!(self, Self::HostAntiAffinity | Self::HostAffinity)
    }
}

/// Which free capacity `firstfitleastconsumed` (and the vertical policy) sorts
/// by: CloudStack's `host.capacityType.to.order.clusters`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CapacityType {
    #[default]
    Cpu,
    Ram,
}

impl CapacityType {
    pub fn parse(s: &str) -> Self {
        if s.eq_ignore_ascii_case("RAM") {
            Self::Ram
        } else {
            Self::Cpu
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Zone {
    pub id: Id,
    pub allocation_state: AllocationState,
}

#[derive(Debug, Clone, Default)]
pub struct Pod {
    pub id: Id,
    pub zone_id: Id,
    pub allocation_state: AllocationState,
}

#[derive(Debug, Clone)]
pub struct Cluster {
    pub id: Id,
    pub zone_id: Id,
    pub pod_id: Id,
    pub allocation_state: AllocationState,
    /// `cpu.overprovisioning.factor` in force for this cluster.
    pub cpu_overprovisioning: f64,
    /// `mem.overprovisioning.factor` in force for this cluster.
    pub mem_overprovisioning: f64,
    /// Cluster-scoped `cluster.cpu.allocated.capacity.disablethreshold`;
    /// `None` uses the global value from [`Settings`].
    pub cpu_disable_threshold: Option<f64>,
    /// Cluster-scoped `cluster.memory.allocated.capacity.disablethreshold`.
    pub mem_disable_threshold: Option<f64>,
}

impl Default for Cluster {
    fn default() -> Self {
        Self {
            id: 0,
            zone_id: 0,
            pod_id: 0,
            allocation_state: AllocationState::Enabled,
            cpu_overprovisioning: 1.0,
            mem_overprovisioning: 1.0,
            cpu_disable_threshold: None,
            mem_disable_threshold: None,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Host {
    pub id: Id,
    pub name: String,
    pub zone_id: Id,
    pub pod_id: Id,
    pub cluster_id: Id,
    pub status: HostStatus,
    pub resource_state: ResourceState,
    pub cpu_number: u32,
    /// Speed of one core.
    pub cpu_speed_mhz: u32,
    pub memory_bytes: u64,
    /// Host tags; compared case-insensitively.
    pub tags: Vec<String>,
    /// GPU devices (passthrough or vGPU slots) the host offers in total; free
    /// ones are this minus what its instances hold.
    pub gpu_devices: u32,
    /// The host's `guest.os.category.id` detail: the OS category it prefers.
    pub preferred_os_category: Option<Id>,
    /// The hypervisor's per-host instance limit, when one applies.
    pub max_guests: Option<u32>,
    /// UEFI firmware (OVMF) among the host's firmware descriptors, with and
    /// without secure boot, and a vTPM emulator (swtpm).
    pub uefi: bool,
    pub secure_boot: bool,
    pub tpm: bool,
    /// vGPU (mediated device) types the host's cards offer, with how many
    /// of each they hold.
    pub vgpu: Vec<VgpuCapacity>,
}

/// One vGPU (mediated device) type a host's cards offer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VgpuCapacity {
    /// What an offering may call it: the type id and the type's name.
    pub names: Vec<String>,
    /// How many the cards hold in all, made and still to make.
    pub max: u32,
}

impl VgpuCapacity {
    /// Whether `name` (compared case-insensitively) is this type.
    pub fn is(&self, name: &str) -> bool {
        self.names.iter().any(|n| n.eq_ignore_ascii_case(name))
    }
}

/// An instance that holds, or belongs to groups that constrain, placement.
/// Instances with a `host_id` count against that host's capacity.
#[derive(Debug, Clone, Default)]
pub struct Instance {
    pub id: Id,
    pub host_id: Option<Id>,
    pub account_id: Id,
    pub cpu_number: u32,
    pub cpu_speed_mhz: u32,
    pub memory_mb: u64,
    pub gpu_count: u32,
    /// The vGPU type it holds on its host, if any.
    pub vgpu_type: Option<String>,
    pub affinity_group_ids: Vec<Id>,
    pub os_category: Option<Id>,
}

#[derive(Debug, Clone)]
pub struct AffinityGroup {
    pub id: Id,
    pub kind: AffinityKind,
    pub account_id: Id,
}

/// Global settings placement reads; defaults are CloudStack's.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `vm.allocation.algorithm` (default `random`).
    pub allocation_algorithm: String,
    /// `vm.strict.host.tags`: tags that must match even where CloudStack
    /// otherwise skips the host-tag check (an admin naming the host).
    pub strict_host_tags: Vec<String>,
    /// `resource.limit.host.tags`.
    pub resource_limit_host_tags: Vec<String>,
    /// `vm.strict.resource.limit.host.tag.check` (default true): the
    /// `resource.limit.host.tags` count as strict too.
    pub strict_resource_limit_host_tag_check: bool,
    /// `cluster.threshold.enabled` (default true).
    pub cluster_threshold_enabled: bool,
    /// `cluster.cpu.allocated.capacity.disablethreshold` (default 0.85).
    pub cpu_disable_threshold: f64,
    /// `cluster.memory.allocated.capacity.disablethreshold` (default 0.85).
    pub mem_disable_threshold: f64,
    /// `host.capacityType.to.order.clusters` (default CPU).
    pub capacity_type_to_order: CapacityType,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            allocation_algorithm: "random".into(),
            strict_host_tags: Vec::new(),
            resource_limit_host_tags: Vec::new(),
            strict_resource_limit_host_tag_check: true,
            cluster_threshold_enabled: true,
            cpu_disable_threshold: 0.85,
            mem_disable_threshold: 0.85,
            capacity_type_to_order: CapacityType::Cpu,
        }
    }
}

/// Everything a snapshot is built from.
#[derive(Debug, Clone, Default)]
pub struct SnapshotParts {
    pub zones: Vec<Zone>,
    pub pods: Vec<Pod>,
    pub clusters: Vec<Cluster>,
    pub hosts: Vec<Host>,
    pub instances: Vec<Instance>,
    pub affinity_groups: Vec<AffinityGroup>,
    pub settings: Settings,
}

/// What the instances placed on one host consume.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Usage {
    pub cpu_mhz: u64,
    pub mem_mb: u64,
    pub gpus: u32,
    pub instances: u32,
}

impl Snapshot {
    /// Instances on host `hi` holding a vGPU of type `t` (any of its
    /// names), leaving out `except`. Only vGPU requests ask, so a scan of
    /// the host's instances is cheaper than keeping an index for it.
    pub(crate) fn vgpus_on(&self, hi: usize, t: &VgpuCapacity, except: Option<Id>) -> u32 {
        self.instances
            .iter()
            .zip(&self.idx.instance_host)
            .filter(|(i, h)| {
                **h == Some(hi as u32)
                    && Some(i.id) != except
                    && i.vgpu_type.as_deref().is_some_and(|v| t.is(v))
            })
            .count() as u32
    }
}

/// A cluster's raw (not over-provisioned) totals and what is allocated in it,
/// over all its hosts, as CloudStack's threshold query sums them.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ClusterUsage {
    pub cpu_total_mhz: u64,
    pub mem_total_mb: u64,
    pub cpu_used_mhz: u64,
    pub mem_used_mb: u64,
    pub hosts: u32,
    pub instances: u32,
}

/// Per-host lookups resolved once.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct HostLinks {
    pub zone: Option<u32>,
    pub pod: Option<u32>,
    pub cluster: Option<u32>,
}

#[derive(Debug, Default)]
pub(crate) struct Index {
    pub host_by_id: FxMap<Id, u32>,
    pub instance_by_id: FxMap<Id, u32>,
    pub group_by_id: FxMap<Id, u32>,
    pub cluster_by_id: FxMap<Id, u32>,
    pub links: Vec<HostLinks>,
    /// Per host: CPU (MHz) and memory (MB) capacity after the cluster's
    /// over-provisioning factors (raw when the cluster is unknown).
    pub capacity: Vec<(f64, f64)>,
    pub usage: Vec<Usage>,
    pub cluster_usage: Vec<ClusterUsage>,
    /// Per affinity group: host index -> ids of the members placed there.
    pub group_members: Vec<FxMap<u32, Vec<Id>>>,
    /// Per account: host index -> how many of its instances run there.
    pub account_hosts: FxMap<Id, FxMap<u32, u32>>,
    /// Per account: pod id -> how many of its instances run there.
    pub account_pods: FxMap<Id, FxMap<Id, u32>>,
    /// Resolved host index of each instance.
    pub instance_host: Vec<Option<u32>>,
    /// The strict host tags in force (normalised).
    pub strict_tags: Vec<String>,
    /// Every host tag, numbered, so the per-host check compares integers.
    pub tag_ids: HashMap<String, u32>,
    /// Per host: its tags' numbers.
    pub host_tags: Vec<Box<[u32]>>,
}

/// An immutable cluster snapshot plus its index. Build it once per batch of
/// decisions; [`plan`](super::plan) never mutates it.
#[derive(Debug)]
pub struct Snapshot {
    zones: Vec<Zone>,
    pods: Vec<Pod>,
    clusters: Vec<Cluster>,
    hosts: Vec<Host>,
    instances: Vec<Instance>,
    groups: Vec<AffinityGroup>,
    settings: Settings,
    pub(crate) idx: Index,
}

/// Host tags are matched case-insensitively, as the rest of the API treats
/// them; blank entries from "a,,b" lists mean nothing.
pub(crate) fn normalise_tags<'a>(tags: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    let mut v: Vec<String> = tags
        .into_iter()
        .map(|t| t.trim().to_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    v.sort();
    v.dedup();
    v
}

impl Snapshot {
    pub fn new(parts: SnapshotParts) -> Self {
        let SnapshotParts {
            zones,
            pods,
            clusters,
            mut hosts,
            mut instances,
            affinity_groups: groups,
            mut settings,
        } = parts;
        for h in &mut hosts {
            h.tags = normalise_tags(&h.tags);
        }
        // A membership listed twice is still one member.
        for i in &mut instances {
            i.affinity_group_ids.sort_unstable();
            i.affinity_group_ids.dedup();
        }
        settings.strict_host_tags = normalise_tags(&settings.strict_host_tags);
        settings.resource_limit_host_tags = normalise_tags(&settings.resource_limit_host_tags);
        let mut strict_tags = settings.strict_host_tags.clone();
        if settings.strict_resource_limit_host_tag_check {
            strict_tags.extend(settings.resource_limit_host_tags.iter().cloned());
        }
        let strict_tags = normalise_tags(&strict_tags);

        let zone_by_id: FxMap<Id, u32> = enumerate_ids(zones.iter().map(|z| z.id));
        let pod_by_id: FxMap<Id, u32> = enumerate_ids(pods.iter().map(|p| p.id));
        let cluster_by_id: FxMap<Id, u32> = enumerate_ids(clusters.iter().map(|c| c.id));
        let host_by_id: FxMap<Id, u32> = enumerate_ids(hosts.iter().map(|h| h.id));
        let instance_by_id: FxMap<Id, u32> = enumerate_ids(instances.iter().map(|i| i.id));
        let group_by_id: FxMap<Id, u32> = enumerate_ids(groups.iter().map(|g| g.id));

        let links: Vec<HostLinks> = hosts
            .iter()
            .map(|h| HostLinks {
                zone: zone_by_id.get(&h.zone_id).copied(),
                pod: pod_by_id.get(&h.pod_id).copied(),
                cluster: cluster_by_id.get(&h.cluster_id).copied(),
            })
            .collect();

        let mut tag_ids: HashMap<String, u32> = HashMap::new();
        let host_tags: Vec<Box<[u32]>> = hosts
            .iter()
            .map(|h| {
                h.tags
                    .iter()
                    .map(|t| {
                        let next = tag_ids.len() as u32;
                        *tag_ids.entry(t.clone()).or_insert(next)
                    })
                    .collect()
            })
            .collect();

        let capacity: Vec<(f64, f64)> = hosts
            .iter()
            .zip(&links)
            .map(|(h, l)| {
                let (cf, mf) = l
                    .cluster
                    .map(|c| &clusters[c as usize])
                    .map_or((1.0, 1.0), |c| {
                        (c.cpu_overprovisioning, c.mem_overprovisioning)
                    });
                (
                    h.cpu_mhz_total() as f64 * cf,
                    h.memory_mb_total() as f64 * mf,
                )
            })
            .collect();

        let mut cluster_usage = vec![ClusterUsage::default(); clusters.len()];
        for (h, l) in hosts.iter().zip(&links) {
            if let Some(c) = l.cluster {
                let cu = &mut cluster_usage[c as usize];
                cu.cpu_total_mhz += u64::from(h.cpu_number) * u64::from(h.cpu_speed_mhz);
                cu.mem_total_mb += h.memory_bytes / MIB;
                cu.hosts += 1;
            }
        }

        let mut usage = vec![Usage::default(); hosts.len()];
        let mut group_members: Vec<FxMap<u32, Vec<Id>>> = vec![FxMap::default(); groups.len()];
        let mut account_hosts: FxMap<Id, FxMap<u32, u32>> = FxMap::default();
        let mut account_pods: FxMap<Id, FxMap<Id, u32>> = FxMap::default();
        let mut instance_host = Vec::with_capacity(instances.len());
        for inst in &instances {
            let hi = inst.host_id.and_then(|h| host_by_id.get(&h).copied());
            instance_host.push(hi);
            let Some(hi) = hi else { continue };
            let cpu = inst.cpu_mhz_total();
            let u = &mut usage[hi as usize];
            u.cpu_mhz += cpu;
            u.mem_mb += inst.memory_mb;
            u.gpus += inst.gpu_count;
            u.instances += 1;
            if let Some(c) = links[hi as usize].cluster {
                let cu = &mut cluster_usage[c as usize];
                cu.cpu_used_mhz += cpu;
                cu.mem_used_mb += inst.memory_mb;
                cu.instances += 1;
            }
            *account_hosts
                .entry(inst.account_id)
                .or_default()
                .entry(hi)
                .or_default() += 1;
            *account_pods
                .entry(inst.account_id)
                .or_default()
                .entry(hosts[hi as usize].pod_id)
                .or_default() += 1;
            for g in &inst.affinity_group_ids {
                if let Some(&gi) = group_by_id.get(g) {
                    group_members[gi as usize]
                        .entry(hi)
                        .or_default()
                        .push(inst.id);
                }
            }
        }
        for members in &mut group_members {
            for ids in members.values_mut() {
                ids.sort_unstable();
            }
        }

        Self {
            idx: Index {
                host_by_id,
                instance_by_id,
                group_by_id,
                cluster_by_id,
                links,
                capacity,
                usage,
                cluster_usage,
                group_members,
                account_hosts,
                account_pods,
                instance_host,
                strict_tags,
                tag_ids,
                host_tags,
            },
            zones,
            pods,
            clusters,
            hosts,
            instances,
            groups,
            settings,
        }
    }

    pub fn zones(&self) -> &[Zone] {
        &self.zones
    }
    pub fn pods(&self) -> &[Pod] {
        &self.pods
    }
    pub fn clusters(&self) -> &[Cluster] {
        &self.clusters
    }
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }
    pub fn instances(&self) -> &[Instance] {
        &self.instances
    }
    pub fn affinity_groups(&self) -> &[AffinityGroup] {
        &self.groups
    }
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn host(&self, id: Id) -> Option<&Host> {
        self.idx
            .host_by_id
            .get(&id)
            .map(|&i| &self.hosts[i as usize])
    }
    pub fn cluster(&self, id: Id) -> Option<&Cluster> {
        self.idx
            .cluster_by_id
            .get(&id)
            .map(|&i| &self.clusters[i as usize])
    }
    pub fn instance(&self, id: Id) -> Option<&Instance> {
        self.idx
            .instance_by_id
            .get(&id)
            .map(|&i| &self.instances[i as usize])
    }
    pub fn affinity_group(&self, id: Id) -> Option<&AffinityGroup> {
        self.idx
            .group_by_id
            .get(&id)
            .map(|&i| &self.groups[i as usize])
    }

    /// The strict host tags in force: `vm.strict.host.tags`, plus
    /// `resource.limit.host.tags` when `vm.strict.resource.limit.host.tag.check`.
    pub fn strict_host_tags(&self) -> &[String] {
        &self.idx.strict_tags
    }

    /// CPU (MHz) and memory (MB) the instances on a host hold, and how many
    /// instances run there.
    pub fn host_usage(&self, host_id: Id) -> Option<(u64, u64, u32)> {
        let i = *self.idx.host_by_id.get(&host_id)? as usize;
        let u = self.idx.usage[i];
        Some((u.cpu_mhz, u.mem_mb, u.instances))
    }

    pub(crate) fn host_cluster(&self, hi: usize) -> Option<&Cluster> {
        self.idx.links[hi]
            .cluster
            .map(|c| &self.clusters[c as usize])
    }
    pub(crate) fn host_pod(&self, hi: usize) -> Option<&Pod> {
        self.idx.links[hi].pod.map(|p| &self.pods[p as usize])
    }
    pub(crate) fn host_zone(&self, hi: usize) -> Option<&Zone> {
        self.idx.links[hi].zone.map(|z| &self.zones[z as usize])
    }
    pub(crate) fn group_at(&self, gi: usize) -> &AffinityGroup {
        &self.groups[gi]
    }
    pub(crate) fn instance_at(&self, ii: usize) -> &Instance {
        &self.instances[ii]
    }
}

impl Instance {
    /// CPU the instance reserves: cores × per-core speed.
    pub fn cpu_mhz_total(&self) -> u64 {
        u64::from(self.cpu_number) * u64::from(self.cpu_speed_mhz)
    }
}

impl Host {
    /// Raw CPU capacity before over-provisioning.
    pub fn cpu_mhz_total(&self) -> u64 {
        u64::from(self.cpu_number) * u64::from(self.cpu_speed_mhz)
    }
    /// Raw memory before over-provisioning, in MB.
    pub fn memory_mb_total(&self) -> u64 {
        self.memory_bytes / MIB
    }
}

/// Ids are unique in a consistent snapshot; should one repeat, the first
/// record wins so lookups stay deterministic.
fn enumerate_ids(ids: impl Iterator<Item = Id>) -> FxMap<Id, u32> {
    let mut m = FxMap::default();
    for (i, id) in ids.enumerate() {
        m.entry(id).or_insert(i as u32);
    }
    m
}
