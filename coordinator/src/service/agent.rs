//! How the coordinator reaches hosts: the `AgentClient` trait, and the simulated
//! host set that stands behind it when hosts are simulated (like CloudStack's
//! Simulator hypervisor). Simulated instances change power state a little after
//! the request, as real ones do.

use async_trait::async_trait;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerState {
    On,
    Off,
    Missing,
}

/// Everything a host needs to (re)define and start an instance, rendered from
/// the stored record on every start.
#[derive(Debug, Clone, Default)]
pub struct VmSpec {
    pub instance_name: String,
    pub uuid: String,
    pub name: String,
    pub display_name: String,
    pub os_type: String,
    pub cpu_number: i64,
    pub cpu_speed: i64,
    pub memory_mb: i64,
    pub volumes: Vec<VolumeSpec>,
    pub template: Option<TemplateRef>,
    pub iso: Option<TemplateRef>,
    pub nics: Vec<NicSpec>,
    pub vnc_password: String,
    pub details: std::collections::BTreeMap<String, String>,
    pub extraconfig: Vec<String>,
    pub smbios_manufacturer: String,
    pub smbios_product: String,
    pub uefi: bool,
    pub secure_boot: bool,
    pub tpm: bool,
    /// Dynamically scalable instances: the most vCPUs and MB they may be
    /// scaled to while running; 0 when not scalable.
    pub max_cpu: i64,
    pub max_memory_mb: i64,
    pub metadata: GuestMetadata,
    /// Whole GPUs, or a vGPU type, from the offering.
    pub gpu_count: i64,
    pub vgpu_type: Option<String>,
    pub gpu_display: bool,
}

/// What an instance learns about itself from its host's metadata service
/// (and its config drive): CloudStack's metadata files, its user data and
/// keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestMetadata {
    /// (file, content) in the order `/latest/meta-data/` lists them.
    pub entries: Vec<(String, String)>,
    /// Decoded user data; empty when there is none.
    pub user_data: Vec<u8>,
    /// Whether the host attaches a config drive.
    pub config_drive: bool,
    pub uuid: String,
    pub hostname: String,
    pub availability_zone: String,
    pub public_keys: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct TemplateRef {
    pub uuid: String,
    pub format: String,
    pub checksum: String,
    pub size: i64,
}

#[derive(Debug, Clone, Default)]
pub struct NicSpec {
    pub mac: String,
    pub ip: String,
    pub is_default: bool,
    pub network: NetSpec,
}

#[derive(Debug, Clone, Default)]
pub struct NetSpec {
    pub uuid: String,
    pub name: String,
    pub gateway: String,
    pub netmask: String,
    pub start_ip: String,
    pub end_ip: String,
    pub dns: String,
}

/// A volume as a host sees it.
#[derive(Debug, Clone, Default)]
pub struct VolumeSpec {
    pub uuid: String,
    /// ROOT or DATADISK
    pub kind: String,
    pub device_id: i64,
    pub size: i64,
    /// Where the host keeps the file: "" its (shared) primary directory,
    /// "local" its own local directory.
    pub pool: String,
    /// A volume not made yet that starts from this volume snapshot (uuid).
    pub from_snapshot: String,
}

/// Where an instance's VNC console listens on its host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleTarget {
    pub host: String,
    pub port: u16,
    /// VNC wants TLS with a client certificate from the Orrery CA.
    pub tls: bool,
}

/// Hears a long command's percent done.
pub type Progress = std::sync::Arc<dyn Fn(u32) + Send + Sync>;

/// How the source host moves a running instance to the destination.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrateCmd {
    pub instance: String,
    /// The destination's libvirt (`qemu+tls://ADDRESS/system`).
    pub destination_uri: String,
    /// Where QEMU's migration stream goes (`tcp://ADDRESS`).
    pub migrate_uri: String,
    pub tls: bool,
    pub copy_storage: bool,
    pub shared_storage: bool,
    /// `migratewait`: the source aborts past it and keeps the instance.
    pub timeout: Duration,
    pub max_downtime_ms: u32,
    /// `vm.migrate.speed` in MiB/s; 0 is unlimited.
    pub bandwidth_mib: u32,
    /// Volumes whose files move: (uuid, destination pool, current pool).
    pub moves: Vec<(String, String, String)>,
}

/// What an investigating host sees of another host's storage heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeartbeatSeen {
    /// The suspect's host uuid.
    pub host: String,
    /// The record exists on the investigator's shared pool.
    pub found: bool,
    /// Time since the investigator last saw the record change.
    pub age_ms: u64,
    /// The lease time the writer announced.
    pub lease_ms: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    #[error("host {0} is not connected")]
    NotConnected(i64),
    #[error("host {host} failed: {reason}")]
    Failed { host: i64, reason: String },
    #[error("host {0} did not answer before the deadline")]
    Timeout(i64),
    /// The instance's guest agent, needed for this, does not answer.
    #[error("host {host}: the instance's guest agent does not answer: {reason}")]
    GuestAgent { host: i64, reason: String },
}

