//! Volume snapshots: a volume's content at one instant, copied off primary
//! storage into secondary storage (`<data dir>/secondary/snapshot/`) so it
//! outlives the volume. The host holding the volume makes the copy (a
//! running instance's through a momentary internal snapshot, its file
//! systems frozen around it when `quiescevm` is asked) and uploads it under
//! a one-time grant. From a snapshot come new volumes (made on first use),
//! templates, and a volume's content put back (`revertSnapshot`).
//!
//! CloudStack's rules: the volume must be Ready and its instance (if any)
//! Running or Stopped; one snapshot task per instance at a time, and none
//! while an instance snapshot task runs; a revert needs the volume detached
//! or its instance Stopped, and no instance snapshots. Recurring snapshots
//! (policies, see `snapshot_policies`) keep at most `maxsnaps` of their
//! interval; manual ones are never removed by them.

use super::agent::AgentError;
use super::jobs::{JobOutput, NewJob, Work};
use super::*;
use crate::store::Kind;
use chrono::Utc;
use orrery_model::VmState;
use std::path::PathBuf;

pub const BACKED_UP: &str = "BackedUp";
pub const CREATING: &str = "Creating";
pub const ALLOCATED: &str = "Allocated";
pub const ERROR: &str = "Error";
pub const DESTROYED: &str = "Destroyed";

/// Room a qcow2 copy may take beyond its virtual size (metadata).
const COPY_OVERHEAD: u64 = 256 << 20;

/// What createSnapshot asks for.
#[derive(Debug, Clone, Default)]
pub struct NewSnapshot {
    pub name: Option<String>,
    pub quiesce: bool,
    /// Taken for a policy (a recurring snapshot of its interval).
    pub policy: Option<SnapshotPolicy>,
}

/// listSnapshots' filters.
#[derive(Debug, Clone, Default)]
pub struct SnapshotFilter {
    pub id: Option<String>,
    pub ids: Vec<String>,
    pub name: Option<String>,
    pub keyword: Option<String>,
    pub volume: Option<String>,
    /// MANUAL, RECURRING (every interval) or one interval type.
    pub snapshot_type: Option<String>,
    pub interval_type: Option<String>,
    pub zone: Option<String>,
    pub page: Option<(u64, u64)>,
}

/// CloudStack's default name: `<instance or "detached">_<volume>_<UTC time>`.
pub fn default_name(vm_name: Option<&str>, volume: &str, at: chrono::DateTime<Utc>) -> String {
    format!(
        "{}_{volume}_{}",
        vm_name.unwrap_or("detached"),
        at.format("%Y%m%d%H%M%S")
    )
}

/// The snapshot types a `snapshottype` filter means.
pub fn types_for_filter(t: &str) -> Result<Vec<&'static str>, String> {
    match t.to_ascii_uppercase().as_str() {
        "MANUAL" => Ok(vec!["MANUAL"]),
        "RECURRING" => Ok(vec!["HOURLY", "DAILY", "WEEKLY", "MONTHLY"]),
        "HOURLY" => Ok(vec!["HOURLY"]),
        "DAILY" => Ok(vec!["DAILY"]),
        "WEEKLY" => Ok(vec!["WEEKLY"]),
        "MONTHLY" => Ok(vec!["MONTHLY"]),
        _ => Err(format!("Unsupported snapshot type {t}")),
    }
}

/// A qcow2 header for an empty image of `size` bytes: what a simulated host
/// "copies" (it has no file), enough for templates made from it to read
/// their size.
fn placeholder_qcow2(size: u64) -> Vec<u8> {
    let mut h = vec![0u8; 512];
    h[0..4].copy_from_slice(b"QFI\xfb");
    h[4..8].copy_from_slice(&3u32.to_be_bytes());
    // cluster_bits 16
    h[20..24].copy_from_slice(&16u32.to_be_bytes());
    h[24..32].copy_from_slice(&size.to_be_bytes());
    // header_length (v3)
    h[100..104].copy_from_slice(&104u32.to_be_bytes());
    h
}

impl Service {
    fn snapshot_dir(&self) -> PathBuf {
        self.data_dir.join("secondary").join("snapshot")
    }

