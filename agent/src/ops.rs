//! The agent's operations: what each coordinator command does on this host,
//! combining storage, the designer and the hypervisor. Nothing here speaks
//! gRPC except through `TemplateSource` and the protocol types it converts.

use crate::accel::{self, Accelerator};
use crate::config::AgentConfig;
use crate::configdrive::{self, ConfigDriveError, DriveNic};
use crate::designer::{self, BootMode, DesignConfig, InstanceSpec};
use crate::domxml::{self, Domain};
use crate::hypervisor::{
    DhcpHost, DomainInfo, HostInfo, HvError, Hypervisor, MigrationPlan, NetworkDef, Power,
};
use crate::metadata::MetadataService;
use crate::storage::{FetchError, ImageFormat, Primary, StorageError};
use orrery_proto::v1 as pb;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;

pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Where libvirt's QEMU driver is configured, for QEMU's user when libvirt
/// does not report it.
const QEMU_CONF: &str = "/etc/libvirt/qemu.conf";
/// How long one question about a running migration's progress may take.
const PROGRESS_QUERY: Duration = Duration::from_secs(2);

/// Where templates come from (the coordinator, over the agent link).
#[async_trait::async_trait]
pub trait TemplateSource: Send + Sync {
    async fn fetch(&self, uuid: &str, file: tokio::fs::File)
        -> Result<tokio::fs::File, FetchError>;
    /// A volume snapshot from secondary storage, written into `file`.
    async fn fetch_snapshot(
        &self,
        uuid: &str,
        _file: tokio::fs::File,
    ) -> Result<tokio::fs::File, FetchError> {
        Err(format!("no source of volume snapshots here (asked for {uuid})").into())
    }
    /// Sends the file at `path` into secondary storage under `grant`;
    /// returns the bytes sent.
    async fn upload(&self, _grant: &str, path: &std::path::Path) -> Result<u64, FetchError> {
        Err(format!("no upload channel here (for {})", path.display()).into())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error("{0}")]
    Hypervisor(#[from] HvError),
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("design: {0}")]
    Design(#[from] designer::DesignError),
    #[error("domain XML: {0}")]
    Xml(#[from] domxml::DomXmlError),
    #[error("invalid command: {0}")]
    Invalid(String),
    #[error("certificate: {0}")]
    Certificate(String),
    #[error("{0}")]
    ConfigDrive(#[from] ConfigDriveError),
    /// The host is not set up for the agent to work (e.g. QEMU cannot reach
    /// primary storage).
    #[error("{0}")]
    Setup(String),
    /// A file to or from secondary storage did not get through.
    #[error("transfer: {0}")]
    Transfer(String),
}

impl OpError {
    pub fn code(&self) -> &'static str {
        match self {
            OpError::Hypervisor(e) => e.code(),
            OpError::Storage(_) => "storage",
            OpError::Design(_) | OpError::Xml(_) | OpError::Invalid(_) => "invalid",
            OpError::Certificate(_) => "certificate",
            OpError::Setup(_) => "setup",
            OpError::ConfigDrive(_) | OpError::Transfer(_) => "storage",
        }
    }
}

pub struct Ops {
    pub hv: Arc<dyn Hypervisor>,
    /// Primary storage: shared volumes (`VolumeSpec.pool` "") and every
    /// cached template.
    pub primary: Primary,
    /// The host's own storage (`VolumeSpec.pool` "local"): volumes only;
    /// its root volumes are overlays of templates cached in `primary`.
    pub local: Primary,
    pub cfg: AgentConfig,
    /// The hypervisor's facts, with the domain types the designer may use
    /// narrowed by the KVM probe, and that probe's outcome.
    info: OnceCell<(HostInfo, Accelerator)>,
    /// libvirt's and QEMU's TLS files are in place ([`crate::pki`]).
    pub libvirt_tls: std::sync::atomic::AtomicBool,
    /// What guests on this host learn about themselves over HTTP.
    pub meta: Arc<MetadataService>,
    /// Power states this agent's own commands left behind.
    pub power_notes: PowerNotes,
}

/// Power states the agent's own commands left behind, for the sessions'
/// power watchers: a watcher polls every few seconds, so a guest started
/// here and destroyed out of band before its next poll would look unchanged
/// (off, then off) and never be reported. Each watcher applies the notes
/// newer than the last it took to its own baseline before comparing.
#[derive(Default)]
pub struct PowerNotes {
    inner: parking_lot::Mutex<Notes>,
}

/// The last sequence number given, and each domain's latest note with its
/// sequence number.
type Notes = (u64, std::collections::HashMap<String, (u64, Power)>);

impl PowerNotes {
    pub fn note(&self, name: &str, power: Power) {
        let mut g = self.inner.lock();
        g.0 += 1;
        let seq = g.0;
        g.1.insert(name.to_string(), (seq, power));
    }

    /// A domain gone from the host needs no baseline any more.
    pub fn forget(&self, name: &str) {
        self.inner.lock().1.remove(name);
    }

    /// The notes made after `seen` and the sequence number to pass next.
    pub fn since(&self, seen: u64) -> (u64, Vec<(String, Power)>) {
        let g = self.inner.lock();
        let notes =
            g.1.iter()
                .filter(|(_, (seq, _))| *seq > seen)
                .map(|(n, (_, p))| (n.clone(), *p))
                .collect();
        (g.0, notes)
    }
}

/// libvirt network and bridge names for a guest network (bridge names are
/// limited to 15 characters).
pub fn network_names(uuid: &str) -> (String, String) {
    let short: String = uuid
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .take(8)
        .collect();
    (
        format!("{}{short}", crate::hypervisor::NETWORK_PREFIX),
        format!("orrbr-{short}"),
    )
}

/// The DHCP range libvirt gets. Every guest has a reservation for its own
/// address, so the range only has to exist; libvirt refuses a range whose
/// ends differ in their first two octets, so a large network's range is cut
/// to the /16 its start lies in.
pub fn dhcp_range(start: &str, end: &str) -> (String, String) {
    match (
        start.parse::<std::net::Ipv4Addr>(),
        end.parse::<std::net::Ipv4Addr>(),
    ) {
        (Ok(s), Ok(e)) => {
            let (s, e) = (u32::from(s), u32::from(e));
            let e = e.min(s | 0xffff);
            (
                std::net::Ipv4Addr::from(s).to_string(),
                std::net::Ipv4Addr::from(e).to_string(),
            )
        }
        _ => (start.to_string(), end.to_string()),
    }
}

/// The NICs a config drive's network_data.json describes.
fn drive_nics(s: &pb::InstanceSpec) -> Vec<DriveNic> {
    s.nics
        .iter()
        .map(|n| DriveNic {
            mac: n.mac.to_ascii_lowercase(),
            network_uuid: n
                .network
                .as_ref()
                .map(|x| x.uuid.clone())
                .unwrap_or_default(),
        })
        .collect()
}

/// The (network, MAC) DHCP reservations a domain's NICs hold on this host.
fn reservations_of(d: &Domain) -> Vec<(String, String)> {
    d.devices
        .interfaces
        .iter()
        .filter_map(|i| match (&i.mac, &i.source) {
            (Some(mac), domxml::InterfaceSource::Network(net)) => Some((net.clone(), mac.clone())),
            _ => None,
        })
        .collect()
}

/// `VolumeSpec.pool` (and the pools of `VolumeMove`, `CleanupMigration`)
/// naming the host's local directory; "" names primary storage.
pub const LOCAL_POOL: &str = "local";

/// A volume whose file moves with a migrating domain: the file here and
/// the file on the destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeFileMove {
    pub uuid: String,
    pub from: std::path::PathBuf,
    pub to: std::path::PathBuf,
}

/// The destination's definition of a domain whose volume files move: the
/// source's (`source_xml`, its migratable XML) with each moved volume's
/// disk pointed at its new file, and the targets of those disks. A volume
/// that is no disk of the domain is refused: copying would leave it
/// behind, and deleting its file here afterwards would lose it.
pub fn destination_xml(
    source_xml: &str,
    moves: &[VolumeFileMove],
) -> Result<domxml::MovedDisks, OpError> {
    let files: Vec<domxml::DiskFileMove> = moves
        .iter()
        .map(|m| domxml::DiskFileMove {
            from: m.from.display().to_string(),
            to: m.to.display().to_string(),
        })
        .collect();
    domxml::move_disk_files(source_xml, &files).map_err(|e| match e {
        domxml::DomXmlError::NoDiskWithFile(file) => {
            let uuid = moves
                .iter()
                .find(|m| m.from == std::path::Path::new(&file))
                .map_or("?", |m| m.uuid.as_str());
            OpError::Invalid(format!(
                "volume {uuid} is not a disk of the domain (no disk uses {file})"
            ))
        }
        other => OpError::Xml(other),
    })
}

fn power_pb(p: Power) -> pb::PowerState {
    match p {
        Power::On | Power::Other => pb::PowerState::On,
        Power::Off => pb::PowerState::Off,
    }
}

impl Ops {
    pub fn new(hv: Arc<dyn Hypervisor>, cfg: AgentConfig) -> Self {
        Ops {
            hv,
            primary: Primary::new(cfg.primary_dir.clone()),
            local: Primary::new(cfg.local_dir.clone()).without_templates(),
            meta: MetadataService::new(cfg.metadata_port, cfg.metadata_dir()),
            cfg,
            info: OnceCell::new(),
            libvirt_tls: Default::default(),
            power_notes: PowerNotes::default(),
        }
    }

    /// The pool a `VolumeSpec.pool` names.
    pub fn pool(&self, name: &str) -> Result<&Primary, OpError> {
        match name {
            "" => Ok(&self.primary),
            LOCAL_POOL => Ok(&self.local),
            other => Err(OpError::Invalid(format!(
                "unknown storage pool {other:?} (expected \"\" for primary storage or \"{LOCAL_POOL}\")"
            ))),
        }
    }

    /// Creates both pools' directories and removes partial files a crash
    /// left in them, and the directories domain definitions name (console
    /// logs, NVRAM): a domain migrated here by libvirt, or defined by
    /// another host of the cluster, needs them before any start on this host.
    pub async fn init_storage(&self) -> Result<(), OpError> {
        self.primary.init().await?;
        self.local.init().await?;
        for d in [self.cfg.console_dir(), self.cfg.nvram_dir()] {
            tokio::fs::create_dir_all(&d)
                .await
                .map_err(|e| OpError::Setup(format!("{}: {e}", d.display())))?;
        }
        Ok(())
    }

    /// Host facts are read once: capabilities do not change while we run.
    /// Their domain types are those guests can really use (see
    /// [`crate::accel`]).
    pub async fn host_info(&self) -> Result<&HostInfo, OpError> {
        Ok(&self.host().await?.0)
    }

    /// Whether KVM was found to work, read with [`Ops::host_info`].
    pub async fn accelerator(&self) -> Result<&Accelerator, OpError> {
        Ok(&self.host().await?.1)
    }

    async fn host(&self) -> Result<&(HostInfo, Accelerator), OpError> {
        self.info
            .get_or_try_init(|| async {
                let mut info = self.hv.host_info().await?;
                let offered = &info.design.domain_types;
                let forced = self.cfg.domain_type.as_deref();
                let probe = if accel::needs_probe(offered, forced) {
                    Some(self.hv.probe_kvm().await.map_err(|e| match e {
                        // libvirt's message without the code in front.
                        HvError::Backend { message, .. } => accel::one_line(&message),
                        other => accel::one_line(&other.to_string()),
                    }))
                } else {
                    None
                };
                let a = accel::decide(offered, forced, probe);
                if let Some(w) = &a.warning {
                    tracing::warn!("{w}");
                }
                info.design.domain_types = a.domain_types.clone();
                Ok((info, a))
            })
            .await
    }