/// An instance snapshot operation for a host: the snapshot's name inside
/// each of the instance's volumes.
#[derive(Debug, Clone, Default)]
pub struct VmSnapshotCmd {
    pub instance: String,
    pub snapshot: String,
    pub memory: bool,
    pub quiesce: bool,
    pub volumes: Vec<VolumeSpec>,
    /// For a revert with memory: the hypervisor's record from creation.
    pub saved: String,
}

#[async_trait]
pub trait AgentClient: Send + Sync {
    async fn start(&self, host_id: i64, spec: &VmSpec) -> Result<(), AgentError>;
    async fn stop(&self, host_id: i64, instance: &str, forced: bool) -> Result<(), AgentError>;
    async fn reboot(&self, host_id: i64, instance: &str) -> Result<(), AgentError>;
    /// Removes the instance and its disks from the host.
    async fn expunge(&self, host_id: i64, instance: &str) -> Result<(), AgentError>;
    async fn power_state(&self, host_id: i64, instance: &str) -> Result<PowerState, AgentError>;
    /// Hot-plugs a data volume into a running instance.
    async fn attach_volume(
        &self,
        host_id: i64,
        instance: &str,
        vol: &VolumeSpec,
    ) -> Result<(), AgentError>;
    async fn detach_volume(
        &self,
        host_id: i64,
        instance: &str,
        vol: &VolumeSpec,
    ) -> Result<(), AgentError>;
    /// Grows (or shrinks) a volume of a running instance to `vol.size`.
    async fn resize_volume(
        &self,
        host_id: i64,
        instance: &str,
        vol: &VolumeSpec,
    ) -> Result<(), AgentError>;
    /// Issues the host a new certificate over its live connection; returns it.
    async fn renew_certificate(&self, host_id: i64) -> Result<String, AgentError>;
    /// Deletes the file of a volume of an instance that is not running there,
    /// so its next start recreates it (a root volume from the template).
    async fn reset_volume(
        &self,
        host_id: i64,
        instance: &str,
        vol: &VolumeSpec,
    ) -> Result<(), AgentError>;
    /// Copies a volume as it is now into secondary storage under upload
    /// grant `grant` (a running instance's file systems frozen around the
    /// instant when `quiesce`); the bytes the host sent.
    async fn backup_volume(
        &self,
        host_id: i64,
        instance: &str,
        vol: &VolumeSpec,
        quiesce: bool,
        grant: &str,
    ) -> Result<u64, AgentError>;
    /// Replaces a volume's content with a volume snapshot; its instance is
    /// not running.
    async fn restore_volume(
        &self,
        host_id: i64,
        instance: &str,
        vol: &VolumeSpec,
        snapshot_uuid: &str,
    ) -> Result<(), AgentError>;
    /// Moves a volume's file between two pools of one host while its
    /// instance (if any, `instance` empty otherwise) is not running.
    async fn move_volume(
        &self,
        host_id: i64,
        instance: &str,
        vol: &VolumeSpec,
        to_pool: &str,
    ) -> Result<(), AgentError>;
    /// Raises a running instance's vCPUs and memory in place.
    async fn scale(
        &self,
        host_id: i64,
        instance: &str,
        cpu_number: i64,
        memory_mb: i64,
    ) -> Result<(), AgentError>;
    /// Readies the destination for an incoming instance (networks, DHCP,
    /// and with `copy_storage` its volume files).
    async fn prepare_migration(
        &self,
        host_id: i64,
        spec: &VmSpec,
        copy_storage: bool,
    ) -> Result<(), AgentError>;
    /// Hands the host an instance's new metadata (keys, user data): its
    /// metadata service answers with it at once.
    async fn update_metadata(
        &self,
        host_id: i64,
        instance: &str,
        meta: &GuestMetadata,
    ) -> Result<(), AgentError>;
    /// Where a running instance's console listens.
    async fn console(&self, host_id: i64, instance: &str) -> Result<ConsoleTarget, AgentError>;
    /// Takes an instance snapshot; with memory, returns the hypervisor's
    /// record of it (kept for a revert on another host).
    async fn create_vm_snapshot(
        &self,
        host_id: i64,
        cmd: &VmSnapshotCmd,
    ) -> Result<Option<String>, AgentError>;
    /// Reverts to one: with memory the instance runs (it was started
    /// first) and goes on in the saved state; disks only it is off.
    async fn revert_vm_snapshot(&self, host_id: i64, cmd: &VmSnapshotCmd)
        -> Result<(), AgentError>;
    /// Removes one from every volume that has it.
    async fn delete_vm_snapshot(&self, host_id: i64, cmd: &VmSnapshotCmd)
        -> Result<(), AgentError>;
    /// Moves a running instance from `source` to `destination`; on failure
    /// it keeps running on the source. `progress` hears the percent done as
    /// the source reports it.
    async fn migrate(
        &self,
        source: i64,
        destination: i64,
        cmd: &MigrateCmd,
        progress: Progress,
    ) -> Result<(), AgentError>;
    /// Removes what a preparation left on a destination after a failed
    /// migration (never a running domain).
    async fn cleanup_migration(
        &self,
        host_id: i64,
        instance: &str,
        instance_uuid: &str,
        volume_uuids: &[String],
        pool: &str,
    ) -> Result<(), AgentError>;
    /// Asks `investigator` how it sees the suspects' storage heartbeats
    /// (by host uuid), in one round trip.
    async fn investigate(
        &self,
        investigator: i64,
        _suspects: &[String],
    ) -> Result<Vec<HeartbeatSeen>, AgentError> {
        Err(AgentError::NotConnected(investigator))
    }
    /// How long ago the host's agent last said anything on its stream;
    /// `None` when it has not since this process started.
    fn silence(&self, _host_id: i64) -> Option<Duration> {
        None
    }
    /// Whether this process holds a live session with the host now.
    fn has_session(&self, _host_id: i64) -> bool {
        false
    }
    /// Drops a host's live connection, if any (the host was removed).
    fn disconnect(&self, _host_id: i64) {}
    /// Agents connected now.
    fn connected_agents(&self) -> usize {
        0
    }
}