    fn snapshot_path(&self, s: &Snapshot) -> PathBuf {
        self.snapshot_dir().join(format!("{}.qcow2", s.uuid))
    }

    /// The file of a backed-up snapshot, for a host to fetch.
    pub async fn snapshot_file(&self, uuid: &str) -> SResult<PathBuf> {
        let s: Snapshot = self
            .store
            .load_uuid(uuid)
            .await?
            .filter(|s: &Snapshot| s.removed.is_none() && s.state == BACKED_UP)
            .ok_or_else(|| ServiceError::not_found("snapshot", uuid))?;
        Ok(self.snapshot_path(&s))
    }

    /// A snapshot the caller may act on.
    pub async fn volume_snapshot(
        &self,
        caller: &Caller,
        param: &str,
        uuid: &str,
    ) -> SResult<Snapshot> {
        self.owned(caller, param, uuid).await
    }

    /// The new volume's size from a snapshot: the snapshot's, or a larger
    /// one a size or fixed offering asks for.
    pub(crate) fn size_from_snapshot(
        &self,
        snap: &Snapshot,
        offering: Option<&DiskOffering>,
        size_gb: Option<i64>,
    ) -> SResult<i64> {
        if snap.state != BACKED_UP || snap.removed.is_some() {
            return Err(ServiceError::invalid(format!(
                "Snapshot id={} is not in BackedUp state yet and can't be used for volume creation",
                snap.uuid
            )));
        }
        let want = match (offering, size_gb) {
            (_, Some(gb)) => gb * super::vm::GIB,
            (Some(o), None) if !o.customized => o.disk_size_gb * super::vm::GIB,
            _ => snap.virtual_size,
        };
        if want < snap.virtual_size {
            return Err(ServiceError::invalid(format!(
                "Invalid size for volume creation: {}GB, snapshot size is: {}GB",
                want / super::vm::GIB,
                (snap.virtual_size + super::vm::GIB - 1) / super::vm::GIB
            )));
        }
        Ok(want)
    }

    /// The instance a volume is attached to, if any.
    async fn volume_vm(&self, vol: &Volume) -> SResult<Option<Vm>> {
        match vol.vm_id {
            Some(id) => Ok(self.store.load(id).await?),
            None => Ok(None),
        }
    }