    /// Fails, naming the directory and the fix, when QEMU cannot reach
    /// primary or local storage, which would otherwise fail every start
    /// with "Permission denied" on the volume file. QEMU's user is the one
    /// libvirt reports, or else the one `qemu.conf` sets; with neither
    /// known, or another driver than QEMU, nothing is checked.
    pub async fn check_storage_reachable(&self) -> Result<(), OpError> {
        use crate::host::qemu_access::{self, EmulatorUser, StorageDir};
        if !self.cfg.libvirt_uri.starts_with("qemu") {
            return Ok(());
        }
        let reported = match self.host_info().await {
            Ok(i) => i.emulator_user,
            Err(e) => {
                tracing::warn!(error = %e, "host facts unavailable; QEMU's user comes from qemu.conf");
                None
            }
        };
        let dirs = [
            (self.cfg.primary_dir.clone(), StorageDir::Primary),
            (self.cfg.local_dir.clone(), StorageDir::Local),
        ];
        // The user database and the file system: blocking calls.
        tokio::task::spawn_blocking(move || {
            let who = match reported {
                Some((uid, gid)) => Some(EmulatorUser::resolve(uid, gid)),
                None => std::fs::read_to_string(QEMU_CONF).ok().and_then(|text| {
                    match qemu_access::parse_qemu_conf(&text) {
                        (Some(user), group) => EmulatorUser::from_names(&user, group.as_deref()),
                        (None, _) => None,
                    }
                }),
            };
            match who {
                Some(who) => dirs
                    .iter()
                    .try_for_each(|(dir, which)| qemu_access::check(dir, *which, &who)),
                None => {
                    tracing::warn!(
                        "cannot tell which user QEMU runs as; not checking that it can reach primary and local storage"
                    );
                    Ok(())
                }
            }
        })
        .await
        .map_err(|e| OpError::Setup(format!("checking storage directories: {e}")))?
        .map_err(OpError::Setup)
    }

    pub async fn facts(&self) -> Result<pb::HostFacts, OpError> {
        let (i, accel) = self.host().await?;
        let space = crate::host::disk_space(&self.cfg.primary_dir)
            .or_else(|_| crate::host::disk_space(&self.cfg.state_dir))
            .ok();
        let local = crate::host::disk_space(&self.cfg.local_dir).ok();
        Ok(pb::HostFacts {
            hostname: i.hostname.clone(),
            arch: i.design.arch.clone(),
            cpus: i.cpus,
            cpu_mhz: i.cpu_mhz,
            cpu_model: i.cpu_model.clone(),
            memory_bytes: i.memory_bytes,
            hypervisor: "KVM".into(),
            libvirt_version: i.libvirt_version.clone(),
            domain_types: i.design.domain_types.clone(),
            machine_types: i.design.machine_types.clone(),
            firmware: i
                .design
                .firmware
                .iter()
                .map(|f| pb::Firmware {
                    path: f.loader.clone(),
                    secure_boot: f.secure_boot,
                })
                .collect(),
            tpm: i.design.tpm_supported,
            emulator: i.design.emulator.clone().unwrap_or_default(),
            ip_address: self.cfg.address.clone().unwrap_or_else(|| {
                crate::host::primary_ip(std::path::Path::new("/"))
                    .map(|a| a.to_string())
                    .unwrap_or_default()
            }),
            storage_bytes: space.as_ref().map(|s| s.total_bytes).unwrap_or(0),
            storage_free_bytes: space.as_ref().map(|s| s.available_bytes).unwrap_or(0),
            kvm_usable: accel.kvm_usable,
            kvm_probe: accel.kvm_probe.clone(),
            local_dir: self.cfg.local_dir.display().to_string(),
            local_bytes: local.as_ref().map(|s| s.total_bytes).unwrap_or(0),
            local_free_bytes: local.as_ref().map(|s| s.available_bytes).unwrap_or(0),
            libvirt_tls: self.libvirt_tls.load(std::sync::atomic::Ordering::Relaxed),
            gpus: crate::host::gpu::discover(&self.cfg.sysfs_root)
                .into_iter()
                .map(|g| pb::GpuDevice {
                    address: g.address,
                    vendor_id: g.vendor_id,
                    device_id: g.device_id,
                    driver: g.driver.unwrap_or_default(),
                    iommu_group: g.iommu_group,
                    mdev_types: g
                        .mdev_types
                        .into_iter()
                        .map(|t| pb::MdevType {
                            type_id: t.type_id,
                            name: t.name,
                            available: t.available,
                            created: t.created,
                            description: t.description,
                        })
                        .collect(),
                })
                .collect(),
        })
    }

    pub async fn domains(&self) -> Result<Vec<DomainInfo>, OpError> {
        Ok(self.hv.domains().await?)
    }

    pub fn reports(domains: &[DomainInfo]) -> Vec<pb::DomainReport> {
        domains
            .iter()
            .map(|d| pb::DomainReport {
                name: d.name.clone(),
                instance_uuid: d.instance_uuid.clone().unwrap_or_default(),
                state: power_pb(d.power) as i32,
            })
            .collect()
    }

    /// Runs one command; `Ok(Some(detail))` carries a result payload.
    pub async fn execute(
        &self,
        op: pb::command::Op,
        templates: &dyn TemplateSource,
        renew: &(dyn Fn(&str) -> Result<Option<String>, OpError> + Sync),
        progress: &(dyn Fn(&str, u32) + Sync),
    ) -> Result<Option<pb::command_result::Detail>, OpError> {
        use pb::command::Op;
        match op {
            Op::Investigate(_) => Err(OpError::Invalid(
                "investigations are answered by the link, not the host's operations".into(),
            )),
            Op::Start(s) => {
                let spec = s
                    .spec
                    .ok_or_else(|| OpError::Invalid("start without a spec".into()))?;
                self.start(&spec, templates).await?;
                Ok(None)
            }
            Op::Stop(s) => {
                self.stop(
                    &s.name,
                    s.forced,
                    Duration::from_secs(s.timeout_seconds.max(1) as u64),
                )
                .await?;
                Ok(None)
            }
            Op::Reboot(r) => {
                self.hv.reboot(&r.name).await?;
                Ok(None)
            }
            Op::Expunge(e) => {
                self.expunge(&e.name).await?;
                Ok(None)
            }
            Op::Query(q) => {
                let p = match self.hv.power(&q.name).await {
                    Ok(p) => power_pb(p),
                    Err(HvError::NotFound(_)) => pb::PowerState::Missing,
                    Err(e) => return Err(e.into()),
                };
                Ok(Some(pb::command_result::Detail::Power(p as i32)))
            }
            Op::RenewCertificate(r) => {
                let detail = renew(&r.certificate_pem)?;
                if !r.certificate_pem.is_empty() {
                    crate::pki::refresh(self).await;
                }
                Ok(detail.map(pb::command_result::Detail::Text))
            }
            Op::AttachVolume(v) => {
                self.attach(&v, templates).await?;
                Ok(None)
            }
            Op::DetachVolume(v) => {
                self.detach(&v).await?;
                Ok(None)
            }
            Op::ResizeVolume(v) => {
                self.resize(&v).await?;
                Ok(None)
            }
            Op::Network(n) => {
                let net = n
                    .network
                    .ok_or_else(|| OpError::Invalid("network setup without a network".into()))?;
                self.ensure_network(&net).await?;
                Ok(None)
            }
            Op::PrepareMigration(p) => {
                self.prepare_migration(&p).await?;
                Ok(None)
            }
            Op::Migrate(m) => {
                self.migrate(&m, progress).await?;
                Ok(None)
            }
            Op::CleanupMigration(c) => {
                self.cleanup_migration(&c).await?;
                Ok(None)
            }
            Op::Scale(s) => {
                self.scale(&s).await?;
                Ok(None)
            }
            Op::ResetVolume(v) => {
                self.reset_volume(&v).await?;
                Ok(None)
            }
            Op::MoveVolume(m) => {
                self.move_volume(&m).await?;
                Ok(None)
            }
            Op::UpdateMetadata(u) => {
                self.update_metadata(&u).await?;
                Ok(None)
            }
            Op::Console(q) => Ok(Some(pb::command_result::Detail::Console(
                self.console(&q.name).await?,
            ))),
            Op::CreateVmSnapshot(s) => Ok(self
                .create_vm_snapshot(&s)
                .await?
                .map(pb::command_result::Detail::Text)),
            Op::RevertVmSnapshot(s) => {
                self.revert_vm_snapshot(&s).await?;
                Ok(None)
            }
            Op::DeleteVmSnapshot(s) => {
                self.delete_vm_snapshot(&s).await?;
                Ok(None)
            }
            Op::BackupVolume(b) => Ok(Some(pb::command_result::Detail::Text(
                self.backup_volume(&b, templates).await?.to_string(),
            ))),
            Op::RestoreVolume(r) => {
                self.restore_volume(&r, templates).await?;
                Ok(None)
            }
        }
    }

    /// Readies this host to receive a running instance: its networks and
    /// DHCP reservations, the directories its definition names, and, when
    /// its disks are copied, volume files of the right size for them.
    /// Templates are not needed: a copied disk arrives complete.
    pub async fn prepare_migration(&self, p: &pb::PrepareMigration) -> Result<(), OpError> {
        let s = p
            .spec
            .as_ref()
            .ok_or_else(|| OpError::Invalid("migration without a spec".into()))?;
        if let Ok(Power::On) = self.hv.power(&s.name).await {
            return Err(OpError::Invalid(format!(
                "instance {} already runs on this host",
                s.name
            )));
        }
        self.prepare_nics(s).await?;
        if p.copy_storage {
            self.prepare_copy_targets(s).await?;
        }
        // The domain's definition names its config drive: the file must be
        // here before the domain arrives.
        self.guest_data(s).await?;
        for d in [self.cfg.console_dir(), self.cfg.nvram_dir()] {
            tokio::fs::create_dir_all(&d)
                .await
                .map_err(|e| OpError::Setup(format!("{}: {e}", d.display())))?;
        }
        Ok(())
    }

    /// The files a copied disk is written into on this (the destination)
    /// host, in the pools the spec names, created where missing: empty
    /// qcow2 images without a backing file (libvirt copies every block of
    /// the disk), as large as the disk. QEMU copies only into an image of
    /// exactly the disk's size; a root volume was made as large as its
    /// template when that was larger than asked, so the template's size
    /// counts when primary storage has it.
    async fn prepare_copy_targets(&self, s: &pb::InstanceSpec) -> Result<(), OpError> {
        for v in &s.volumes {
            let pool = self.pool(&v.pool)?;
            let path = pool.volume_path(&v.uuid)?;
            if tokio::fs::try_exists(&path).await.unwrap_or(false) {
                continue;
            }
            let mut size = v.size_bytes;
            if v.kind.eq_ignore_ascii_case("ROOT") {
                if let Some(t) = &s.template {
                    size = size.max(self.cached_template_size(t).await?.unwrap_or(0));
                }
            }
            pool.create_data(&v.uuid, size).await?;
        }
        Ok(())
    }

    /// The virtual size of a template primary storage has cached; None
    /// when it has not.
    async fn cached_template_size(&self, t: &pb::TemplateRef) -> Result<Option<u64>, OpError> {
        let Ok(fmt) = t.format.parse::<ImageFormat>() else {
            return Ok(None);
        };
        let cached = self.primary.template_cache(&t.uuid, fmt)?;
        if !tokio::fs::try_exists(&cached).await.unwrap_or(false) {
            return Ok(None);
        }
        let info = self.primary.qemu_img().info(&cached, Some(fmt)).await?;
        Ok(Some(info.virtual_size))
    }

    /// The volume files a migration moves, here and on the destination.
    /// The destination's pools are where this host's are (as its console
    /// and NVRAM directories are). A move within primary storage that both
    /// hosts share would copy a file onto itself and then delete it.
    fn volume_moves(&self, m: &pb::MigrateInstance) -> Result<Vec<VolumeFileMove>, OpError> {
        if !m.moves.is_empty() && !m.copy_storage {
            return Err(OpError::Invalid(
                "volume moves without copying storage".into(),
            ));
        }
        m.moves
            .iter()
            .map(|v| {
                if m.shared_storage && v.from_pool.is_empty() && v.pool.is_empty() {
                    return Err(OpError::Invalid(format!(
                        "volume {} cannot move within primary storage that both hosts share",
                        v.uuid
                    )));
                }
                Ok(VolumeFileMove {
                    uuid: v.uuid.clone(),
                    from: self.pool(&v.from_pool)?.volume_path(&v.uuid)?,
                    to: self.pool(&v.pool)?.volume_path(&v.uuid)?,
                })
            })
            .collect()
    }