/// Simulated hosts. State lives in memory, as it would on a real host: after a
/// coordinator restart the simulator has forgotten its instances, so the
/// coordinator's reconcile treats them as powered off.
pub struct Simulator {
    delay: Duration,
    vms: Mutex<HashMap<(i64, String), PowerState>>,
}

impl Simulator {
    pub fn new(delay: Duration) -> Self {
        Simulator {
            delay,
            vms: Mutex::new(HashMap::new()),
        }
    }

    fn set(&self, host: i64, name: &str, st: PowerState) {
        self.vms.lock().insert((host, name.to_string()), st);
    }
}

#[async_trait]
impl AgentClient for Simulator {
    async fn start(&self, host_id: i64, spec: &VmSpec) -> Result<(), AgentError> {
        tokio::time::sleep(self.delay).await;
        self.set(host_id, &spec.instance_name, PowerState::On);
        Ok(())
    }
    async fn stop(&self, host_id: i64, instance: &str, forced: bool) -> Result<(), AgentError> {
        if !forced {
            tokio::time::sleep(self.delay).await;
        }
        self.set(host_id, instance, PowerState::Off);
        Ok(())
    }
    async fn reboot(&self, host_id: i64, instance: &str) -> Result<(), AgentError> {
        tokio::time::sleep(self.delay).await;
        self.set(host_id, instance, PowerState::On);
        Ok(())
    }
    async fn expunge(&self, host_id: i64, instance: &str) -> Result<(), AgentError> {
        self.vms.lock().remove(&(host_id, instance.to_string()));
        Ok(())
    }
    async fn power_state(&self, host_id: i64, instance: &str) -> Result<PowerState, AgentError> {
        Ok(self
            .vms
            .lock()
            .get(&(host_id, instance.to_string()))
            .copied()
            .unwrap_or(PowerState::Missing))
    }
    async fn attach_volume(
        &self,
        host_id: i64,
        instance: &str,
        _vol: &VolumeSpec,
    ) -> Result<(), AgentError> {
        self.running(host_id, instance).await
    }
    async fn detach_volume(
        &self,
        host_id: i64,
        instance: &str,
        _vol: &VolumeSpec,
    ) -> Result<(), AgentError> {
        self.running(host_id, instance).await
    }
    async fn resize_volume(
        &self,
        host_id: i64,
        instance: &str,
        _vol: &VolumeSpec,
    ) -> Result<(), AgentError> {
        self.running(host_id, instance).await
    }
    async fn renew_certificate(&self, host_id: i64) -> Result<String, AgentError> {
        Err(AgentError::Failed {
            host: host_id,
            reason: "simulated hosts have no certificates".into(),
        })
    }
    async fn move_volume(
        &self,
        host_id: i64,
        instance: &str,
        _vol: &VolumeSpec,
        _to_pool: &str,
    ) -> Result<(), AgentError> {
        tokio::time::sleep(self.delay).await;
        match self.power_state(host_id, instance).await? {
            PowerState::On => Err(AgentError::Failed {
                host: host_id,
                reason: format!("instance {instance} is running; its volumes stay"),
            }),
            _ => Ok(()),
        }
    }
    async fn reset_volume(
        &self,
        host_id: i64,
        instance: &str,
        _vol: &VolumeSpec,
    ) -> Result<(), AgentError> {
        match self.power_state(host_id, instance).await? {
            PowerState::On => Err(AgentError::Failed {
                host: host_id,
                reason: format!("instance {instance} is running; its volumes stay"),
            }),
            _ => Ok(()),
        }
    }
    async fn scale(
        &self,
        host_id: i64,
        instance: &str,
        _cpu_number: i64,
        _memory_mb: i64,
    ) -> Result<(), AgentError> {
        self.running(host_id, instance).await
    }
    async fn prepare_migration(
        &self,
        _host_id: i64,
        _spec: &VmSpec,
        _copy_storage: bool,
    ) -> Result<(), AgentError> {
        Ok(())
    }
    async fn update_metadata(
        &self,
        host_id: i64,
        instance: &str,
        _meta: &GuestMetadata,
    ) -> Result<(), AgentError> {
        self.running(host_id, instance).await
    }
    async fn console(&self, host_id: i64, _instance: &str) -> Result<ConsoleTarget, AgentError> {
        Err(AgentError::Failed {
            host: host_id,
            reason: "simulated hosts have no consoles".into(),
        })
    }
    async fn create_vm_snapshot(
        &self,
        host_id: i64,
        cmd: &VmSnapshotCmd,
    ) -> Result<Option<String>, AgentError> {
        tokio::time::sleep(self.delay).await;
        let on = self.power_state(host_id, &cmd.instance).await? == PowerState::On;
        if cmd.memory && !on {
            return Err(AgentError::Failed {
                host: host_id,
                reason: format!("instance {} is not running", cmd.instance),
            });
        }
        // A simulated guest has a guest agent: a quiesce always works.
        Ok(cmd.memory.then(|| {
            format!(
                "<domainsnapshot><name>{}</name></domainsnapshot>",
                cmd.snapshot
            )
        }))
    }
    async fn revert_vm_snapshot(
        &self,
        host_id: i64,
        cmd: &VmSnapshotCmd,
    ) -> Result<(), AgentError> {
        tokio::time::sleep(self.delay).await;
        let on = self.power_state(host_id, &cmd.instance).await? == PowerState::On;
        if cmd.memory != on {
            return Err(AgentError::Failed {
                host: host_id,
                reason: format!(
                    "instance {} is {} for this revert",
                    cmd.instance,
                    if on { "running" } else { "off" }
                ),
            });
        }
        Ok(())
    }
    async fn delete_vm_snapshot(
        &self,
        _host_id: i64,
        _cmd: &VmSnapshotCmd,
    ) -> Result<(), AgentError> {
        tokio::time::sleep(self.delay).await;
        Ok(())
    }
    async fn backup_volume(
        &self,
        _host_id: i64,
        _instance: &str,
        _vol: &VolumeSpec,
        _quiesce: bool,
        _grant: &str,
    ) -> Result<u64, AgentError> {
        // A simulated host has no file to send; the service keeps a
        // placeholder for it (see `snapshots`).
        tokio::time::sleep(self.delay).await;
        Ok(0)
    }
    async fn restore_volume(
        &self,
        host_id: i64,
        instance: &str,
        _vol: &VolumeSpec,
        _snapshot_uuid: &str,
    ) -> Result<(), AgentError> {
        match self.power_state(host_id, instance).await? {
            PowerState::On => Err(AgentError::Failed {
                host: host_id,
                reason: format!("instance {instance} is running; its volumes stay"),
            }),
            _ => Ok(()),
        }
    }
    async fn migrate(
        &self,
        source: i64,
        destination: i64,
        cmd: &MigrateCmd,
        progress: Progress,
    ) -> Result<(), AgentError> {
        self.running(source, &cmd.instance).await?;
        progress(100);
        let mut vms = self.vms.lock();
        vms.remove(&(source, cmd.instance.clone()));
        vms.insert((destination, cmd.instance.clone()), PowerState::On);
        Ok(())
    }
    async fn cleanup_migration(
        &self,
        host_id: i64,
        instance: &str,
        _instance_uuid: &str,
        _volume_uuids: &[String],
        _pool: &str,
    ) -> Result<(), AgentError> {
        let mut vms = self.vms.lock();
        if vms.get(&(host_id, instance.to_string())) != Some(&PowerState::On) {
            vms.remove(&(host_id, instance.to_string()));
        }
        Ok(())
    }
}

impl Simulator {
    /// Hot-plug operations need the instance to be running on that host.
    async fn running(&self, host_id: i64, instance: &str) -> Result<(), AgentError> {
        tokio::time::sleep(self.delay).await;
        match self.power_state(host_id, instance).await? {
            PowerState::On => Ok(()),
            _ => Err(AgentError::Failed {
                host: host_id,
                reason: format!("instance {instance} is not running on this host"),
            }),
        }
    }
}