    pub async fn create_snapshot(
        self: &Arc<Self>,
        caller: &Caller,
        vol: &Volume,
        req: NewSnapshot,
    ) -> SResult<(Job, Snapshot)> {
        self.check_owned(caller, vol).await?;
        if vol.state != "Ready" {
            return Err(ServiceError::invalid(format!(
                "Volume: {} is not in Ready state but {}. Cannot take snapshot.",
                vol.uuid, vol.state
            )));
        }
        if let Some(n) = &req.name {
            if n.chars().count() > 255 || n.chars().any(char::is_control) {
                return Err(ServiceError::invalid(
                    "Invalid value for parameter name: at most 255 characters, no control characters",
                ));
            }
        }
        let vm = self.volume_vm(vol).await?;
        if let Some(vm) = &vm {
            if !matches!(vm.state, VmState::Running | VmState::Stopped) {
                return Err(ServiceError::invalid(format!(
                    "Creating snapshot failed due to volume:{} is associated with vm:{} is in {} state",
                    vol.uuid, vm.instance_name, vm.state
                )));
            }
            let vmsnaps = self.vm_snapshots_of(vm.id).await?;
            if vmsnaps
                .iter()
                .any(|s| matches!(s.state.as_str(), "Creating" | "Reverting" | "Expunging"))
            {
                return Err(ServiceError::refused(
                    "There is other active vm snapshot tasks on the instance to which the volume is attached, please try again later",
                ));
            }
        }
        // One snapshot task at a time per instance (or detached volume).
        let siblings: Vec<i64> = match &vm {
            Some(vm) => self
                .store
                .all::<Volume>(Query::new().eq(Col::Parent, vm.id))
                .await?
                .iter()
                .map(|v| v.id)
                .collect(),
            None => vec![vol.id],
        };
        let active: u64 = self
            .store
            .count(
                Kind::Snapshot,
                &Query::new()
                    .and(Cond::In(
                        Col::Parent,
                        siblings.iter().map(|i| (*i).into()).collect(),
                    ))
                    .and(Cond::In(
                        Col::State,
                        vec![ALLOCATED.into(), CREATING.into()],
                    )),
            )
            .await?;
        if active > 0 {
            return Err(ServiceError::refused(
                "There is other active snapshot tasks on the instance to which the volume is attached, please try again later",
            ));
        }
        let now_t = Utc::now();
        let name = req
            .name
            .clone()
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| {
                default_name(vm.as_ref().map(|v| v.name.as_str()), &vol.name, now_t)
            });
        let snap = Snapshot {
            id: self.store.new_id::<Snapshot>().await?,
            uuid: new_uuid(),
            version: 0,
            name,
            volume_id: vol.id,
            account_id: vol.account_id,
            domain_id: vol.domain_id,
            zone_id: vol.zone_id,
            snapshot_type: req
                .policy
                .as_ref()
                .map(|p| p.interval_type.clone())
                .unwrap_or_else(|| "MANUAL".into()),
            policy_id: req.policy.as_ref().map(|p| p.id),
            state: ALLOCATED.into(),
            virtual_size: vol.size,
            physical_size: 0,
            quiesce: req.quiesce,
            created: now(),
            removed: None,
        };
        let new = NewJob {
            command: "createSnapshot",
            instance_type: Some("Snapshot"),
            instance_uuid: Some(&snap.uuid),
            work: Work::CreateSnapshot {
                snapshot_id: snap.id,
            },
        };
        let job = self.insert_with_job(caller, &snap, new).await?;
        Ok((job, snap))
    }

    async fn load_volume_snapshot(&self, id: i64) -> SResult<Snapshot> {
        self.store
            .load(id)
            .await?
            .ok_or_else(|| ServiceError::internal("snapshot vanished"))
    }

    async fn save_snapshot(&self, s: &mut Snapshot) -> SResult<()> {
        let mut tx = Tx::new();
        tx.update(s);
        self.store.commit(tx.ops).await?;
        Ok(())
    }

    /// The host that can reach a volume's file, and its instance's name
    /// ("" for a detached volume): where the instance runs or last ran, the
    /// host of a host's own pool, else an Up host of the zone.
    async fn volume_host(&self, vol: &Volume) -> SResult<(Host, String)> {
        let vm = self.volume_vm(vol).await?;
        let pinned = match &vm {
            Some(vm) => vm.host_id.or(vm.last_host_id),
            None => match vol.pool_id {
                Some(p) => self
                    .load_cached::<StoragePool>(p)
                    .await?
                    .filter(|p| p.scope == "HOST")
                    .and_then(|p| p.host_id),
                None => None,
            },
        };
        let host = match pinned {
            Some(h) => self.load_cached::<Host>(h).await?,
            None => self
                .store
                .all::<Host>(Query::new().eq(Col::Zone, vol.zone_id))
                .await?
                .into_iter()
                .find(|h| h.state == "Up" && h.removed.is_none()),
        };
        let host = host.ok_or_else(|| {
            ServiceError::unavailable(format!("No host can reach volume {} now", vol.uuid))
        })?;
        Ok((host, vm.map(|v| v.instance_name).unwrap_or_default()))
    }

    fn quiesce_failure(e: AgentError) -> String {
        match e {
            AgentError::GuestAgent { reason, .. } => format!(
                "quiescevm was asked, but the instance's guest agent does not answer ({reason}); install and start qemu-guest-agent in the guest, or take the snapshot without quiescevm"
            ),
            other => other.to_string(),
        }
    }

    pub(crate) async fn exec_create_snapshot(&self, snapshot_id: i64) -> SResult<JobOutput> {
        let mut s = self.load_volume_snapshot(snapshot_id).await?;
        s.state = CREATING.into();
        self.save_snapshot(&mut s).await?;
        let outcome = self.backup(&s).await;
        let mut s = self.load_volume_snapshot(snapshot_id).await?;
        match outcome {
            Ok(bytes) => {
                s.state = BACKED_UP.into();
                s.physical_size = bytes as i64;
                let vol: Option<Volume> = self.store.load(s.volume_id).await?;
                let mut tx = Tx::new();
                tx.update(&mut s);
                if let Some(vol) = &vol {
                    snapshot_event(
                        &mut tx,
                        &s,
                        "SNAPSHOT.CREATE",
                        format!(
                            "Created snapshot {} ({}) of volume {}",
                            s.name, s.uuid, vol.uuid
                        ),
                    );
                }
                self.store.commit(tx.ops).await?;
                if let Some(p) = s.policy_id {
                    if let Err(e) = self.keep_policy_snapshots(p).await {
                        tracing::warn!(policy = p, error = %e, "removing snapshots beyond maxsnaps");
                    }
                }
                Ok(JobOutput::Snapshot { id: s.id })
            }
            Err(reason) => {
                s.state = ERROR.into();
                self.save_snapshot(&mut s).await?;
                let vol: Option<Volume> = self.store.load(s.volume_id).await?;
                Err(ServiceError::refused(format!(
                    "Failed to create snapshot due to an internal error creating snapshot for volume {}: {reason}",
                    vol.map(|v| v.uuid).unwrap_or_default()
                )))
            }
        }
    }

    /// Has the volume's host copy it into secondary storage; the bytes
    /// stored.
    async fn backup(&self, s: &Snapshot) -> Result<u64, String> {
        let vol: Volume = self
            .store
            .load(s.volume_id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the volume is gone")?;
        let (host, instance) = self.volume_host(&vol).await.map_err(|e| e.text())?;
        let spec = self.volume_spec(&vol).await.map_err(|e| e.text())?;
        let dest = self.snapshot_path(s);
        let grant = self.uploads.grant(
            host.id,
            dest.clone(),
            vol.size.max(0) as u64 + COPY_OVERHEAD,
        );
        let sent = self
            .agents
            .backup_volume(host.id, &instance, &spec, s.quiesce, &grant)
            .await;
        let received = self.uploads.finished(&grant);
        sent.map_err(Self::quiesce_failure)?;
        match received {
            Some(n) => Ok(n),
            None if host.simulated => {
                let bytes = placeholder_qcow2(vol.size.max(0) as u64);
                tokio::fs::create_dir_all(self.snapshot_dir())
                    .await
                    .map_err(|e| e.to_string())?;
                tokio::fs::write(&dest, &bytes)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(bytes.len() as u64)
            }
            None => Err("the host reported the copy sent, but none arrived".into()),
        }
    }

    /// Deletes a snapshot's copy and marks it Destroyed (no longer listed).
    pub async fn delete_snapshot(
        self: &Arc<Self>,
        caller: &Caller,
        s: Snapshot,
    ) -> SResult<String> {
        self.check_owned(caller, &s).await?;
        if !matches!(s.state.as_str(), BACKED_UP | ERROR) {
            return Err(ServiceError::invalid(format!(
                "Can't delete snapshot {} due to it is in {} Status",
                s.uuid, s.state
            )));
        }
        let uuid = s.uuid.clone();
        self.destroy_snapshot(s, "Deleted snapshot").await?;
        // Async in CloudStack; the work is done here already.
        self.done_job(caller, "deleteSnapshot", "Snapshot", &uuid)
            .await
    }

    pub(crate) async fn destroy_snapshot(&self, mut s: Snapshot, what: &str) -> SResult<()> {
        let path = self.snapshot_path(&s);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(ServiceError::internal(format!(
                    "removing {}: {e}",
                    path.display()
                )))
            }
        }
        s.state = DESTROYED.into();
        s.removed = Some(now());
        let mut tx = Tx::new();
        tx.update(&mut s);
        snapshot_event(
            &mut tx,
            &s,
            "SNAPSHOT.DELETE",
            format!("{what} {} ({})", s.name, s.uuid),
        );
        self.store.commit(tx.ops).await?;
        Ok(())
    }

    pub async fn revert_snapshot(self: &Arc<Self>, caller: &Caller, s: &Snapshot) -> SResult<Job> {
        self.check_owned(caller, s).await?;
        if s.state != BACKED_UP {
            return Err(ServiceError::invalid(format!(
                "Snapshot {} is {}; only a BackedUp snapshot can be reverted to",
                s.uuid, s.state
            )));
        }
        let vol: Volume = self
            .store
            .load(s.volume_id)
            .await?
            .filter(|v: &Volume| v.removed.is_none())
            .ok_or_else(|| ServiceError::invalid("The volume is not in Ready state."))?;
        if vol.state != "Ready" {
            return Err(ServiceError::invalid("The volume is not in Ready state."));
        }
        if let Some(vm) = self.volume_vm(&vol).await? {
            if vm.state != VmState::Stopped {
                return Err(ServiceError::invalid(
                    "The VM the specified disk is attached to is not in the shutdown state.",
                ));
            }
            self.refuse_with_vm_snapshots(
                vm.id,
                "Unable to revert snapshot for VM, please remove VM snapshots before reverting VM from snapshot",
            )
            .await?;
        }
        let job = self.new_job(
            caller,
            NewJob {
                command: "revertSnapshot",
                instance_type: Some("Snapshot"),
                instance_uuid: Some(&s.uuid),
                work: Work::RevertSnapshot { snapshot_id: s.id },
            },
        );
        let mut tx = Tx::new();
        tx.insert(&job);
        self.store.commit(tx.ops).await?;
        self.spawn_job(job.uuid.clone());
        Ok(job)
    }

    pub(crate) async fn exec_revert_snapshot(&self, snapshot_id: i64) -> SResult<JobOutput> {
        let s = self.load_volume_snapshot(snapshot_id).await?;
        let mut vol: Volume = self
            .store
            .load(s.volume_id)
            .await?
            .ok_or_else(|| ServiceError::invalid("The volume is not in Ready state."))?;
        let (host, instance) = self.volume_host(&vol).await?;
        let spec = self.volume_spec(&vol).await?;
        self.agents
            .restore_volume(host.id, &instance, &spec, &s.uuid)
            .await
            .map_err(|e| ServiceError::refused(format!("Failed to revert snapshot: {e}")))?;
        vol.size = s.virtual_size;
        let mut tx = Tx::new();
        tx.update(&mut vol);
        snapshot_event(
            &mut tx,
            &s,
            "SNAPSHOT.REVERT",
            format!("Reverted volume {} to snapshot {}", vol.uuid, s.uuid),
        );
        self.store.commit(tx.ops).await?;
        Ok(JobOutput::Snapshot { id: s.id })
    }

    pub async fn list_snapshots(
        &self,
        caller: &Caller,
        scope: &scope::ListScope,
        f: &SnapshotFilter,
    ) -> SResult<(Vec<Snapshot>, u64)> {
        let mut q = Query::new();
        q.conds = self.scope(caller, scope).await?;
        q = q.and(Cond::Ne(Col::State, DESTROYED.into()));
        if let Some(id) = &f.id {
            let s: Snapshot = self.by_uuid("id", id).await?;
            q = q.eq(Col::Id, s.id);
        }
        if !f.ids.is_empty() {
            q = q.and(Cond::In(
                Col::Uuid,
                f.ids.iter().cloned().map(Val::S).collect(),
            ));
        }
        if let Some(v) = &f.volume {
            let v: Volume = self.by_uuid("volumeid", v).await?;
            q = q.eq(Col::Parent, v.id);
        }
        if let Some(t) = &f.snapshot_type {
            let types = types_for_filter(t).map_err(ServiceError::invalid)?;
            q = q.and(Cond::In(
                Col::SnapshotType,
                types.into_iter().map(Val::from).collect(),
            ));
        }
        if let (Some(t), Some(_)) = (&f.interval_type, &f.volume) {
            let types = types_for_filter(t)
                .ok()
                .filter(|v| v.len() == 1 && v[0] != "MANUAL")
                .ok_or_else(|| {
                    ServiceError::invalid(format!("Unsupported snapstho interval type {t}"))
                })?;
            q = q.and(Cond::EqNoCase(Col::SnapshotType, types[0].to_string()));
        }
        if let Some(n) = &f.name {
            q = q.and(Cond::EqNoCase(Col::Name, n.clone()));
        }
        if let Some(k) = &f.keyword {
            q = q.and(Cond::Contains(vec![Col::Name], k.clone()));
        }
        if let Some(z) = &f.zone {
            let z: Zone = self.by_uuid("zoneid", z).await?;
            q = q.eq(Col::Zone, z.id);
        }
        q.page = f.page;
        // Newest first, as CloudStack lists them.
        q.descending = true;
        Ok(self.store.list::<Snapshot>(&q).await?)
    }
}

