//! The narrow interface the agent's operations layer uses to run domains.
//! `libvirt/` is the only code that names the `virt` crate; `fake` stands in
//! for it in fast unit tests.

pub mod codes;
pub mod fake;
pub mod libvirt;

use crate::designer::HostFacts as DesignFacts;
use async_trait::async_trait;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    On,
    Off,
    /// Paused, crashed, suspended: present but not running normally.
    Other,
}

/// One domain as the hypervisor reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainInfo {
    pub name: String,
    /// The coordinator's instance uuid, from the domain's Orrery metadata;
    /// None for domains Orrery did not create.
    pub instance_uuid: Option<String>,
    pub power: Power,
}

/// What the host offers: the designer's facts plus capacity.
#[derive(Debug, Clone)]
pub struct HostInfo {
    pub hostname: String,
    pub cpus: u32,
    pub cpu_mhz: u64,
    pub cpu_model: String,
    pub memory_bytes: u64,
    pub libvirt_version: String,
    pub design: DesignFacts,
    /// uid and gid of the QEMU processes the hypervisor starts; None when it
    /// does not say (drivers other than QEMU).
    pub emulator_user: Option<(u32, u32)>,
}

/// Every libvirt network Orrery creates is named with this prefix, so one
/// left behind can be told from the host's own.
pub const NETWORK_PREFIX: &str = "orrery-";

/// A guest network realised on the host (a libvirt network with DHCP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkDef {
    /// libvirt network name, e.g. `orrery-<first 8 of uuid>`
    pub name: String,
    pub bridge: String,
    pub gateway: String,
    pub netmask: String,
    pub dhcp_start: String,
    pub dhcp_end: String,
}

/// A DHCP reservation: the guest with this MAC gets this address and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpHost {
    pub mac: String,
    pub ip: String,
    pub name: String,
}

/// Counters of one active domain as the hypervisor keeps them. They are
/// cumulative since the domain started, so rates need two samples and the
/// run they belong to; see [`crate::stats::Sampler`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DomainCounters {
    pub name: String,
    /// As in [`DomainInfo`]: None for domains Orrery did not create.
    pub instance_uuid: Option<String>,
    /// Changes every time the domain starts (libvirt's domain id), so a
    /// restart is seen even when the new run's counters have already grown
    /// past the old ones.
    pub run_id: Option<u32>,
    /// Guest CPU time, vCPU threads and QEMU's own together.
    pub cpu_time_ns: Option<u64>,
    /// vCPUs currently online.
    pub vcpus: Option<u32>,
    pub memory: MemoryCounters,
    pub nics: Vec<NicCounters>,
    /// Empty unless disk statistics were asked for.
    pub disks: Vec<DiskCounters>,
}

/// Memory figures in KiB; 0 where the guest or hypervisor does not say
/// (the guest-side ones need a balloon driver in the guest).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryCounters {
    /// What the balloon currently leaves the guest.
    pub current_kib: u64,
    /// The domain's defined memory, which the balloon returns to when it
    /// is not asked to shrink the guest.
    pub maximum_kib: u64,
    /// Left completely unused inside the guest.
    pub unused_kib: u64,
    /// Resident on the host (the QEMU process).
    pub rss_kib: u64,
}

/// One network interface's traffic, counted from the guest's side.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NicCounters {
    /// The host-side device (e.g. `vnet3`).
    pub device: String,
    /// None when the domain's definition does not tie a MAC to the device.
    pub mac: Option<String>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
}

/// One disk's I/O and size.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskCounters {
    /// The guest-side target (e.g. `vda`).
    pub target: String,
    /// The file or device backing the disk; None for an empty drive.
    pub path: Option<String>,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub read_ops: u64,
    pub write_ops: u64,
    /// Host bytes the image takes (a file's size, a device's).
    pub allocation_bytes: u64,
    /// The size the guest sees.
    pub capacity_bytes: u64,
}