    /// Moves a running domain to another host. Past `timeout_seconds` the
    /// migration is aborted and the domain stays here. Once it has left,
    /// its DHCP reservations here are dropped, and so are the files of the
    /// volumes that moved with it (`moves`), whose disks the destination
    /// got in their new pools.
    pub async fn migrate(
        &self,
        m: &pb::MigrateInstance,
        progress: &(dyn Fn(&str, u32) + Sync),
    ) -> Result<(), OpError> {
        if m.destination_uri.is_empty() {
            return Err(OpError::Invalid("migration without a destination".into()));
        }
        match self.hv.power(&m.name).await? {
            Power::On => {}
            p => {
                return Err(OpError::Invalid(format!(
                    "instance {} is not running here ({p:?})",
                    m.name
                )))
            }
        }
        // libvirt will not migrate a domain it keeps snapshot records of;
        // the snapshots themselves stay in the volumes, and the coordinator
        // hands a record back to the host where a revert needs one.
        let forgotten = self.hv.forget_snapshots(&m.name).await?;
        if forgotten > 0 {
            tracing::info!(instance = %m.name, snapshots = forgotten, "dropped libvirt's snapshot records before migrating");
        }
        let moves = self.volume_moves(m)?;
        let moved = if moves.is_empty() {
            None
        } else {
            let xml = self.hv.migratable_xml(&m.name).await?;
            Some(destination_xml(&xml, &moves)?)
        };
        let reservations = match self.hv.domain_xml(&m.name).await {
            Ok(xml) => Domain::from_xml(&xml)
                .map(|d| reservations_of(&d))
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        let (dest_xml, migrate_disks) = match moved {
            Some(d) => (Some(d.xml), d.targets),
            None => (None, Vec::new()),
        };
        let plan = MigrationPlan {
            destination_uri: m.destination_uri.clone(),
            migrate_uri: (!m.migrate_uri.is_empty()).then(|| m.migrate_uri.clone()),
            tls: m.tls,
            copy_storage: m.copy_storage,
            shared_storage: m.shared_storage,
            max_downtime_ms: (m.max_downtime_ms > 0).then_some(m.max_downtime_ms as u64),
            bandwidth_mib: (m.bandwidth_mib > 0).then_some(m.bandwidth_mib as u64),
            dest_xml,
            migrate_disks,
        };
        let limit = (m.timeout_seconds > 0).then(|| Duration::from_secs(m.timeout_seconds as u64));
        let started = tokio::time::Instant::now();
        let run = self.hv.migrate(&m.name, &plan);
        tokio::pin!(run);
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let outcome = loop {
            tokio::select! {
                r = &mut run => break r,
                _ = tick.tick() => {
                    if limit.is_some_and(|l| started.elapsed() >= l) {
                        tracing::warn!(instance = %m.name, "migration past its time limit; aborting");
                        if let Err(e) = self.hv.abort_job(&m.name).await {
                            tracing::warn!(instance = %m.name, error = %e, "aborting the migration failed");
                        }
                        let r = (&mut run).await;
                        break match r {
                            Ok(()) => Ok(()),
                            Err(_) => Err(HvError::Timeout(format!(
                                "migration of {} did not complete within {} s and was aborted",
                                m.name, m.timeout_seconds
                            ))),
                        };
                    }
                    // A query stuck behind a busy monitor must not hold
                    // up the time limit above; the next tick asks again.
                    match tokio::time::timeout(PROGRESS_QUERY, self.hv.job_progress(&m.name)).await {
                        Ok(Ok(Some(p))) => progress("migrating", p.percent()),
                        Ok(Ok(None)) => {}
                        Ok(Err(e)) => tracing::debug!(instance = %m.name, error = %e, "asking how far the migration has come"),
                        Err(_) => tracing::debug!(instance = %m.name, "asking how far the migration has come took too long"),
                    }
                }
            }
        };
        outcome?;
        self.meta.remove(&m.name);
        if !m.shared_storage {
            configdrive::remove(&self.cfg.config_drive_dir(), &m.name).await;
        }
        for (network, mac) in reservations {
            if let Err(e) = self.hv.remove_dhcp_host(&network, &mac).await {
                tracing::debug!(%network, %mac, error = %e, "dropping a moved guest's reservation");
            }
        }
        // The instance runs there now: a file left here is only space, not
        // a reason to report the move as failed.
        for (mv, files) in m.moves.iter().zip(&moves) {
            if let Err(e) = self.pool(&mv.from_pool)?.delete(&mv.uuid).await {
                tracing::warn!(
                    instance = %m.name,
                    file = %files.from.display(),
                    error = %e,
                    "removing a moved volume's file"
                );
            }
        }
        Ok(())
    }

    /// Raises a running domain's vCPUs and memory (see `ScaleInstance`)
    /// within the room it was started with: vCPUs are brought online up to
    /// the count it was defined with, memory grows by one memory module of
    /// the difference, up to its `<maxMemory>`. Both figures are checked
    /// before anything changes; asking for what the domain has is a no-op.
    pub async fn scale(&self, s: &pb::ScaleInstance) -> Result<(), OpError> {
        /// QEMU refuses a module whose size is not a multiple of 2 MiB
        /// ("backend memory size must be multiple of 0x200000").
        const MODULE_ALIGN_KIB: u64 = 2 * 1024;
        /// Linux guests online memory in blocks of 128 MiB on x86-64; a
        /// module of another size is left unused (all of it), and so are
        /// modules placed after it, since they no longer start on a block.
        const GUEST_BLOCK_KIB: u64 = 128 * 1024;

        let name = &s.name;
        match self.hv.power(name).await? {
            Power::On => {}
            p => {
                return Err(OpError::Invalid(format!(
                    "instance {name} is not running ({p:?}); only a running instance is scaled \
                     live"
                )))
            }
        }
        let dom = Domain::from_xml(&self.hv.domain_xml(name).await?)?;

        let max_vcpus = dom.vcpu.count;
        let vcpus = dom.vcpu.current.unwrap_or(max_vcpus);
        if s.vcpus < vcpus {
            return Err(OpError::Invalid(format!(
                "instance {name} runs {vcpus} vCPUs; scaling never lowers them (asked for {})",
                s.vcpus
            )));
        }
        if s.vcpus > max_vcpus {
            let why = if vcpus == max_vcpus {
                "it was not started scalable, or already runs the most it was started with"
            } else {
                "the most it was started with"
            };
            return Err(OpError::Invalid(format!(
                "instance {name} cannot run {} vCPUs: it has room for {max_vcpus} ({why})",
                s.vcpus
            )));
        }

        let memory_kib = dom.memory_kib;
        let target_kib = s
            .memory_mib
            .checked_mul(1024)
            .ok_or_else(|| OpError::Invalid(format!("{} MiB is too large", s.memory_mib)))?;
        if target_kib < memory_kib {
            return Err(OpError::Invalid(format!(
                "instance {name} has {} MiB of memory; scaling never lowers it (asked for {} MiB)",
                memory_kib / 1024,
                s.memory_mib
            )));
        }
        let module = if target_kib > memory_kib {
            let Some(max) = dom.max_memory else {
                return Err(OpError::Invalid(format!(
                    "instance {name} was not started scalable: it has no room for more memory \
                     than its {} MiB",
                    memory_kib / 1024
                )));
            };
            if target_kib > max.kib {
                return Err(OpError::Invalid(format!(
                    "instance {name} cannot have {} MiB of memory: the most it was started with \
                     is {} MiB",
                    s.memory_mib,
                    max.kib / 1024
                )));
            }
            let used = dom.devices.memories.len();
            if used >= max.slots as usize {
                return Err(OpError::Invalid(format!(
                    "instance {name} has all its {} memory slots in use",
                    max.slots
                )));
            }
            let size_kib = target_kib - memory_kib;
            if size_kib % MODULE_ALIGN_KIB != 0 {
                return Err(OpError::Invalid(format!(
                    "instance {name} can grow its memory only in steps of 2 MiB; {} MiB more \
                     is not one",
                    size_kib as f64 / 1024.0
                )));
            }
            if size_kib % GUEST_BLOCK_KIB != 0 {
                tracing::warn!(
                    instance = %name,
                    size_kib,
                    "a memory module that is not a multiple of 128 MiB is not used by Linux guests"
                );
            }
            Some(domxml::MemoryDevice {
                size_kib,
                node: Some(designer::HOTPLUG_NUMA_NODE),
            })
        } else {
            None
        };

        if let Some(module) = module {
            self.hv.attach_device(name, &module.to_xml()).await?;
        }
        if s.vcpus > vcpus {
            self.hv.set_vcpus(name, s.vcpus).await?;
        }
        Ok(())
    }

    /// Moves a volume's file between this host's pools while its instance is
    /// not running; the original goes only once the copy is complete.
    pub async fn move_volume(&self, m: &pb::MoveVolume) -> Result<(), OpError> {
        let vol = m
            .volume
            .as_ref()
            .ok_or_else(|| OpError::Invalid("move without a volume".into()))?;
        if !m.instance.is_empty() {
            match self.hv.power(&m.instance).await {
                Ok(Power::Off) | Err(HvError::NotFound(_)) => {}
                Ok(_) => {
                    return Err(OpError::Invalid(format!(
                        "instance {} is running; its volume {} stays where it is",
                        m.instance, vol.uuid
                    )))
                }
                Err(e) => return Err(e.into()),
            }
        }
        let (from, to) = (self.pool(&vol.pool)?, self.pool(&m.to_pool)?);
        let source = from.volume_path(&vol.uuid)?;
        if source == to.volume_path(&vol.uuid)? {
            return Err(OpError::Invalid(format!(
                "volume {} is already in pool {:?}",
                vol.uuid, m.to_pool
            )));
        }
        if !tokio::fs::try_exists(&source).await.unwrap_or(false) {
            return Err(OpError::Invalid(format!(
                "volume {} has no file at {}",
                vol.uuid,
                source.display()
            )));
        }
        to.copy_in(&vol.uuid, &source).await?;
        from.delete(&vol.uuid).await?;
        Ok(())
    }

    /// Deletes a volume's file while its domain is not running, so the next
    /// start recreates it (a root volume from its template): a volatile
    /// offering's reboot.
    pub async fn reset_volume(&self, v: &pb::VolumeOp) -> Result<(), OpError> {
        let vol = v
            .volume
            .as_ref()
            .ok_or_else(|| OpError::Invalid("reset without a volume".into()))?;
        match self.hv.power(&v.instance).await {
            Ok(Power::Off) | Err(HvError::NotFound(_)) => {}
            Ok(_) => {
                return Err(OpError::Invalid(format!(
                    "instance {} is running; its volume {} stays",
                    v.instance, vol.uuid
                )))
            }
            Err(e) => return Err(e.into()),
        }
        self.pool(&vol.pool)?.delete(&vol.uuid).await?;
        Ok(())
    }

    /// Undoes a preparation after a failed migration: a domain of that name
    /// left defined here but not running is removed (libvirt normally
    /// removes it itself), with its reservations, and copied volume files
    /// when named, in the pool named.
    pub async fn cleanup_migration(&self, c: &pb::CleanupMigration) -> Result<(), OpError> {
        match self.hv.power(&c.name).await {
            Ok(Power::On) | Ok(Power::Other) => {
                return Err(OpError::Invalid(format!(
                    "instance {} runs on this host; not cleaning it up",
                    c.name
                )))
            }
            Ok(Power::Off) => {
                if let Ok(xml) = self.hv.domain_xml(&c.name).await {
                    if let Ok(d) = Domain::from_xml(&xml) {
                        if d.metadata.as_ref().map(|m| m.instance_uuid.as_str())
                            != Some(c.instance_uuid.as_str())
                        {
                            return Err(OpError::Invalid(format!(
                                "domain {} here is not instance {}",
                                c.name, c.instance_uuid
                            )));
                        }
                    }
                }
                match self.hv.undefine(&c.name).await {
                    Ok(()) | Err(HvError::NotFound(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Err(HvError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let pool = self.pool(&c.pool)?;
        for uuid in &c.volume_uuids {
            pool.delete(uuid).await?;
        }
        // The config drive stays: on shared storage it is the source's too.
        self.meta.remove(&c.name);
        Ok(())
    }

    /// Where a running instance's VNC console listens, for the console
    /// proxy. A console on every address is reached at the host's address.
    pub async fn console(&self, name: &str) -> Result<pb::ConsoleInfo, OpError> {
        let xml = self.hv.domain_xml(name).await?;
        let dom = Domain::from_xml(&xml)?;
        let g = dom
            .devices
            .graphics
            .first()
            .ok_or_else(|| OpError::Invalid(format!("instance {name} has no console")))?;
        let port = match g.port {
            Some(p) if p > 0 => p as u32,
            _ => {
                return Err(OpError::Invalid(format!(
                    "instance {name} is not running; its console has no port"
                )))
            }
        };
        let listen = g.listen.clone().unwrap_or_default();
        let host = match listen.parse::<std::net::IpAddr>() {
            Ok(ip) if !ip.is_unspecified() => listen,
            _ => self
                .cfg
                .address
                .clone()
                .or_else(|| {
                    crate::host::primary_ip(std::path::Path::new("/")).map(|a| a.to_string())
                })
                .unwrap_or_else(|| "127.0.0.1".into()),
        };
        let tls = std::fs::read_to_string(QEMU_CONF)
            .map(|t| crate::host::qemu_access::vnc_tls_verified(&t))
            .unwrap_or(false);
        Ok(pb::ConsoleInfo { host, port, tls })
    }

    /// Hands the metadata service an instance's data and writes its config
    /// drive when it has one (removing a stale one when it no longer does).
    /// Returns the drive's path for the domain definition.
    async fn guest_data(&self, s: &pb::InstanceSpec) -> Result<Option<String>, OpError> {
        let meta = s.metadata.clone().unwrap_or_default();
        self.meta
            .register(&s.name, MetadataService::nics_of(s), meta.clone());
        let dir = self.cfg.config_drive_dir();
        if !meta.config_drive {
            configdrive::remove(&dir, &s.name).await;
            return Ok(None);
        }
        let path = configdrive::build(&dir, &s.name, &meta, &drive_nics(s)).await?;
        Ok(Some(path.display().to_string()))
    }

    /// New metadata for an instance of this host: served at once; its
    /// config drive is rewritten and read by the guest at its next boot.
    pub async fn update_metadata(&self, u: &pb::UpdateMetadata) -> Result<(), OpError> {
        let meta = u.metadata.clone().unwrap_or_default();
        if !self.meta.update(&u.name, meta.clone()) {
            tracing::info!(instance = %u.name, "metadata for an instance not on this host ignored");
            return Ok(());
        }
        let dir = self.cfg.config_drive_dir();
        if meta.config_drive
            && tokio::fs::try_exists(configdrive::path_for(&dir, &u.name))
                .await
                .unwrap_or(false)
        {
            let nics: Vec<DriveNic> = self
                .meta
                .get(&u.name)
                .map(|e| {
                    e.nics
                        .iter()
                        .map(|n| DriveNic {
                            mac: n.mac.clone(),
                            network_uuid: n.network_uuid.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            configdrive::build(&dir, &u.name, &meta, &nics).await?;
        }
        Ok(())
    }

    async fn ensure_network(&self, n: &pb::GuestNetwork) -> Result<String, OpError> {
        let (name, bridge) = network_names(&n.uuid);
        let (dhcp_start, dhcp_end) = dhcp_range(&n.start_ip, &n.end_ip);
        self.hv
            .ensure_network(&NetworkDef {
                name: name.clone(),
                bridge,
                gateway: n.gateway.clone(),
                netmask: n.netmask.clone(),
                dhcp_start,
                dhcp_end,
            })
            .await?;
        Ok(name)
    }

    /// Prepares networks and disks, renders the domain from the coordinator's
    /// spec, defines it (replacing the old definition) and starts it.
    pub async fn start(
        &self,
        s: &pb::InstanceSpec,
        templates: &dyn TemplateSource,
    ) -> Result<(), OpError> {
        if let Ok(Power::On) = self.hv.power(&s.name).await {
            // Already running: a retried start is not an error.
            return Ok(());
        }
        let nics = self.prepare_nics(s).await?;
        let volumes = self.prepare_volumes(s, templates).await?;
        let config_drive = self.guest_data(s).await?;
        let gpu = self.assign_gpu(s).await?;
        let cdrom = if s.iso.is_empty() {
            None
        } else {
            let p = self
                .primary
                .ensure_template(&s.iso, ImageFormat::Raw, None, |f| {
                    templates.fetch(&s.iso, f)
                })
                .await?;
            Some(p.display().to_string())
        };
        let spec = InstanceSpec {
            uuid: s.uuid.clone(),
            internal_name: s.name.clone(),
            display_name: s.display_name.clone(),
            host_name: s.host_name.clone(),
            vcpus: s.vcpus,
            cpu_speed_mhz: s.cpu_mhz,
            memory_mib: s.memory_mib,
            // 0 on the wire: not scalable.
            max_vcpus: (s.max_vcpus > 0).then_some(s.max_vcpus),
            max_memory_mib: (s.max_memory_mib > 0).then_some(s.max_memory_mib),
            os_type: s.os_type.clone(),
            boot_mode: if s.uefi {
                BootMode::Uefi {
                    secure: s.secure_boot,
                }
            } else {
                BootMode::Bios
            },
            tpm: s.tpm,
            volumes,
            cdrom,
            config_drive,
            nics,
            vnc_password: s.vnc_password.clone(),
            // A GPU that is the display replaces the emulated video card.
            details: {
                let mut d = s.details.clone().into_iter().collect::<BTreeMap<_, _>>();
                if s.gpu_display && gpu.is_some() {
                    d.insert(designer::DETAIL_VIDEO_HARDWARE.into(), "none".into());
                }
                d
            },
            gpu,
            extraconfig: s.extra_config.clone(),
            caller_is_admin: s.extra_config_allowed,
            smbios_manufacturer: s.smbios_manufacturer.clone(),
            smbios_product: s.smbios_product.clone(),
        };
        let xml = self.render(&spec).await?;
        self.hv.define(&xml).await?;
        self.hv.start(&s.name).await?;
        self.power_notes.note(&s.name, Power::On);
        Ok(())
    }

    /// The guest networks of a spec's NICs, created when missing, with each
    /// NIC's DHCP reservation.
    async fn prepare_nics(&self, s: &pb::InstanceSpec) -> Result<Vec<designer::NicSpec>, OpError> {
        let mut nics = Vec::new();
        for n in &s.nics {
            let net = n
                .network
                .as_ref()
                .ok_or_else(|| OpError::Invalid(format!("NIC {} has no network", n.mac)))?;
            let name = self.ensure_network(net).await?;
            self.hv
                .set_dhcp_host(
                    &name,
                    &DhcpHost {
                        mac: n.mac.clone(),
                        ip: n.ip.clone(),
                        name: s.host_name.clone(),
                    },
                )
                .await?;
            nics.push(designer::NicSpec {
                mac: n.mac.clone(),
                network: name,
                is_default: n.is_default,
                ip: (!n.ip.is_empty()).then(|| n.ip.clone()),
            });
        }
        Ok(nics)
    }

    /// The spec's volume files, each in the pool it names, created when
    /// missing (a root volume as an overlay of the template cached in
    /// primary storage, a data volume empty).
    async fn prepare_volumes(
        &self,
        s: &pb::InstanceSpec,
        templates: &dyn TemplateSource,
    ) -> Result<Vec<designer::VolumeSpec>, OpError> {
        let mut volumes = Vec::new();
        for v in &s.volumes {
            let pool = self.pool(&v.pool)?;
            let path = pool.volume_path(&v.uuid)?;
            let root = v.kind.eq_ignore_ascii_case("ROOT");
            if !tokio::fs::try_exists(&path).await.unwrap_or(false) {
                if root {
                    let t = s.template.as_ref().ok_or_else(|| {
                        OpError::Invalid("a ROOT volume without a template".into())
                    })?;
                    let fmt: ImageFormat = t
                        .format
                        .parse()
                        .map_err(|_| OpError::Invalid(format!("template format {}", t.format)))?;
                    let checksum = (!t.checksum.is_empty()).then_some(t.checksum.as_str());
                    let cached = self
                        .primary
                        .ensure_template(&t.uuid, fmt, checksum, |f| templates.fetch(&t.uuid, f))
                        .await?;
                    pool.create_root(&v.uuid, &cached, fmt, v.size_bytes)
                        .await?;
                } else {
                    self.create_data_volume(v, templates).await?;
                }
            }
            volumes.push(designer::VolumeSpec {
                id: v.uuid.clone(),
                kind: if root {
                    designer::VolumeKind::Root
                } else {
                    designer::VolumeKind::Data
                },
                path: path.display().to_string(),
                format: designer::VolumeFormat::Qcow2,
                device_id: v.device_id.max(0) as u32,
                read_bytes_sec: None,
                write_bytes_sec: None,
                read_iops_sec: None,
                write_iops_sec: None,
            });
        }
        Ok(volumes)
    }

    /// The domain XML for a spec on this host (also `debug render-xml`).
    pub async fn render(&self, spec: &InstanceSpec) -> Result<String, OpError> {
        let info = self.host_info().await?;
        for d in [self.cfg.console_dir(), self.cfg.nvram_dir()] {
            tokio::fs::create_dir_all(&d)
                .await
                .map_err(|e| OpError::Invalid(format!("{}: {e}", d.display())))?;
        }
        let cfg = DesignConfig {
            console_log_dir: self.cfg.console_dir().display().to_string(),
            vnc_listen: self.cfg.vnc_listen.clone(),
            forced_domain_type: self.cfg.domain_type.clone(),
            nvram_dir: self.cfg.nvram_dir().display().to_string(),
        };
        let dom: Domain = designer::design(spec, &info.design, &cfg)?;
        Ok(dom.to_xml())
    }

    pub async fn stop(&self, name: &str, forced: bool, timeout: Duration) -> Result<(), OpError> {
        match self.hv.power(name).await {
            Err(HvError::NotFound(_)) | Ok(Power::Off) => return Ok(()),
            Err(e) => return Err(e.into()),
            Ok(_) => {}
        }
        if forced {
            self.hv.destroy(name).await?;
        } else {
            self.hv.shutdown(name, timeout).await?;
        }
        self.power_notes.note(name, Power::Off);
        // Its vGPUs go with the run; whole GPUs are free once it is off.
        if let Ok(xml) = self.hv.domain_xml(name).await {
            self.release_vgpus(&xml).await;
        }
        Ok(())
    }

    /// Removes the domain, its volume files, its DHCP reservations and its
    /// console log.
    pub async fn expunge(&self, name: &str) -> Result<(), OpError> {
        self.meta.remove(name);
        configdrive::remove(&self.cfg.config_drive_dir(), name).await;
        let xml = match self.hv.domain_xml(name).await {
            Ok(x) => x,
            Err(HvError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let dom = Domain::from_xml(&xml).ok();
        if let Ok(Power::On) | Ok(Power::Other) = self.hv.power(name).await {
            self.hv.destroy(name).await?;
        }
        self.release_vgpus(&xml).await;
        match self.hv.undefine(name).await {
            Ok(()) | Err(HvError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        self.power_notes.forget(name);
        if let Some(dom) = dom {
            for d in &dom.devices.disks {
                let Some(src) = &d.source else { continue };
                let p = std::path::Path::new(src);
                // Only volumes of our own pools; cached templates and ISOs
                // stay.
                for pool in [&self.primary, &self.local] {
                    if p.parent() == Some(pool.root()) {
                        if let Some(uuid) = p.file_stem().and_then(|s| s.to_str()) {
                            pool.delete(uuid).await?;
                        }
                    }
                }
            }
            for i in &dom.devices.interfaces {
                if let (Some(mac), domxml::InterfaceSource::Network(net)) = (&i.mac, &i.source) {
                    match self.hv.remove_dhcp_host(net, mac).await {
                        Ok(()) | Err(HvError::NotFound(_)) => {}
                        Err(e) => tracing::warn!(error = %e, "removing a DHCP reservation"),
                    }
                }
            }
        }
        let _ = tokio::fs::remove_file(self.cfg.console_dir().join(format!("{name}.log"))).await;
        Ok(())
    }

    fn disk_target(dom: &Domain, device_id: i64) -> String {
        // vda is the root disk; data disks follow their device ids, skipping
        // the letter the designer keeps for the CD-ROM slot.
        let used: Vec<&str> = dom
            .devices
            .disks
            .iter()
            .map(|d| d.target_dev.as_str())
            .collect();
        let start = device_id.clamp(1, 25) as u8;
        (start..26)
            .chain(1..start)
            .map(|i| format!("vd{}", (b'a' + i) as char))
            .find(|t| !used.contains(&t.as_str()))
            .unwrap_or_else(|| "vdz".into())
    }

    async fn attach(
        &self,
        v: &pb::VolumeOp,
        templates: &dyn TemplateSource,
    ) -> Result<(), OpError> {
        let vol = v
            .volume
            .as_ref()
            .ok_or_else(|| OpError::Invalid("volume operation without a volume".into()))?;
        let pool = self.pool(&vol.pool)?;
        let path = pool.volume_path(&vol.uuid)?;
        if !tokio::fs::try_exists(&path).await.unwrap_or(false) {
            self.create_data_volume(vol, templates).await?;
        }
        let dom = Domain::from_xml(&self.hv.domain_xml(&v.instance).await?)?;
        if dom
            .devices
            .disks
            .iter()
            .any(|d| d.source.as_deref() == Some(&path.display().to_string()))
        {
            return Ok(());
        }
        let disk = domxml::Disk {
            disk_type: domxml::DiskType::File,
            device: domxml::DiskDevice::Disk,
            driver: Some(domxml::DiskDriver {
                name: Some("qemu".into()),
                format: Some(domxml::DiskFormat::Qcow2),
                cache: None,
                discard: None,
            }),
            source: Some(path.display().to_string()),
            target_dev: Self::disk_target(&dom, vol.device_id),
            target_bus: domxml::DiskBus::Virtio,
            serial: Some(
                vol.uuid
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric())
                    .take(20)
                    .collect(),
            ),
            readonly: false,
            boot_order: None,
            iotune: None,
        };
        self.hv.attach_device(&v.instance, &disk.to_xml()).await?;
        Ok(())
    }

    async fn detach(&self, v: &pb::VolumeOp) -> Result<(), OpError> {
        let vol = v
            .volume
            .as_ref()
            .ok_or_else(|| OpError::Invalid("volume operation without a volume".into()))?;
        let path = self
            .pool(&vol.pool)?
            .volume_path(&vol.uuid)?
            .display()
            .to_string();
        let dom = Domain::from_xml(&self.hv.domain_xml(&v.instance).await?)?;
        if let Some(d) = dom
            .devices
            .disks
            .iter()
            .find(|d| d.source.as_deref() == Some(path.as_str()))
        {
            self.hv.detach_device(&v.instance, &d.to_xml()).await?;
        }
        Ok(())
    }

    async fn resize(&self, v: &pb::VolumeOp) -> Result<(), OpError> {
        let vol = v
            .volume
            .as_ref()
            .ok_or_else(|| OpError::Invalid("volume operation without a volume".into()))?;
        let pool = self.pool(&vol.pool)?;
        let path = pool.volume_path(&vol.uuid)?;
        let running = matches!(self.hv.power(&v.instance).await, Ok(Power::On));
        if running {
            let dom = Domain::from_xml(&self.hv.domain_xml(&v.instance).await?)?;
            let p = path.display().to_string();
            if let Some(d) = dom
                .devices
                .disks
                .iter()
                .find(|d| d.source.as_deref() == Some(p.as_str()))
            {
                // QEMU owns the image while it runs: resize through it.
                self.hv
                    .block_resize(&v.instance, &d.target_dev, vol.size_bytes)
                    .await?;
                return Ok(());
            }
        }
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            pool.qemu_img()
                .resize(&path, ImageFormat::Qcow2, vol.size_bytes, true)
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FileConfig;
    use crate::hypervisor::codes;
    use crate::hypervisor::fake::FakeHypervisor;

    fn ops_with(hv: Arc<FakeHypervisor>, dir: &std::path::Path, domain_type: Option<&str>) -> Ops {
        let file = FileConfig {
            domain_type: domain_type.map(String::from),
            ..FileConfig::default()
        };
        let cfg = AgentConfig::merge(
            file,
            Some(dir.join("state")),
            Some("qemu:///system".into()),
            Some(dir.join("primary")),
            Some(dir.join("local")),
        );
        Ops::new(hv, cfg)
    }

    #[tokio::test]
    async fn a_failed_kvm_probe_leaves_kvm_out_of_the_facts() {
        let dir = tempfile::tempdir().unwrap();
        let hv = Arc::new(FakeHypervisor::new());
        hv.fail_next(
            "probe_kvm",
            HvError::backend(
                codes::INTERNAL_ERROR,
                "internal error: qemu unexpectedly closed the monitor:\nerror: failed to set MSR 0x10a",
            ),
        );
        let ops = ops_with(hv.clone(), dir.path(), None);
        assert_eq!(
            ops.host_info().await.unwrap().design.domain_types,
            vec!["qemu"]
        );
        let a = ops.accelerator().await.unwrap();
        assert_eq!(a.kvm_usable, Some(false));
        assert_eq!(
            a.kvm_probe,
            "internal error: qemu unexpectedly closed the monitor: error: failed to set MSR 0x10a"
        );
        assert_eq!(ops.facts().await.unwrap().domain_types, vec!["qemu"]);
        // Probed once, however often the facts are read.
        assert_eq!(hv.calls().iter().filter(|c| *c == "probe_kvm").count(), 1);
    }

    #[tokio::test]
    async fn a_working_kvm_or_a_forced_type_keeps_the_offered_types() {
        let dir = tempfile::tempdir().unwrap();
        let hv = Arc::new(FakeHypervisor::new());
        let ops = ops_with(hv.clone(), dir.path(), None);
        assert_eq!(ops.facts().await.unwrap().domain_types, vec!["kvm", "qemu"]);
        assert_eq!(ops.accelerator().await.unwrap().kvm_usable, Some(true));

        let hv = Arc::new(FakeHypervisor::new());
        let ops = ops_with(hv.clone(), dir.path(), Some("qemu"));
        assert_eq!(ops.facts().await.unwrap().domain_types, vec!["kvm", "qemu"]);
        assert_eq!(ops.accelerator().await.unwrap().kvm_usable, None);
        assert!(!hv.calls().iter().any(|c| c == "probe_kvm"));
    }

    #[tokio::test]
    async fn primary_and_local_storage_must_be_reachable_by_qemus_user() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let hv = Arc::new(FakeHypervisor::new());
        let ops = ops_with(hv, dir.path(), None);
        ops.init_storage().await.unwrap();
        let above_ok = dir
            .path()
            .ancestors()
            .all(|d| std::fs::metadata(d).unwrap().permissions().mode() & 0o001 != 0);
        if above_ok {
            ops.check_storage_reachable().await.unwrap();
            let local = dir.path().join("local");
            std::fs::set_permissions(&local, std::fs::Permissions::from_mode(0o700)).unwrap();
            let m = ops.check_storage_reachable().await.unwrap_err().to_string();
            assert!(
                m.contains(&format!(
                    "cannot reach local storage at {}",
                    local.display()
                )),
                "{m}"
            );
            assert!(m.contains("--local-dir"), "{m}");
            std::fs::set_permissions(&local, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        // The fake's QEMU runs as uid 64055, which owns nothing here.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let err = ops.check_storage_reachable().await.unwrap_err();
        assert_eq!(err.code(), "setup");
        let m = err.to_string();
        assert!(
            m.contains(&format!("directory {} is mode 0700", dir.path().display())),
            "{m}"
        );
        assert!(m.contains("chmod o+x"), "{m}");
    }

    #[test]
    fn large_dhcp_ranges_are_cut_to_what_libvirt_accepts() {
        assert_eq!(
            dhcp_range("10.16.0.10", "10.31.255.250"),
            ("10.16.0.10".to_string(), "10.16.255.255".to_string())
        );
        assert_eq!(
            dhcp_range("10.1.1.2", "10.1.1.254"),
            ("10.1.1.2".to_string(), "10.1.1.254".to_string())
        );
    }

    #[test]
    fn network_names_fit_linux_bridge_limits() {
        let (net, br) = network_names("3f2a9c1e-0000-4000-8000-000000000000");
        assert_eq!(net, "orrery-3f2a9c1e");
        assert_eq!(br, "orrbr-3f2a9c1e");
        assert!(br.len() <= 15);
    }

    const MOVING: &str = "<domain type='qemu'><name>i-2-5-web</name>\
        <uuid>6f1c1d57-3b7e-4f0e-9a53-0c2b1c7c0a11</uuid>\
        <metadata><orrery:instance xmlns:orrery='https://orrery.dev/xmlns/domain/1'>\
        <orrery:uuid>6f1c1d57-3b7e-4f0e-9a53-0c2b1c7c0a11</orrery:uuid>\
        <orrery:name>web</orrery:name></orrery:instance></metadata>\
        <memory unit='KiB'>262144</memory><vcpu>1</vcpu>\
        <os><type arch='x86_64'>hvm</type></os><devices>\
        <interface type='network'><mac address='02:00:0a:01:00:05'/>\
        <source network='orrery-3f2a9c1e'/></interface></devices></domain>";

    fn guest_network() -> pb::GuestNetwork {
        pb::GuestNetwork {
            uuid: "3f2a9c1e-0000-4000-8000-000000000001".into(),
            name: "guests".into(),
            gateway: "10.1.0.1".into(),
            netmask: "255.255.0.0".into(),
            start_ip: "10.1.0.2".into(),
            end_ip: "10.1.255.254".into(),
            dns: String::new(),
        }
    }

    fn moving_spec() -> pb::InstanceSpec {
        pb::InstanceSpec {
            uuid: "6f1c1d57-3b7e-4f0e-9a53-0c2b1c7c0a11".into(),
            name: "i-2-5-web".into(),
            host_name: "web".into(),
            nics: vec![pb::NicSpec {
                mac: "02:00:0a:01:00:05".into(),
                ip: "10.1.0.5".into(),
                is_default: true,
                network: Some(guest_network()),
            }],
            ..Default::default()
        }
    }

    struct NoTemplates;

    #[async_trait::async_trait]
    impl TemplateSource for NoTemplates {
        async fn fetch(
            &self,
            uuid: &str,
            _file: tokio::fs::File,
        ) -> Result<tokio::fs::File, FetchError> {
            panic!("no template should be fetched ({uuid})")
        }
    }

    #[tokio::test]
    async fn the_destination_gets_networks_reservations_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        let hv = Arc::new(FakeHypervisor::new());
        let ops = ops_with(hv.clone(), dir.path(), Some("qemu"));
        let prep = pb::PrepareMigration {
            spec: Some(moving_spec()),
            copy_storage: false,
        };
        ops.prepare_migration(&prep).await.unwrap();
        assert!(hv.network("orrery-3f2a9c1e").unwrap().active);
        let hosts = hv.dhcp_hosts("orrery-3f2a9c1e");
        assert_eq!(hosts.len(), 1);
        assert_eq!(
            (hosts[0].ip.as_str(), hosts[0].name.as_str()),
            ("10.1.0.5", "web")
        );
        assert!(ops.cfg.console_dir().is_dir());
        // Shared storage: no volume is created, nothing is fetched.
        assert!(!dir.path().join("primary").join("6f1c1d57").exists());

        // An instance already running here is not overwritten.
        hv.define(MOVING).await.unwrap();
        hv.start("i-2-5-web").await.unwrap();
        let err = ops.prepare_migration(&prep).await.unwrap_err();
        assert!(err.to_string().contains("already runs"), "{err}");
    }

    #[tokio::test]
    async fn a_moved_domain_leaves_with_its_reservations() {
        let dir = tempfile::tempdir().unwrap();
        let hv = Arc::new(FakeHypervisor::new());
        let ops = ops_with(hv.clone(), dir.path(), Some("qemu"));
        let prep = pb::PrepareMigration {
            spec: Some(moving_spec()),
            copy_storage: false,
        };
        ops.prepare_migration(&prep).await.unwrap();
        hv.define(MOVING).await.unwrap();
        let cmd = pb::MigrateInstance {
            name: "i-2-5-web".into(),
            destination_uri: "qemu+tls://10.99.0.2/system".into(),
            migrate_uri: "tcp://10.99.0.2".into(),
            tls: true,
            shared_storage: true,
            ..Default::default()
        };
        let seen = std::sync::Mutex::new(Vec::new());
        let progress = |stage: &str, p: u32| seen.lock().unwrap().push((stage.to_string(), p));
        // Not running: refused, nothing changes.
        let err = ops.migrate(&cmd, &progress).await.unwrap_err();
        assert!(err.to_string().contains("not running"), "{err}");
        assert!(hv.domain("i-2-5-web").is_some());

        hv.start("i-2-5-web").await.unwrap();
        ops.migrate(&cmd, &progress).await.unwrap();
        assert!(hv.domain("i-2-5-web").is_none());
        assert!(hv.dhcp_hosts("orrery-3f2a9c1e").is_empty());

        // A failed move keeps the domain and its reservation here.
        ops.prepare_migration(&prep).await.unwrap();
        hv.define(MOVING).await.unwrap();
        hv.start("i-2-5-web").await.unwrap();
        hv.fail_next(
            "migrate",
            HvError::backend(codes::OPERATION_FAILED, "unable to connect to server"),
        );
        assert!(ops.migrate(&cmd, &progress).await.is_err());
        assert_eq!(hv.domain("i-2-5-web").unwrap().power, Power::On);
        assert_eq!(hv.dhcp_hosts("orrery-3f2a9c1e").len(), 1);
    }

    #[tokio::test]
    async fn cleanup_never_touches_a_running_domain() {
        let dir = tempfile::tempdir().unwrap();
        let hv = Arc::new(FakeHypervisor::new());
        let ops = ops_with(hv.clone(), dir.path(), Some("qemu"));
        hv.define(MOVING).await.unwrap();
        hv.start("i-2-5-web").await.unwrap();
        let c = pb::CleanupMigration {
            name: "i-2-5-web".into(),
            instance_uuid: "6f1c1d57-3b7e-4f0e-9a53-0c2b1c7c0a11".into(),
            volume_uuids: vec![],
            pool: String::new(),
        };
        assert!(ops.cleanup_migration(&c).await.is_err());
        assert!(hv.domain("i-2-5-web").is_some());
        hv.destroy("i-2-5-web").await.unwrap();
        // Another instance's domain of that name is not ours to remove.
        let other = pb::CleanupMigration {
            instance_uuid: "00000000-0000-4000-8000-000000000000".into(),
            ..c.clone()
        };
        assert!(ops.cleanup_migration(&other).await.is_err());
        assert!(hv.domain("i-2-5-web").is_some());
        ops.cleanup_migration(&c).await.unwrap();
        assert!(hv.domain("i-2-5-web").is_none());
        // Nothing left: still fine.
        ops.cleanup_migration(&c).await.unwrap();
    }

    #[test]
    fn job_progress_in_percent() {
        use crate::hypervisor::JobProgress;
        assert_eq!(JobProgress::default().percent(), 0);
        let p = JobProgress {
            processed: 50,
            total: 200,
            remaining: None,
        };
        assert_eq!(p.percent(), 25);
        let over = JobProgress {
            processed: 300,
            total: 200,
            remaining: None,
        };
        assert_eq!(over.percent(), 100);
        // Mostly empty memory: few bytes sent, most of it covered.
        let sparse = JobProgress {
            processed: 2,
            total: 200,
            remaining: Some(50),
        };
        assert_eq!(sparse.percent(), 75);
        // A remaining figure past the total (dirtied again) is not negative.
        let dirtied = JobProgress {
            processed: 20,
            total: 200,
            remaining: Some(400),
        };
        assert_eq!(dirtied.percent(), 10);
    }

    const SCALED: &str = "i-2-9-grow";

    /// Starts an instance of 1 vCPU and 512 MiB through `start` (so the
    /// spec's maximums go through the designer), its root volume already
    /// in place.
    fn gpu_spec(name: &str, uuid: &str, volume: &str, gpus: u32, vgpu: &str) -> pb::InstanceSpec {
        pb::InstanceSpec {
            uuid: uuid.into(),
            name: name.into(),
            display_name: name.into(),
            host_name: name.into(),
            vcpus: 1,
            memory_mib: 512,
            os_type: "Other Linux (64-bit)".into(),
            vnc_password: "secret".into(),
            volumes: vec![pb::VolumeSpec {
                uuid: volume.into(),
                kind: "ROOT".into(),
                device_id: 0,
                size_bytes: 1 << 30,
                format: "qcow2".into(),
                pool: String::new(),
                from_snapshot: String::new(),
            }],
            gpu_count: gpus,
            vgpu_type: vgpu.into(),
            ..Default::default()
        }
    }

    /// Whole GPUs go to the instances that ask, never one to two running
    /// domains; a stopped domain's are free again. A vGPU is created on a
    /// card with room for its type, and removed at stop.
    #[tokio::test]
    async fn gpus_are_assigned_from_what_no_running_domain_holds() {
        let dir = tempfile::tempdir().unwrap();
        let hv = Arc::new(FakeHypervisor::new());
        let mut ops = ops_with(hv.clone(), dir.path(), Some("qemu"));
        let sysfs = dir.path().join("sys");
        crate::host::gpu::fixture::build(&sysfs);
        ops.cfg.sysfs_root = sysfs.clone();
        ops.primary.init().await.unwrap();
        let vols = [
            "0c5f7d1e-0000-4000-8000-0000000000a1",
            "0c5f7d1e-0000-4000-8000-0000000000a2",
            "0c5f7d1e-0000-4000-8000-0000000000a3",
            "0c5f7d1e-0000-4000-8000-0000000000a4",
        ];
        for v in vols {
            std::fs::write(ops.primary.volume_path(v).unwrap(), b"").unwrap();
        }
        let mut a = gpu_spec(
            "i-2-1-a",
            "7a2d9c40-1b3e-4f56-8a7b-9c0d1e2f3a01",
            vols[0],
            1,
            "",
        );
        // Its GPU is its display: no emulated video card.
        a.gpu_display = true;
        let b = gpu_spec(
            "i-2-2-b",
            "7a2d9c40-1b3e-4f56-8a7b-9c0d1e2f3a02",
            vols[1],
            1,
            "",
        );
        let c = gpu_spec(
            "i-2-3-c",
            "7a2d9c40-1b3e-4f56-8a7b-9c0d1e2f3a03",
            vols[2],
            1,
            "",
        );
        ops.start(&a, &NoTemplates).await.unwrap();
        ops.start(&b, &NoTemplates).await.unwrap();
        let pci = |name: &str| -> Vec<String> {
            Domain::from_xml(&hv.domain(name).unwrap().xml)
                .unwrap()
                .devices
                .hostdevs
                .iter()
                .filter_map(|h| match h {
                    domxml::Hostdev::Pci { address, .. } => Some(address.to_string()),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(pci("i-2-1-a"), vec!["0000:3b:00.0"]);
        let video = |name: &str| {
            Domain::from_xml(&hv.domain(name).unwrap().xml)
                .unwrap()
                .devices
                .videos[0]
                .model
        };
        assert_eq!(video("i-2-1-a"), domxml::VideoModel::None);
        assert_eq!(video("i-2-2-b"), domxml::VideoModel::Vga);
        assert_eq!(pci("i-2-2-b"), vec!["0000:5e:00.0"]);
        let err = ops.start(&c, &NoTemplates).await.unwrap_err();
        assert!(err.to_string().contains("0 free GPU"), "{err}");
        ops.stop("i-2-1-a", true, Duration::from_secs(1))
            .await
            .unwrap();
        ops.start(&c, &NoTemplates).await.unwrap();
        assert_eq!(pci("i-2-3-c"), vec!["0000:3b:00.0"]);

        // A vGPU: the device is created under the instance's uuid.
        let v = gpu_spec(
            "i-2-4-v",
            "7a2d9c40-1b3e-4f56-8a7b-9c0d1e2f3a04",
            vols[3],
            0,
            "GRID T4-8Q",
        );
        ops.start(&v, &NoTemplates).await.unwrap();
        let create =
            sysfs.join("bus/pci/devices/0000:af:00.0/mdev_supported_types/nvidia-231/create");
        assert_eq!(
            std::fs::read_to_string(create).unwrap().trim(),
            "7a2d9c40-1b3e-4f56-8a7b-9c0d1e2f3a04"
        );
        let dom = Domain::from_xml(&hv.domain("i-2-4-v").unwrap().xml).unwrap();
        assert!(matches!(
            &dom.devices.hostdevs[..],
            [domxml::Hostdev::Mdev { uuid, .. }] if uuid == "7a2d9c40-1b3e-4f56-8a7b-9c0d1e2f3a04"
        ));
        // The kernel would have made the device; its remove file is written
        // at stop.
        let mdev = sysfs.join("bus/mdev/devices/7a2d9c40-1b3e-4f56-8a7b-9c0d1e2f3a04");
        std::fs::create_dir_all(&mdev).unwrap();
        std::fs::write(mdev.join("remove"), "").unwrap();
        ops.stop("i-2-4-v", true, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(mdev.join("remove")).unwrap().trim(),
            "1"
        );
    }

    async fn started(ops: &Ops, max_vcpus: u32, max_memory_mib: u64) {
        ops.primary.init().await.unwrap();
        let volume = "0c5f7d1e-0000-4000-8000-000000000009";
        std::fs::write(ops.primary.volume_path(volume).unwrap(), b"").unwrap();
        let spec = pb::InstanceSpec {
            uuid: "7a2d9c40-1b3e-4f56-8a7b-9c0d1e2f3a49".into(),
            name: SCALED.into(),
            display_name: "grow".into(),
            host_name: "grow".into(),
            vcpus: 1,
            memory_mib: 512,
            os_type: "Other Linux (64-bit)".into(),
            vnc_password: "secret".into(),
            volumes: vec![pb::VolumeSpec {
                uuid: volume.into(),
                kind: "ROOT".into(),
                device_id: 0,
                size_bytes: 1 << 30,
                format: "qcow2".into(),
                pool: String::new(),
                from_snapshot: String::new(),
            }],
            max_vcpus,
            max_memory_mib,
            ..Default::default()
        };
        ops.start(&spec, &NoTemplates).await.unwrap();
    }

    async fn live(hv: &FakeHypervisor) -> Domain {
        Domain::from_xml(&hv.domain_xml(SCALED).await.unwrap()).unwrap()
    }

    fn scale_to(vcpus: u32, memory_mib: u64) -> pb::ScaleInstance {
        pb::ScaleInstance {
            name: SCALED.into(),
            vcpus,
            memory_mib,
        }
    }

    /// The calls that change a domain, of those made so far.
    fn changes(hv: &FakeHypervisor) -> Vec<String> {
        hv.calls()
            .into_iter()
            .filter(|c| c.starts_with("attach_device") || c.starts_with("set_vcpus"))
            .collect()
    }

    #[tokio::test]
    async fn a_scalable_instance_starts_with_room_for_its_maximums() {
        let dir = tempfile::tempdir().unwrap();
        let hv = Arc::new(FakeHypervisor::new());
        let ops = ops_with(hv.clone(), dir.path(), Some("qemu"));
        started(&ops, 4, 2048).await;
        let d = live(&hv).await;
        assert_eq!((d.vcpu.count, d.vcpu.current), (4, Some(1)));
        assert_eq!(
            d.max_memory,
            Some(domxml::MaxMemory {
                slots: designer::MEMORY_SLOTS,
                kib: 2048 * 1024
            })
        );
        assert_eq!(d.memory_kib, 512 * 1024);
        assert_eq!(d.cpu.unwrap().numa.len(), 1);

        // 0 on the wire is "not scalable".
        let hv = Arc::new(FakeHypervisor::new());
        let ops = ops_with(hv.clone(), dir.path(), Some("qemu"));
        started(&ops, 0, 0).await;
        let d = live(&hv).await;
        assert_eq!((d.vcpu.count, d.vcpu.current), (1, None));
        assert_eq!(d.max_memory, None);
    }

    #[tokio::test]
    async fn scaling_brings_vcpus_online_and_plugs_one_module_of_the_difference() {
        let dir = tempfile::tempdir().unwrap();
        let hv = Arc::new(FakeHypervisor::new());
        let ops = ops_with(hv.clone(), dir.path(), Some("qemu"));
        started(&ops, 4, 2048).await;

        ops.scale(&scale_to(2, 1024)).await.unwrap();
        assert_eq!(
            changes(&hv),
            vec![
                format!("attach_device {SCALED}"),
                format!("set_vcpus {SCALED}")
            ]
        );
        let d = live(&hv).await;
        assert_eq!((d.vcpu.count, d.vcpu.current), (4, Some(2)));
        assert_eq!(d.memory_kib, 1024 * 1024);
        assert_eq!(
            d.devices.memories,
            vec![domxml::MemoryDevice {
                size_kib: 512 * 1024,
                node: Some(designer::HOTPLUG_NUMA_NODE)
            }]
        );

        // Up to the maximums, one module per step; vCPUs alone.
        ops.scale(&scale_to(2, 2048)).await.unwrap();
        ops.scale(&scale_to(4, 2048)).await.unwrap();
        let d = live(&hv).await;
        assert_eq!((d.vcpu.count, d.vcpu.current), (4, None));
        assert_eq!(d.memory_kib, 2048 * 1024);
        assert_eq!(
            d.devices
                .memories
                .iter()
                .map(|m| m.size_kib / 1024)
                .collect::<Vec<_>>(),
            vec![512, 1024]
        );
        assert_eq!(changes(&hv).len(), 4);

        // What it has already: nothing to do.
        hv.clear_calls();
        ops.scale(&scale_to(4, 2048)).await.unwrap();
        assert!(changes(&hv).is_empty(), "{:?}", hv.calls());
    }

    #[tokio::test]
    async fn scaling_refuses_what_the_domain_has_no_room_for_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let hv = Arc::new(FakeHypervisor::new());
        let ops = ops_with(hv.clone(), dir.path(), Some("qemu"));
        started(&ops, 4, 2048).await;
        ops.scale(&scale_to(2, 1024)).await.unwrap();
        hv.clear_calls();
        let before = live(&hv).await;

        for (vcpus, memory_mib, expected) in [
            (1, 1024, "never lowers them"),
            (2, 768, "never lowers it"),
            (5, 1024, "room for 4 (the most it was started with)"),
            (3, 4096, "the most it was started with is 2048 MiB"),
            (2, 1025, "only in steps of 2 MiB"),
        ] {
            let err = ops.scale(&scale_to(vcpus, memory_mib)).await.unwrap_err();
            assert_eq!(err.code(), "invalid");
            let m = err.to_string();
            assert!(m.contains(expected), "{vcpus} {memory_mib}: {m}");
            assert!(m.contains(SCALED), "{m}");
        }
        assert!(changes(&hv).is_empty(), "{:?}", hv.calls());
        assert_eq!(live(&hv).await, before);

        // Not running.
        hv.destroy(SCALED).await.unwrap();
        let err = ops.scale(&scale_to(4, 2048)).await.unwrap_err();
        assert!(err.to_string().contains("is not running"), "{err}");
        assert!(changes(&hv).is_empty());

        // Unknown.
        let err = ops
            .scale(&pb::ScaleInstance {
                name: "i-2-404-gone".into(),
                vcpus: 1,
                memory_mib: 512,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), "not-found");
    }

    #[tokio::test]
    async fn an_instance_not_started_scalable_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let hv = Arc::new(FakeHypervisor::new());
        let ops = ops_with(hv.clone(), dir.path(), Some("qemu"));
        started(&ops, 0, 0).await;
        let err = ops.scale(&scale_to(2, 512)).await.unwrap_err();
        assert!(err.to_string().contains("not started scalable"), "{err}");
        let err = ops.scale(&scale_to(1, 1024)).await.unwrap_err();
        assert!(err.to_string().contains("not started scalable"), "{err}");
        assert!(changes(&hv).is_empty());
        // Asking for what it has is still fine.
        ops.scale(&scale_to(1, 512)).await.unwrap();
    }

    #[tokio::test]
    async fn every_memory_slot_used_refuses_another_module() {
        let dir = tempfile::tempdir().unwrap();
        let hv = Arc::new(FakeHypervisor::new());
        let ops = ops_with(hv.clone(), dir.path(), Some("qemu"));
        started(&ops, 1, 4096).await;
        let slots = designer::MEMORY_SLOTS as u64;
        for step in 1..=slots {
            ops.scale(&scale_to(1, 512 + step * 128)).await.unwrap();
        }
        assert_eq!(live(&hv).await.devices.memories.len() as u64, slots);
        let err = ops
            .scale(&scale_to(1, 512 + (slots + 1) * 128))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("all its 16 memory slots"), "{err}");
    }

    #[tokio::test]
    async fn a_hypervisor_failure_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let hv = Arc::new(FakeHypervisor::new());
        let ops = ops_with(hv.clone(), dir.path(), Some("qemu"));
        started(&ops, 4, 2048).await;
        hv.fail_next(
            "attach_device",
            HvError::backend(
                codes::INTERNAL_ERROR,
                "internal error: unable to execute QEMU command 'device_add'",
            ),
        );
        let err = ops.scale(&scale_to(2, 1024)).await.unwrap_err();
        assert_eq!(err.code(), "hypervisor");
        // The memory step failed first: no vCPU was brought online.
        assert_eq!(live(&hv).await.vcpu.current, Some(1));
    }

    const ROOT_VOL: &str = "0c5f7d1e-0000-4000-8000-0000000000a1";
    const DATA_VOL: &str = "0c5f7d1e-0000-4000-8000-0000000000a2";
    const TEMPLATE: &str = "7e3a0b52-0000-4000-8000-0000000000f1";

    /// A running instance's XML as libvirt reports it: a root overlay with
    /// its backing chain, a data disk, a cached ISO, device addresses.
    fn with_disks(root: &std::path::Path, data: &std::path::Path, iso: &std::path::Path) -> String {
        format!(
            "<domain type='qemu'><name>i-2-5-web</name>\
            <uuid>6f1c1d57-3b7e-4f0e-9a53-0c2b1c7c0a11</uuid>\
            <metadata><orrery:instance xmlns:orrery='https://orrery.dev/xmlns/domain/1'>\
            <orrery:uuid>6f1c1d57-3b7e-4f0e-9a53-0c2b1c7c0a11</orrery:uuid>\
            <orrery:name>web</orrery:name></orrery:instance></metadata>\
            <memory unit='KiB'>262144</memory><vcpu>1</vcpu>\
            <os><type arch='x86_64'>hvm</type></os><devices>\
            <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>\
            <source file='{}' index='2'/>\
            <backingStore type='file' index='3'><format type='qcow2'/>\
            <source file='/srv/templates/t.qcow2'/><backingStore/></backingStore>\
            <target dev='vda' bus='virtio'/>\
            <address type='pci' domain='0x0000' bus='0x00' slot='0x04' function='0x0'/></disk>\
            <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>\
            <source file='{}' index='1'/><target dev='vdb' bus='virtio'/>\
            <address type='pci' domain='0x0000' bus='0x00' slot='0x07' function='0x0'/></disk>\
            <disk type='file' device='cdrom'><driver name='qemu' type='raw'/>\
            <source file='{}'/><target dev='hdc' bus='ide'/><readonly/></disk>\
            <controller type='pci' index='0' model='pci-root'/>\
            <interface type='network'><mac address='02:00:0a:01:00:05'/>\
            <source network='orrery-3f2a9c1e'/></interface></devices></domain>",
            root.display(),
            data.display(),
            iso.display()
        )
    }

    fn disks_of(xml: &str) -> Vec<(String, Option<String>)> {
        Domain::from_xml(xml)
            .unwrap()
            .devices
            .disks
            .into_iter()
            .map(|d| (d.target_dev, d.source))
            .collect()
    }

    fn path_str(p: std::path::PathBuf) -> Option<String> {
        Some(p.display().to_string())
    }

    #[test]
    fn the_destination_definition_points_moved_volumes_at_their_new_files() {
        let root = std::path::PathBuf::from(format!("/srv/local/{ROOT_VOL}.qcow2"));
        let data = std::path::PathBuf::from(format!("/srv/primary/{DATA_VOL}.qcow2"));
        let iso = std::path::PathBuf::from("/srv/primary/templates/x.iso");
        let xml = with_disks(&root, &data, &iso);
        let moves = [VolumeFileMove {
            uuid: DATA_VOL.into(),
            from: data.clone(),
            to: format!("/srv/local/{DATA_VOL}.qcow2").into(),
        }];
        let d = destination_xml(&xml, &moves).unwrap();
        assert_eq!(d.targets, vec!["vdb"]);
        assert_eq!(
            disks_of(&d.xml),
            vec![
                ("vda".to_string(), path_str(root.clone())),
                (
                    "vdb".to_string(),
                    Some(format!("/srv/local/{DATA_VOL}.qcow2"))
                ),
                ("hdc".to_string(), path_str(iso.clone())),
            ]
        );
        // What the model does not hold is kept: the unmoved root's backing
        // chain, addresses, controllers.
        assert!(d.xml.contains("/srv/templates/t.qcow2"), "{}", d.xml);
        assert!(d.xml.contains("slot=\"0x07\""), "{}", d.xml);
        assert!(d.xml.contains("model=\"pci-root\""), "{}", d.xml);

        // The root moves too: its copy has no backing file.
        let both = [
            VolumeFileMove {
                uuid: ROOT_VOL.into(),
                from: root.clone(),
                to: format!("/srv/local2/{ROOT_VOL}.qcow2").into(),
            },
            moves[0].clone(),
        ];
        let d = destination_xml(&xml, &both).unwrap();
        assert_eq!(d.targets, vec!["vda", "vdb"]);
        assert!(!d.xml.contains("/srv/templates/t.qcow2"), "{}", d.xml);

        // A volume the domain has no disk for.
        let other = "0c5f7d1e-0000-4000-8000-0000000000ff";
        let err = destination_xml(
            &xml,
            &[
                moves[0].clone(),
                VolumeFileMove {
                    uuid: other.into(),
                    from: format!("/srv/primary/{other}.qcow2").into(),
                    to: format!("/srv/local/{other}.qcow2").into(),
                },
            ],
        )
        .unwrap_err();
        assert_eq!(err.code(), "invalid");
        assert!(
            err.to_string()
                .contains(&format!("volume {other} is not a disk of the domain")),
            "{err}"
        );
    }

    /// The real qemu-img, or None (the test is skipped) when it is not
    /// installed and the hypervisor stack is not required.
    fn qemu_img_installed() -> bool {
        let ok = std::process::Command::new("qemu-img")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            assert_ne!(
                std::env::var("ORRERY_REQUIRE_LIBVIRT").as_deref(),
                Ok("1"),
                "ORRERY_REQUIRE_LIBVIRT=1 but qemu-img is not installed"
            );
            eprintln!("skipping: qemu-img is not installed");
        }
        ok
    }

    #[tokio::test]
    async fn copied_storage_gets_empty_images_of_the_disks_sizes_in_their_pools() {
        if !qemu_img_installed() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let hv = Arc::new(FakeHypervisor::new());
        let ops = ops_with(hv.clone(), dir.path(), Some("qemu"));
        ops.init_storage().await.unwrap();
        // The template the root was made from is larger than the size asked
        // for, so the root is as large as the template.
        let template = ops
            .primary
            .template_cache(TEMPLATE, ImageFormat::Qcow2)
            .unwrap();
        ops.primary
            .qemu_img()
            .create(&template, ImageFormat::Qcow2, 96 << 20)
            .await
            .unwrap();
        // A volume that stays in (shared) primary storage is there already.
        let staying = "0c5f7d1e-0000-4000-8000-0000000000a3";
        std::fs::write(ops.primary.volume_path(staying).unwrap(), b"kept").unwrap();
        let volume = |uuid: &str, kind: &str, size_bytes: u64, pool: &str| pb::VolumeSpec {
            uuid: uuid.into(),
            kind: kind.into(),
            device_id: 0,
            size_bytes,
            format: "qcow2".into(),
            pool: pool.into(),
            from_snapshot: String::new(),
        };
        let spec = pb::InstanceSpec {
            template: Some(pb::TemplateRef {
                uuid: TEMPLATE.into(),
                format: "qcow2".into(),
                checksum: String::new(),
                size_bytes: 0,
            }),
            volumes: vec![
                volume(ROOT_VOL, "ROOT", 64 << 20, LOCAL_POOL),
                volume(DATA_VOL, "DATADISK", 32 << 20, LOCAL_POOL),
                volume(staying, "DATADISK", 16 << 20, ""),
            ],
            ..moving_spec()
        };
        let prep = pb::PrepareMigration {
            spec: Some(spec),
            copy_storage: true,
        };
        ops.prepare_migration(&prep).await.unwrap();
        for (uuid, size) in [(ROOT_VOL, 96u64 << 20), (DATA_VOL, 32 << 20)] {
            let path = ops.local.volume_path(uuid).unwrap();
            let info = ops.local.qemu_img().info(&path, None).await.unwrap();
            assert_eq!(info.virtual_size, size, "{uuid}");
            assert_eq!(info.format, "qcow2");
            assert_eq!(info.backing, None, "{uuid}");
            assert!(!ops.primary.volume_path(uuid).unwrap().exists());
        }
        assert_eq!(
            std::fs::read(ops.primary.volume_path(staying).unwrap()).unwrap(),
            b"kept"
        );
        assert!(!ops.local.volume_path(staying).unwrap().exists());
        // Prepared again (a retried command): the files are kept as they are.
        ops.prepare_migration(&prep).await.unwrap();

        // A pool this agent does not know.
        let mut bad = prep.clone();
        bad.spec.as_mut().unwrap().volumes[0].pool = "ceph".into();
        let err = ops.prepare_migration(&bad).await.unwrap_err();
        assert!(
            err.to_string().contains("unknown storage pool \"ceph\""),
            "{err}"
        );
    }

    /// Volume files for [`with_disks`]: the root in local storage, the data
    /// disk in primary storage, the ISO cached with the templates.
    async fn placed_volumes(
        ops: &Ops,
    ) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
        ops.init_storage().await.unwrap();
        let root = ops.local.volume_path(ROOT_VOL).unwrap();
        let data = ops.primary.volume_path(DATA_VOL).unwrap();
        let iso = ops
            .primary
            .template_cache(TEMPLATE, ImageFormat::Raw)
            .unwrap();
        for f in [&root, &data, &iso] {
            std::fs::write(f, b"disk").unwrap();
        }
        (root, data, iso)
    }

    #[tokio::test]
    async fn moved_volumes_reach_the_destination_in_their_new_pools_and_leave_here() {
        let dir = tempfile::tempdir().unwrap();
        let hv = Arc::new(FakeHypervisor::new());
        let ops = ops_with(hv.clone(), dir.path(), Some("qemu"));
        let (root, data, iso) = placed_volumes(&ops).await;
        hv.define(&with_disks(&root, &data, &iso)).await.unwrap();
        hv.start("i-2-5-web").await.unwrap();
        let mv = |uuid: &str, from_pool: &str, pool: &str| pb::VolumeMove {
            uuid: uuid.into(),
            pool: pool.into(),
            from_pool: from_pool.into(),
        };
        let cmd = pb::MigrateInstance {
            name: "i-2-5-web".into(),
            destination_uri: "qemu+tls://10.99.0.2/system".into(),
            copy_storage: true,
            moves: vec![
                mv(ROOT_VOL, LOCAL_POOL, LOCAL_POOL),
                mv(DATA_VOL, "", LOCAL_POOL),
            ],
            ..Default::default()
        };
        let progress = |_: &str, _: u32| {};

        // Refused before anything moves: a volume the domain does not
        // have, a move within shared primary storage, moves without copying.
        let stray = "0c5f7d1e-0000-4000-8000-0000000000ff";
        let refused = [
            pb::MigrateInstance {
                moves: vec![
                    mv(ROOT_VOL, LOCAL_POOL, LOCAL_POOL),
                    mv(stray, "", LOCAL_POOL),
                ],
                ..cmd.clone()
            },
            pb::MigrateInstance {
                moves: vec![mv(DATA_VOL, "", "")],
                shared_storage: true,
                ..cmd.clone()
            },
            pb::MigrateInstance {
                copy_storage: false,
                ..cmd.clone()
            },
            pb::MigrateInstance {
                moves: vec![mv(DATA_VOL, "nfs", LOCAL_POOL)],
                ..cmd.clone()
            },
        ];
        for bad in &refused {
            let err = ops.migrate(bad, &progress).await.unwrap_err();
            assert_eq!(err.code(), "invalid", "{err}");
        }
        assert!(!hv.calls().iter().any(|c| c.starts_with("migrate ")));

        // A failed move deletes nothing.
        hv.fail_next(
            "migrate",
            HvError::backend(codes::OPERATION_FAILED, "unable to connect to server"),
        );
        assert!(ops.migrate(&cmd, &progress).await.is_err());
        assert_eq!(hv.domain("i-2-5-web").unwrap().power, Power::On);
        for f in [&root, &data, &iso] {
            assert!(f.exists(), "{}", f.display());
        }

        ops.migrate(&cmd, &progress).await.unwrap();
        let (name, plan) = hv.migrations().pop().unwrap();
        assert_eq!(name, "i-2-5-web");
        assert!(plan.copy_storage);
        assert_eq!(plan.migrate_disks, vec!["vda", "vdb"]);
        let dest = plan.dest_xml.expect("a destination definition");
        assert_eq!(
            disks_of(&dest),
            vec![
                ("vda".to_string(), path_str(root.clone())),
                (
                    "vdb".to_string(),
                    path_str(ops.local.volume_path(DATA_VOL).unwrap())
                ),
                ("hdc".to_string(), path_str(iso.clone())),
            ]
        );
        // The moved files are gone here; the cached ISO stays.
        assert!(!root.exists());
        assert!(!data.exists());
        assert!(iso.exists());
        assert!(hv.domain("i-2-5-web").is_none());
    }

    #[tokio::test]
    async fn a_migration_without_moves_keeps_the_definition() {
        let dir = tempfile::tempdir().unwrap();
        let hv = Arc::new(FakeHypervisor::new());
        let ops = ops_with(hv.clone(), dir.path(), Some("qemu"));
        let (root, data, iso) = placed_volumes(&ops).await;
        hv.define(&with_disks(&root, &data, &iso)).await.unwrap();
        hv.start("i-2-5-web").await.unwrap();
        let cmd = pb::MigrateInstance {
            name: "i-2-5-web".into(),
            destination_uri: "qemu+tls://10.99.0.2/system".into(),
            copy_storage: true,
            ..Default::default()
        };
        ops.migrate(&cmd, &|_, _| {}).await.unwrap();
        let (_, plan) = hv.migrations().pop().unwrap();
        assert_eq!(plan.dest_xml, None);
        assert!(plan.migrate_disks.is_empty());
        assert!(root.exists() && data.exists());
    }

    #[tokio::test]
    async fn expunge_removes_volume_files_of_both_pools() {
        let dir = tempfile::tempdir().unwrap();
        let hv = Arc::new(FakeHypervisor::new());
        let ops = ops_with(hv.clone(), dir.path(), Some("qemu"));
        let (root, data, iso) = placed_volumes(&ops).await;
        hv.define(&with_disks(&root, &data, &iso)).await.unwrap();
        hv.start("i-2-5-web").await.unwrap();
        ops.expunge("i-2-5-web").await.unwrap();
        assert!(hv.domain("i-2-5-web").is_none());
        assert!(!root.exists());
        assert!(!data.exists());
        assert!(iso.exists());
    }

    #[tokio::test]
    async fn cleanup_deletes_copied_files_in_the_pool_named() {
        let dir = tempfile::tempdir().unwrap();
        let hv = Arc::new(FakeHypervisor::new());
        let ops = ops_with(hv.clone(), dir.path(), Some("qemu"));
        ops.init_storage().await.unwrap();
        for f in [
            ops.local.volume_path(DATA_VOL).unwrap(),
            ops.primary.volume_path(DATA_VOL).unwrap(),
        ] {
            std::fs::write(f, b"disk").unwrap();
        }
        let c = pb::CleanupMigration {
            name: "i-2-5-web".into(),
            instance_uuid: "6f1c1d57-3b7e-4f0e-9a53-0c2b1c7c0a11".into(),
            volume_uuids: vec![DATA_VOL.into()],
            pool: LOCAL_POOL.into(),
        };
        ops.cleanup_migration(&c).await.unwrap();
        assert!(!ops.local.volume_path(DATA_VOL).unwrap().exists());
        assert!(ops.primary.volume_path(DATA_VOL).unwrap().exists());
        let err = ops
            .cleanup_migration(&pb::CleanupMigration {
                pool: "nfs".into(),
                ..c
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), "invalid");
        assert!(ops.primary.volume_path(DATA_VOL).unwrap().exists());
    }

    #[tokio::test]
    async fn volumes_start_plug_and_grow_in_the_pool_they_name() {
        let dir = tempfile::tempdir().unwrap();
        let hv = Arc::new(FakeHypervisor::new());
        let ops = ops_with(hv.clone(), dir.path(), Some("qemu"));
        ops.init_storage().await.unwrap();
        let (root, data) = (
            ops.local.volume_path(ROOT_VOL).unwrap(),
            ops.local.volume_path(DATA_VOL).unwrap(),
        );
        std::fs::write(&root, b"").unwrap();
        std::fs::write(&data, b"").unwrap();
        let volume = |uuid: &str, kind: &str, device_id: i64| pb::VolumeSpec {
            uuid: uuid.into(),
            kind: kind.into(),
            device_id,
            size_bytes: 1 << 30,
            format: "qcow2".into(),
            pool: LOCAL_POOL.into(),
            from_snapshot: String::new(),
        };
        let spec = pb::InstanceSpec {
            display_name: "web".into(),
            vcpus: 1,
            memory_mib: 256,
            os_type: "Other Linux (64-bit)".into(),
            vnc_password: "secret".into(),
            volumes: vec![volume(ROOT_VOL, "ROOT", 0)],
            ..moving_spec()
        };
        ops.start(&spec, &NoTemplates).await.unwrap();
        let xml = hv.domain_xml("i-2-5-web").await.unwrap();
        assert_eq!(disks_of(&xml)[0].1, path_str(root.clone()));

        let op = pb::VolumeOp {
            instance: "i-2-5-web".into(),
            volume: Some(volume(DATA_VOL, "DATADISK", 1)),
        };
        ops.attach(&op, &NoTemplates).await.unwrap();
        let attached = hv.domain("i-2-5-web").unwrap().attached;
        assert_eq!(attached.len(), 1);
        assert!(
            attached[0].contains(&data.display().to_string()),
            "{}",
            attached[0]
        );

        // The root disk, grown through QEMU while the instance runs.
        let grow = pb::VolumeOp {
            instance: "i-2-5-web".into(),
            volume: Some(pb::VolumeSpec {
                size_bytes: 2 << 30,
                ..volume(ROOT_VOL, "ROOT", 0)
            }),
        };
        ops.resize(&grow).await.unwrap();
        assert_eq!(hv.domain("i-2-5-web").unwrap().block_sizes["vda"], 2 << 30);
    }

    #[tokio::test]
    async fn a_reset_deletes_the_file_in_the_pool_named_while_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let hv = Arc::new(FakeHypervisor::new());
        let ops = ops_with(hv.clone(), dir.path(), Some("qemu"));
        let (root, data, iso) = placed_volumes(&ops).await;
        let in_primary = ops.primary.volume_path(ROOT_VOL).unwrap();
        std::fs::write(&in_primary, b"other").unwrap();
        hv.define(&with_disks(&root, &data, &iso)).await.unwrap();
        hv.start("i-2-5-web").await.unwrap();
        let op = pb::VolumeOp {
            instance: "i-2-5-web".into(),
            volume: Some(pb::VolumeSpec {
                uuid: ROOT_VOL.into(),
                kind: "ROOT".into(),
                pool: LOCAL_POOL.into(),
                ..Default::default()
            }),
        };
        assert_eq!(ops.reset_volume(&op).await.unwrap_err().code(), "invalid");
        assert!(root.exists());
        hv.destroy("i-2-5-web").await.unwrap();
        ops.reset_volume(&op).await.unwrap();
        assert!(!root.exists());
        assert!(in_primary.exists());
    }

    #[tokio::test]
    async fn a_stopped_instances_volume_moves_between_pools() {
        let dir = tempfile::tempdir().unwrap();
        let hv = Arc::new(FakeHypervisor::new());
        let ops = ops_with(hv.clone(), dir.path(), Some("qemu"));
        ops.init_storage().await.unwrap();
        let uuid = "0b0e4c34-6a1c-4a5e-8d57-3f2b8f1d9a01";
        ops.primary.create_data(uuid, 64 << 20).await.unwrap();
        let mv = |to: &str, instance: &str| pb::MoveVolume {
            volume: Some(pb::VolumeSpec {
                uuid: uuid.into(),
                kind: "DATADISK".into(),
                size_bytes: 64 << 20,
                format: "qcow2".into(),
                pool: if to == "local" {
                    String::new()
                } else {
                    "local".into()
                },
                ..Default::default()
            }),
            to_pool: to.into(),
            instance: instance.into(),
        };
        // A running instance keeps its volume where it is.
        hv.define(MOVING).await.unwrap();
        hv.start("i-2-5-web").await.unwrap();
        let err = ops
            .move_volume(&mv("local", "i-2-5-web"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("running"), "{err}");
        assert!(ops.primary.volume_path(uuid).unwrap().exists());

        hv.destroy("i-2-5-web").await.unwrap();
        ops.move_volume(&mv("local", "i-2-5-web")).await.unwrap();
        let moved = ops.local.volume_path(uuid).unwrap();
        assert!(moved.exists() && !ops.primary.volume_path(uuid).unwrap().exists());
        let info = ops.local.qemu_img().info(&moved, None).await.unwrap();
        assert_eq!(info.virtual_size, 64 << 20);
        // And back, with no instance named (a detached volume).
        ops.move_volume(&mv("", "")).await.unwrap();
        assert!(ops.primary.volume_path(uuid).unwrap().exists() && !moved.exists());
        // Nothing there to move: refused.
        assert!(ops.move_volume(&mv("", "")).await.is_err());
    }

    #[tokio::test]
    async fn a_migration_past_its_time_limit_is_aborted_and_the_domain_stays() {
        let dir = tempfile::tempdir().unwrap();
        let hv = Arc::new(FakeHypervisor::new());
        let ops = ops_with(hv.clone(), dir.path(), Some("qemu"));
        hv.define(MOVING).await.unwrap();
        hv.start("i-2-5-web").await.unwrap();
        hv.hang_migrations();
        let cmd = pb::MigrateInstance {
            name: "i-2-5-web".into(),
            destination_uri: "qemu+tls://10.99.0.2/system".into(),
            shared_storage: true,
            timeout_seconds: 1,
            ..Default::default()
        };
        let started = std::time::Instant::now();
        let err = ops.migrate(&cmd, &|_, _| {}).await.unwrap_err();
        assert!(
            matches!(err, OpError::Hypervisor(HvError::Timeout(_))),
            "{err}"
        );
        assert!(err.to_string().contains("aborted"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(hv.calls().iter().any(|c| c == "abort_job i-2-5-web"));
        assert_eq!(hv.domain("i-2-5-web").unwrap().power, Power::On);
    }

    #[tokio::test]
    async fn storage_init_makes_the_directories_definitions_name() {
        let dir = tempfile::tempdir().unwrap();
        let ops = ops_with(Arc::new(FakeHypervisor::new()), dir.path(), Some("qemu"));
        ops.init_storage().await.unwrap();
        for d in [ops.cfg.console_dir(), ops.cfg.nvram_dir()] {
            assert!(d.is_dir(), "{}", d.display());
        }
    }
}