/// createTemplate's request: from a volume snapshot or a volume.
#[derive(Debug, Clone)]
pub struct NewPrivateTemplate {
    pub name: String,
    pub display_text: Option<String>,
    pub os_type: OsType,
    pub snapshot: Option<Snapshot>,
    pub volume: Option<Volume>,
    pub public: bool,
    pub featured: bool,
    pub password_enabled: bool,
    pub dynamically_scalable: bool,
}

impl Service {
    /// Registers a private template made from a snapshot or a volume; the
    /// job copies the image into secondary storage and makes it ready.
    pub async fn create_private_template(
        self: &Arc<Self>,
        caller: &Caller,
        r: NewPrivateTemplate,
    ) -> SResult<(Template, Job)> {
        if r.name.trim().is_empty() || r.name.chars().count() > 32 {
            return Err(ServiceError::invalid(
                "Template name cannot be null and should be less than 32 characters",
            ));
        }
        let (zone_id, owner, hypervisor, size) = match (&r.snapshot, &r.volume) {
            (Some(s), None) => {
                self.check_owned(caller, s).await?;
                if s.state != BACKED_UP {
                    return Err(ServiceError::invalid(format!(
                        "Snapshot id={} is not in BackedUp state yet and can't be used for template creation",
                        s.uuid
                    )));
                }
                (s.zone_id, (s.account_id, s.domain_id), "KVM".to_string(), s.virtual_size)
            }
            (None, Some(v)) => {
                self.check_owned(caller, v).await?;
                if let Some(vm) = self.volume_vm(v).await? {
                    if vm.state != VmState::Stopped {
                        return Err(ServiceError::refused(format!(
                            "Unable to create private template for volume: {}; volume is attached to a non-stopped VM, please stop the VM first",
                            v.name
                        )));
                    }
                }
                if v.state != "Ready" {
                    return Err(ServiceError::invalid(format!(
                        "Volume {} is {}; a template is made from a Ready volume",
                        v.uuid, v.state
                    )));
                }
                (v.zone_id, (v.account_id, v.domain_id), "KVM".to_string(), v.size)
            }
            (None, None) => {
                return Err(ServiceError::invalid(
                    "Failed to create private template record, neither volume ID nor snapshot ID were specified.",
                ))
            }
            (Some(s), Some(v)) => {
                return Err(ServiceError::invalid(format!(
                    "Failed to create private template record, please specify only one of volume ID ({}) and snapshot ID ({})",
                    v.uuid, s.uuid
                )))
            }
        };
        if r.public && !caller.is_admin() && !self.setting_bool("allow.public.user.templates") {
            return Err(ServiceError::invalid(format!(
                "Failed to create template {}, only private templates can be created.",
                r.name
            )));
        }
        let t = Template {
            id: self.store.new_id::<Template>().await?,
            uuid: new_uuid(),
            version: 1,
            name: r.name.clone(),
            display_text: r.display_text.clone().unwrap_or_else(|| r.name.clone()),
            format: "QCOW2".into(),
            is_iso: false,
            hypervisor,
            os_type_id: r.os_type.id,
            zone_id: Some(zone_id),
            account_id: owner.0,
            domain_id: owner.1,
            is_public: r.public,
            is_featured: r.featured && caller.is_admin(),
            is_ready: false,
            status: "Creating".into(),
            size,
            physical_size: 0,
            checksum: None,
            local_source: false,
            url: String::new(),
            path: None,
            template_type: "USER".into(),
            password_enabled: r.password_enabled,
            dynamically_scalable: r.dynamically_scalable,
            requires_hvm: true,
            bootable: true,
            extractable: true,
            details: Default::default(),
            userdata_id: None,
            userdata_policy: None,
            created: now(),
            removed: None,
        };
        let job = self.new_job(
            caller,
            NewJob {
                command: "createTemplate",
                instance_type: Some("Template"),
                instance_uuid: Some(&t.uuid),
                work: Work::CreateTemplate {
                    template_id: t.id,
                    snapshot_id: r.snapshot.as_ref().map(|s| s.id),
                    volume_id: r.volume.as_ref().map(|v| v.id),
                },
            },
        );
        let mut tx = Tx::new();
        tx.insert(&t);
        tx.insert(&job);
        self.event(
            &mut tx,
            caller,
            "TEMPLATE.CREATE",
            format!(
                "Creating template {} from {}",
                t.name,
                match (&r.snapshot, &r.volume) {
                    (Some(s), _) => format!("snapshot {}", s.uuid),
                    (_, Some(v)) => format!("volume {}", v.uuid),
                    _ => String::new(),
                }
            ),
            owner.0,
            owner.1,
            Some((&t.uuid, "Template", &t.name)),
        );
        self.store.commit(tx.ops).await?;
        self.spawn_job(job.uuid.clone());
        Ok((t, job))
    }