/// How a running domain moves to another host (peer to peer: this host's
/// libvirt talks to the destination's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationPlan {
    /// The destination's libvirt, e.g. `qemu+tls://10.0.0.2/system`.
    pub destination_uri: String,
    /// Where QEMU's migration stream goes (`tcp://10.0.0.2`); None lets
    /// libvirt derive it from the destination's host name.
    pub migrate_uri: Option<String>,
    /// QEMU's own TLS on the migration stream.
    pub tls: bool,
    /// Copy every disk (the destination has its own storage).
    pub copy_storage: bool,
    /// The disks are on storage both hosts share, although libvirt may not
    /// be able to tell.
    pub shared_storage: bool,
    pub max_downtime_ms: Option<u64>,
    /// Bandwidth cap in MiB/s.
    pub bandwidth_mib: Option<u64>,
    /// The domain's definition on the destination, live and persistent,
    /// when it differs from the one here (disks in other directories);
    /// None keeps it as it is.
    pub dest_xml: Option<String>,
    /// With `copy_storage`, the disks (targets, e.g. `vda`) whose contents
    /// are copied; empty copies every disk not on shared storage.
    pub migrate_disks: Vec<String>,
}

/// How far a running job (a migration) has come, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobProgress {
    /// Bytes sent so far.
    pub processed: u64,
    pub total: u64,
    /// Bytes still to send, where the hypervisor says.
    pub remaining: Option<u64>,
}