    pub(crate) async fn exec_create_template(
        &self,
        template_id: i64,
        snapshot_id: Option<i64>,
        volume_id: Option<i64>,
    ) -> SResult<JobOutput> {
        let t: Template = self
            .store
            .load(template_id)
            .await?
            .ok_or_else(|| ServiceError::internal("template vanished"))?;
        let rel = format!("template/{}/{}.qcow2", t.id, t.uuid);
        let dest = self.data_dir.join("secondary").join(&rel);
        let made = self.fill_template(&dest, snapshot_id, volume_id).await;
        let mut t: Template = self
            .store
            .load(template_id)
            .await?
            .ok_or_else(|| ServiceError::internal("template vanished"))?;
        match made {
            Ok(physical) => {
                let header = read_header(&dest).await;
                if let Some(v) = super::templates::qcow2_virtual_size(&header) {
                    t.size = v;
                }
                t.physical_size = physical as i64;
                t.path = Some(rel);
                t.is_ready = true;
                t.status = "Download Complete".into();
                let mut tx = Tx::new();
                tx.update(&mut t);
                self.store.commit(tx.ops).await?;
                Ok(JobOutput::Template { id: t.id })
            }
            Err(e) => {
                t.status = format!("Failed: {e}");
                let mut tx = Tx::new();
                tx.update(&mut t);
                self.store.commit(tx.ops).await?;
                Err(ServiceError::refused(format!(
                    "Failed to create template {}: {e}",
                    t.name
                )))
            }
        }
    }