impl JobProgress {
    /// Whole percent done, 0 while the total is unknown. The part already
    /// covered (total less remaining) counts where it is known: a guest's
    /// untouched memory is sent as a marker per page, so the bytes sent
    /// alone lag far behind how much of the guest has been copied.
    pub fn percent(&self) -> u32 {
        if self.total == 0 {
            return 0;
        }
        let covered = self
            .remaining
            .map(|r| self.total.saturating_sub(r))
            .unwrap_or(0)
            .max(self.processed)
            .min(self.total);
        ((covered as u128 * 100) / self.total as u128) as u32
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HvError {
    #[error("domain {0} not found")]
    NotFound(String),
    #[error("operation timed out: {0}")]
    Timeout(String),
    #[error("invalid request: {0}")]
    Invalid(String),
    /// Any other hypervisor failure; `code` is libvirt's error code when there is one.
    #[error("hypervisor error {code}: {message}")]
    Backend { code: i32, message: String },
}

impl HvError {
    /// A stable name for the protocol's `error_code`.
    pub fn code(&self) -> &'static str {
        match self {
            HvError::NotFound(_) => "not-found",
            HvError::Timeout(_) => "timeout",
            HvError::Invalid(_) => "invalid",
            // The coordinator explains this one to the user (a quiesce
            // needs the guest agent).
            e @ HvError::Backend { .. } if e.is_guest_agent_missing() => "guest-agent",
            HvError::Backend { .. } => "hypervisor",
        }
    }
}

#[async_trait]
pub trait Hypervisor: Send + Sync {
    async fn host_info(&self) -> Result<HostInfo, HvError>;
    async fn domains(&self) -> Result<Vec<DomainInfo>, HvError>;
    async fn power(&self, name: &str) -> Result<Power, HvError>;
    /// Defines (or redefines) a persistent domain from XML.
    async fn define(&self, xml: &str) -> Result<(), HvError>;
    async fn start(&self, name: &str) -> Result<(), HvError>;
    /// ACPI shutdown, waiting up to `timeout` for the guest to power off, then
    /// a hard stop.
    async fn shutdown(&self, name: &str, timeout: Duration) -> Result<(), HvError>;
    /// Hard stop at once.
    async fn destroy(&self, name: &str) -> Result<(), HvError>;
    /// Guest reboot without redefining the domain.
    async fn reboot(&self, name: &str) -> Result<(), HvError>;
    /// Removes the persistent definition (and NVRAM); the domain must be off.
    async fn undefine(&self, name: &str) -> Result<(), HvError>;
    async fn domain_xml(&self, name: &str) -> Result<String, HvError>;
    /// The running domain's definition as another host is to get it:
    /// without what only this host's hypervisor adds, and with its secrets
    /// (the VNC password), which [`Hypervisor::domain_xml`] leaves out.
    async fn migratable_xml(&self, name: &str) -> Result<String, HvError>;
    /// Creates and starts the network when missing; leaves a matching one alone.
    async fn ensure_network(&self, net: &NetworkDef) -> Result<(), HvError>;
    /// Adds or replaces the reservation for `host.mac` on a running network.
    async fn set_dhcp_host(&self, network: &str, host: &DhcpHost) -> Result<(), HvError>;
    async fn remove_dhcp_host(&self, network: &str, mac: &str) -> Result<(), HvError>;
    /// Hot-plugs / unplugs a device given as XML on a running domain (and in its
    /// persistent definition).
    async fn attach_device(&self, name: &str, xml: &str) -> Result<(), HvError>;
    async fn detach_device(&self, name: &str, xml: &str) -> Result<(), HvError>;
    /// Sets how many of a running domain's vCPUs are online, in the guest
    /// and in its persistent definition; at most the count it was defined
    /// with.
    async fn set_vcpus(&self, name: &str, vcpus: u32) -> Result<(), HvError>;
    /// Tells a running domain its disk `target` (e.g. vdb) grew to `bytes`.
    async fn block_resize(&self, name: &str, target: &str, bytes: u64) -> Result<(), HvError>;
    /// Counters of every active (running or paused) domain, read in one
    /// pass. `disks` asks for disk statistics too; they cost the hypervisor
    /// a query per disk, so callers ask only when they report them.
    async fn domain_counters(&self, disks: bool) -> Result<Vec<DomainCounters>, HvError>;
    /// Starts a throwaway KVM guest without disks, with the CPU the designer
    /// gives KVM guests, and destroys it again. The error says why the
    /// guest did not run (see [`crate::accel`]).
    async fn probe_kvm(&self) -> Result<(), HvError>;
    /// Live-migrates a running domain as `plan` says, leaving it persistent
    /// on the destination and undefined here. On failure the domain keeps
    /// running here.
    async fn migrate(&self, name: &str, plan: &MigrationPlan) -> Result<(), HvError>;
    /// Aborts the domain's running job (a migration); the domain stays here.
    async fn abort_job(&self, name: &str) -> Result<(), HvError>;
    /// Progress of the domain's running job; None when none runs.
    async fn job_progress(&self, name: &str) -> Result<Option<JobProgress>, HvError>;
    /// An internal snapshot `snap`, with memory, of a running domain; the
    /// hypervisor's record of it, which [`Hypervisor::revert_with_memory`]
    /// takes back on a host that lacks it.
    async fn snapshot_with_memory(&self, name: &str, snap: &str) -> Result<String, HvError>;
    /// An internal snapshot `snap` of a running domain's disks, all at one
    /// instant; the guest runs on.
    async fn snapshot_disks(&self, name: &str, snap: &str) -> Result<(), HvError>;
    /// Puts a running domain back into a snapshot with memory; it runs on
    /// from there.
    async fn revert_with_memory(&self, name: &str, snap: &str, saved: &str) -> Result<(), HvError>;
    /// Removes a snapshot from a running domain's disks (and any record of
    /// it); disks without it are skipped.
    async fn delete_snapshot_live(&self, name: &str, snap: &str) -> Result<(), HvError>;
    /// Drops the hypervisor's record of a snapshot of a domain that is off
    /// (the disks are the caller's); none is fine.
    async fn forget_snapshot(&self, name: &str, snap: &str) -> Result<(), HvError>;
    /// Drops the hypervisor's records of all the domain's snapshots (the
    /// disks keep them); how many there were.
    async fn forget_snapshots(&self, name: &str) -> Result<u32, HvError>;
    /// Freezes (`true`) or thaws the guest's file systems through its guest
    /// agent; how many it acted on. A guest without an agent answers with
    /// an error for which [`HvError::is_guest_agent_missing`] holds.
    async fn fs_freeze(&self, name: &str, freeze: bool) -> Result<u32, HvError>;
}