    /// The template's file at `dest`; its size in bytes.
    async fn fill_template(
        &self,
        dest: &std::path::Path,
        snapshot_id: Option<i64>,
        volume_id: Option<i64>,
    ) -> Result<u64, String> {
        if let Some(dir) = dest.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| e.to_string())?;
        }
        if let Some(sid) = snapshot_id {
            let s = self.load_volume_snapshot(sid).await.map_err(|e| e.text())?;
            let part = dest.with_extension("part");
            let n = tokio::fs::copy(self.snapshot_path(&s), &part)
                .await
                .map_err(|e| e.to_string())?;
            tokio::fs::rename(&part, dest)
                .await
                .map_err(|e| e.to_string())?;
            return Ok(n);
        }
        let vid = volume_id.ok_or("neither a snapshot nor a volume")?;
        let vol: Volume = self
            .store
            .load(vid)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the volume is gone")?;
        let (host, instance) = self.volume_host(&vol).await.map_err(|e| e.text())?;
        let spec = self.volume_spec(&vol).await.map_err(|e| e.text())?;
        let grant = self.uploads.grant(
            host.id,
            dest.to_path_buf(),
            vol.size.max(0) as u64 + COPY_OVERHEAD,
        );
        let sent = self
            .agents
            .backup_volume(host.id, &instance, &spec, false, &grant)
            .await;
        let received = self.uploads.finished(&grant);
        sent.map_err(|e| e.to_string())?;
        match received {
            Some(n) => Ok(n),
            None if host.simulated => {
                let bytes = placeholder_qcow2(vol.size.max(0) as u64);
                tokio::fs::write(dest, &bytes)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(bytes.len() as u64)
            }
            None => Err("the host reported the copy sent, but none arrived".into()),
        }
    }
}

impl Service {
    /// Snapshots a previous run left mid-task (its jobs were failed at
    /// start): one being made is Error (deletable, as a failed one), one
    /// being reverted to or deleted is as it was, so the next task on its
    /// instance or volume is not refused as concurrent for ever.
    pub(crate) async fn settle_interrupted_snapshots(&self) -> SResult<()> {
        self.settle_snapshot_tasks(None, None).await
    }

    /// Like `settle_interrupted_snapshots`, for the snapshots named only
    /// (None: every one mid-task): those whose job's coordinator is gone
    /// while the others go on.
    pub(crate) async fn settle_snapshot_tasks(
        &self,
        vm_snapshots: Option<&[i64]>,
        snapshots: Option<&[i64]>,
    ) -> SResult<()> {
        let only = |q: Query, ids: Option<&[i64]>| match ids {
            Some(ids) => q.and(Cond::In(Col::Id, ids.iter().map(|i| Val::I(*i)).collect())),
            None => q,
        };
        let mut tx = Tx::new();
        if vm_snapshots.is_none_or(|ids| !ids.is_empty()) {
            let q = Query::new().and(Cond::In(
                Col::State,
                vec![
                    "Allocated".into(),
                    "Creating".into(),
                    "Reverting".into(),
                    "Expunging".into(),
                ],
            ));
            let vm_snaps: Vec<VmSnapshot> = self.store.all(only(q, vm_snapshots)).await?;
            for mut s in vm_snaps {
                s.state = match s.state.as_str() {
                    "Reverting" => "Ready",
                    _ => "Error",
                }
                .into();
                tx.update(&mut s);
            }
        }
        if snapshots.is_none_or(|ids| !ids.is_empty()) {
            let q = Query::new().and(Cond::In(
                Col::State,
                vec![ALLOCATED.into(), CREATING.into()],
            ));
            let snaps: Vec<Snapshot> = self.store.all(only(q, snapshots)).await?;
            for mut s in snaps {
                s.state = ERROR.into();
                tx.update(&mut s);
            }
        }
        if !tx.ops.is_empty() {
            self.store.commit(tx.ops).await?;
        }
        Ok(())
    }
}

/// An event about a volume snapshot, in `tx`.
fn snapshot_event(tx: &mut Tx, s: &Snapshot, kind: &str, description: String) {
    tx.insert(&Event {
        id: 0,
        uuid: new_uuid(),
        version: 0,
        event_type: kind.into(),
        level: "INFO".into(),
        description,
        state: "Completed".into(),
        account_id: s.account_id,
        domain_id: s.domain_id,
        user_id: 0,
        resource_uuid: Some(s.uuid.clone()),
        resource_type: Some("Snapshot".into()),
        resource_name: Some(s.name.clone()),
        created: now(),
    });
}

/// The first bytes of a file (a qcow2 header), empty if unreadable.
async fn read_header(path: &std::path::Path) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 512];
    match tokio::fs::File::open(path).await {
        Ok(mut f) => {
            let n = f.read(&mut buf).await.unwrap_or(0);
            buf.truncate(n);
            buf
        }
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn default_names_follow_cloudstack() {
        let t = Utc.with_ymd_and_hms(2026, 12, 7, 9, 1, 2).unwrap();
        assert_eq!(
            default_name(Some("web"), "ROOT-5", t),
            "web_ROOT-5_20261207090102"
        );
        assert_eq!(
            default_name(None, "DATA-6", t),
            "detached_DATA-6_20261207090102"
        );
    }

    #[test]
    fn recurring_means_every_interval() {
        assert_eq!(types_for_filter("recurring").unwrap().len(), 4);
        assert_eq!(types_for_filter("MANUAL").unwrap(), vec!["MANUAL"]);
        assert!(types_for_filter("yearly").is_err());
    }

    #[test]
    fn the_placeholder_is_a_qcow2_header_with_its_size() {
        let h = placeholder_qcow2(5 << 30);
        assert_eq!(&h[0..4], b"QFI\xfb");
        assert_eq!(u64::from_be_bytes(h[24..32].try_into().unwrap()), 5 << 30);
    }
}
