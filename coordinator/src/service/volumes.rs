//! Data volumes: create, attach, detach, resize, delete. Every request is
//! validated before a job is queued; the job re-checks against the current
//! record, so two concurrent attaches of one volume cannot both succeed.

use super::agent::VolumeSpec;
use super::jobs::{JobOutput, NewJob, Work};
use super::vm::GIB;
use super::*;
use orrery_model::VmState;

/// Device id 3 is kept for the CD-ROM, as in CloudStack.
pub const CDROM_DEVICE_ID: i64 = 3;
/// Data disks per instance: virtio names vdb..vdz, less the CD-ROM slot.
pub const MAX_DATA_VOLUMES: usize = 24;
/// The largest volume a request may ask for, in GiB.
pub const MAX_VOLUME_GB: i64 = 16 * 1024;

pub struct NewVolume {
    pub owner: Account,
    pub zone: Zone,
    /// Required unless the volume starts from a snapshot.
    pub offering: Option<DiskOffering>,
    /// A volume snapshot the new volume's content comes from.
    pub from_snapshot: Option<Snapshot>,
    pub size_gb: Option<i64>,
    pub name: Option<String>,
    pub attach_to: Option<Vm>,
    pub device_id: Option<i64>,
}

fn size_for(offering: &DiskOffering, size_gb: Option<i64>) -> SResult<i64> {
    let gb = if offering.customized {
        size_gb.ok_or_else(|| {
            ServiceError::invalid(format!(
                "Parameter size is required: disk offering {} has a custom size",
                offering.name
            ))
        })?
    } else {
        if size_gb.is_some() && size_gb != Some(offering.disk_size_gb) {
            return Err(ServiceError::invalid(format!(
                "Invalid parameter size: disk offering {} has a fixed size of {} GB",
                offering.name, offering.disk_size_gb
            )));
        }
        offering.disk_size_gb
    };
    if !(1..=MAX_VOLUME_GB).contains(&gb) {
        return Err(ServiceError::invalid(format!(
            "Invalid value for parameter size: {gb}; it must be between 1 and {MAX_VOLUME_GB} GB"
        )));
    }
    Ok(gb * GIB)
}

impl Service {
    /// A volume as its host sees it.
    pub(crate) async fn volume_spec(&self, v: &Volume) -> SResult<VolumeSpec> {
        Ok(VolumeSpec {
            uuid: v.uuid.clone(),
            kind: v.volume_type.clone(),
            device_id: v.device_id.unwrap_or(0),
            size: v.size,
            pool: self.pool_kind(v.pool_id).await?.to_string(),
            // Only until its file exists (a Ready volume has one).
            from_snapshot: if v.state == "Allocated" {
                v.from_snapshot.clone().unwrap_or_default()
            } else {
                String::new()
            },
        })
    }

    /// Where a host keeps the files of a pool's volumes: "local" for a
    /// host's own pool, "" for the (shared) primary directory.
    pub(crate) async fn pool_kind(&self, pool_id: Option<i64>) -> SResult<&'static str> {
        let Some(id) = pool_id else { return Ok("") };
        Ok(match self.load_cached::<StoragePool>(id).await? {
            Some(p) if p.scope == "HOST" => "local",
            _ => "",
        })
    }

    /// The instance a volume may be attached to, and the device id it will get.
    async fn attach_plan(&self, vol: &Volume, vm: &Vm, device: Option<i64>) -> SResult<i64> {
        if vol.volume_type != "DATADISK" {
            return Err(ServiceError::invalid(format!(
                "Volume {} is a {} volume; only data volumes can be attached",
                vol.uuid, vol.volume_type
            )));
        }
        if vol.vm_id.is_some() {
            return Err(ServiceError::state(format!(
                "Volume {} is already attached to an instance",
                vol.uuid
            )));
        }
        if vol.removed.is_some() || vol.state == "Destroy" {
            return Err(ServiceError::state(format!(
                "Volume {} is destroyed",
                vol.uuid
            )));
        }
        if vol.zone_id != vm.zone_id {
            return Err(ServiceError::invalid(format!(
                "Volume {} and instance {} are in different zones",
                vol.uuid, vm.uuid
            )));
        }
        if vol.account_id != vm.account_id {
            return Err(ServiceError::denied(format!(
                "Volume {} and instance {} belong to different accounts",
                vol.uuid, vm.uuid
            )));
        }
        if !matches!(vm.state, VmState::Running | VmState::Stopped) {
            return Err(ServiceError::state(format!(
                "Instance {} is {}; volumes attach to Running or Stopped instances only",
                vm.uuid, vm.state
            )));
        }
        self.refuse_with_vm_snapshots(
            vm.id,
            &format!(
                "Unable to attach volume to Instance {}/{}, please specify an Instance that does not have Instance Snapshots",
                vm.name, vm.uuid
            ),
        )
        .await?;
        let attached: Vec<Volume> = self.store.all(Query::new().eq(Col::Parent, vm.id)).await?;
        let used: Vec<i64> = attached.iter().filter_map(|v| v.device_id).collect();
        if attached
            .iter()
            .filter(|v| v.volume_type == "DATADISK")
            .count()
            >= MAX_DATA_VOLUMES
        {
            return Err(ServiceError::invalid(format!(
                "Instance {} already has the maximum of {MAX_DATA_VOLUMES} data volumes",
                vm.uuid
            )));
        }
        match device {
            Some(0) => Err(ServiceError::invalid(
                "Invalid value for parameter deviceid: 0 is the ROOT volume's device",
            )),
            Some(d) if d == CDROM_DEVICE_ID => Err(ServiceError::invalid(
                "Invalid value for parameter deviceid: 3 is reserved for the CD-ROM",
            )),
            Some(d) if !(1..=MAX_DATA_VOLUMES as i64 + 1).contains(&d) => {
                Err(ServiceError::invalid(format!(
                    "Invalid value for parameter deviceid: {d}; it must be between 1 and {}",
                    MAX_DATA_VOLUMES + 1
                )))
            }
            Some(d) if used.contains(&d) => Err(ServiceError::invalid(format!(
                "Invalid value for parameter deviceid: device {d} is in use on instance {}",
                vm.uuid
            ))),
            Some(d) => Ok(d),
            None => Ok((1..)
                .find(|d| *d != CDROM_DEVICE_ID && !used.contains(d))
                .expect("an unbounded range has a free id")),
        }
    }

    pub async fn create_volume(
        self: &Arc<Self>,
        caller: &Caller,
        a: NewVolume,
    ) -> SResult<(Volume, Job)> {
        if let Some(o) = a.offering.as_ref().filter(|o| o.removed.is_some()) {
            return Err(ServiceError::invalid(format!(
                "Invalid parameter diskofferingid: disk offering {} was deleted",
                o.uuid
            )));
        }
        let size = match (&a.from_snapshot, &a.offering) {
            (Some(snap), o) => self.size_from_snapshot(snap, o.as_ref(), a.size_gb)?,
            (None, Some(o)) => size_for(o, a.size_gb)?,
            (None, None) => {
                return Err(ServiceError::invalid(
                    "At least one of disk Offering ID or snapshot ID must be passed whilst creating volume",
                ))
            }
        };
        if let Some(n) = &a.name {
            if n.trim().is_empty() || n.len() > 255 {
                return Err(ServiceError::invalid(
                    "Invalid value for parameter name: 1 to 255 characters",
                ));
            }
        }
        let id = self.store.new_id::<Volume>().await?;
        let vol = Volume {
            id,
            uuid: new_uuid(),
            version: 1,
            name: a.name.unwrap_or_else(|| format!("DATA-{id}")),
            vm_id: None,
            account_id: a.owner.id,
            domain_id: a.owner.domain_id,
            zone_id: a.zone.id,
            volume_type: "DATADISK".into(),
            size,
            disk_offering_id: a.offering.as_ref().map(|o| o.id),
            state: "Allocated".into(),
            device_id: None,
            pool_id: None,
            template_id: None,
            created: now(),
            attached: None,
            removed: None,
            last_host_id: None,
            from_snapshot: a.from_snapshot.as_ref().map(|s| s.uuid.clone()),
        };
        let work = match &a.attach_to {
            Some(vm) => {
                let device_id = self.attach_plan(&vol, vm, a.device_id).await?;
                Work::AttachVolume {
                    volume_id: id,
                    vm_id: vm.id,
                    device_id,
                }
            }
            None => Work::Done {
                result: JobOutput::Volume { id },
            },
        };
        let job = self.volume_job(caller, "createVolume", &vol, work);
        let mut tx = Tx::new();
        tx.insert(&vol);
        tx.insert(&job);
        self.event(
            &mut tx,
            caller,
            "VOLUME.CREATE",
            format!("Created volume {}. Volume Id: {}", vol.name, vol.uuid),
            vol.account_id,
            vol.domain_id,
            Some((&vol.uuid, "Volume", &vol.name)),
        );
        self.store.commit(tx.ops).await?;
        self.spawn_job(job.uuid.clone());
        Ok((vol, job))
    }

    fn volume_job(&self, caller: &Caller, command: &str, vol: &Volume, work: Work) -> Job {
        self.new_job(
            caller,
            NewJob {
                command,
                instance_type: Some("Volume"),
                instance_uuid: Some(&vol.uuid),
                work,
            },
        )
    }

    async fn queue_volume_job(
        self: &Arc<Self>,
        caller: &Caller,
        command: &str,
        vol: &Volume,
        work: Work,
    ) -> SResult<Job> {
        let job = self.volume_job(caller, command, vol, work);
        let mut tx = Tx::new();
        tx.insert(&job);
        self.store.commit(tx.ops).await?;
        self.spawn_job(job.uuid.clone());
        Ok(job)
    }

    pub async fn attach_volume(
        self: &Arc<Self>,
        caller: &Caller,
        vol: &Volume,
        vm: &Vm,
        device: Option<i64>,
    ) -> SResult<Job> {
        let device_id = self.attach_plan(vol, vm, device).await?;
        self.queue_volume_job(
            caller,
            "attachVolume",
            vol,
            Work::AttachVolume {
                volume_id: vol.id,
                vm_id: vm.id,
                device_id,
            },
        )
        .await
    }

    pub async fn detach_volume(self: &Arc<Self>, caller: &Caller, vol: &Volume) -> SResult<Job> {
        if vol.volume_type == "ROOT" {
            return Err(ServiceError::invalid(format!(
                "Volume {} is a ROOT volume; it cannot be detached",
                vol.uuid
            )));
        }
        let Some(vm_id) = vol.vm_id else {
            return Err(ServiceError::state(format!(
                "Volume {} is not attached to an instance",
                vol.uuid
            )));
        };
        let vm: Vm = self
            .store
            .load(vm_id)
            .await?
            .ok_or_else(|| ServiceError::internal("instance vanished"))?;
        if !matches!(vm.state, VmState::Running | VmState::Stopped) {
            return Err(ServiceError::state(format!(
                "Instance {} is {}; volumes detach from Running or Stopped instances only",
                vm.uuid, vm.state
            )));
        }
        self.refuse_with_vm_snapshots(
            vm.id,
            "Unable to detach volume, please specify an Instance that does not have Instance Snapshots",
        )
        .await?;
        self.queue_volume_job(
            caller,
            "detachVolume",
            vol,
            Work::DetachVolume { volume_id: vol.id },
        )
        .await
    }

    pub async fn resize_volume(
        self: &Arc<Self>,
        caller: &Caller,
        vol: &Volume,
        size_gb: Option<i64>,
        offering: Option<DiskOffering>,
        shrink_ok: bool,
    ) -> SResult<Job> {
        if vol.removed.is_some() || !matches!(vol.state.as_str(), "Allocated" | "Ready") {
            return Err(ServiceError::state(format!(
                "Volume {} is {}; only Allocated or Ready volumes can be resized",
                vol.uuid, vol.state
            )));
        }
        let new_size = match (&offering, size_gb) {
            (Some(o), s) => size_for(o, s)?,
            (None, Some(gb)) => {
                if !(1..=MAX_VOLUME_GB).contains(&gb) {
                    return Err(ServiceError::invalid(format!(
                        "Invalid value for parameter size: {gb}; it must be between 1 and {MAX_VOLUME_GB} GB"
                    )));
                }
                if vol.volume_type == "DATADISK" {
                    let current: Option<DiskOffering> = match vol.disk_offering_id {
                        Some(id) => self.store.load(id).await?,
                        None => None,
                    };
                    if current.is_some_and(|o| !o.customized) {
                        return Err(ServiceError::invalid(format!(
                            "Volume {} has a fixed-size disk offering; give a custom diskofferingid to change its size",
                            vol.uuid
                        )));
                    }
                }
                gb * GIB
            }
            (None, None) => {
                return Err(ServiceError::invalid(
                    "Either parameter size or diskofferingid is required",
                ))
            }
        };
        if new_size < vol.size && !shrink_ok {
            return Err(ServiceError::invalid(format!(
                "Going from {} GB to {} GB shrinks volume {}; pass shrinkok=true to allow it",
                vol.size / GIB,
                new_size / GIB,
                vol.uuid
            )));
        }
        if let Some(vm_id) = vol.vm_id {
            let vm: Option<Vm> = self.store.load(vm_id).await?;
            if let Some(vm) = vm {
                if !matches!(vm.state, VmState::Running | VmState::Stopped) {
                    return Err(ServiceError::state(format!(
                        "Instance {} is {}; try again when it is Running or Stopped",
                        vm.uuid, vm.state
                    )));
                }
                if new_size != vol.size {
                    self.refuse_with_vm_snapshots(
                        vm.id,
                        "A volume that is attached to a VM with any VM snapshots cannot be resized.",
                    )
                    .await?;
                }
            }
        }
        self.queue_volume_job(
            caller,
            "resizeVolume",
            vol,
            Work::ResizeVolume {
                volume_id: vol.id,
                size: new_size,
                offering_id: offering.map(|o| o.id),
            },
        )
        .await
    }

    /// Deletes a detached data volume at once (CloudStack's deleteVolume is
    /// synchronous).
    pub async fn delete_volume(&self, caller: &Caller, mut vol: Volume) -> SResult<()> {
        if vol.volume_type == "ROOT" {
            return Err(ServiceError::invalid(format!(
                "Volume {} is a ROOT volume; it goes with its instance",
                vol.uuid
            )));
        }
        if vol.vm_id.is_some() {
            return Err(ServiceError::state(format!(
                "Volume {} is attached to an instance; detach it first",
                vol.uuid
            )));
        }
        vol.state = "Expunged".into();
        vol.removed = Some(now());
        let mut tx = Tx::new();
        tx.update(&mut vol);
        self.event(
            &mut tx,
            caller,
            "VOLUME.DELETE",
            format!("Deleted volume {}. Volume Id: {}", vol.name, vol.uuid),
            vol.account_id,
            vol.domain_id,
            Some((&vol.uuid, "Volume", &vol.name)),
        );
        self.store.commit(tx.ops).await?;
        Ok(())
    }

    async fn load_volume(&self, id: i64) -> SResult<Volume> {
        self.store
            .load(id)
            .await?
            .ok_or_else(|| ServiceError::internal("volume vanished"))
    }

    pub(crate) async fn load_vm(&self, id: i64) -> SResult<Vm> {
        self.store
            .load(id)
            .await?
            .ok_or_else(|| ServiceError::internal("instance vanished"))
    }

    async fn volume_event(
        &self,
        caller: &Caller,
        vol: &Volume,
        kind: &str,
        what: &str,
    ) -> SResult<()> {
        let mut tx = Tx::new();
        self.event(
            &mut tx,
            caller,
            kind,
            format!("{what} volume {}. Volume Id: {}", vol.name, vol.uuid),
            vol.account_id,
            vol.domain_id,
            Some((&vol.uuid, "Volume", &vol.name)),
        );
        self.store.commit(tx.ops).await?;
        Ok(())
    }

    pub(crate) async fn exec_attach_volume(
        &self,
        caller: &Caller,
        volume_id: i64,
        vm_id: i64,
        device_id: i64,
    ) -> SResult<JobOutput> {
        let mut vol = self.load_volume(volume_id).await?;
        let vm = self.load_vm(vm_id).await?;
        // Re-checked against the current records: another attach may have won.
        self.attach_plan(&vol, &vm, Some(device_id)).await?;
        vol.vm_id = Some(vm.id);
        vol.device_id = Some(device_id);
        vol.attached = Some(now());
        if vm.state == VmState::Running {
            if let Some(h) = vm.host_id {
                self.agents
                    .attach_volume(h, &vm.instance_name, &self.volume_spec(&vol).await?)
                    .await?;
            }
            vol.state = "Ready".into();
        }
        let mut tx = Tx::new();
        tx.update(&mut vol);
        self.store.commit(tx.ops).await?;
        self.volume_event(caller, &vol, "VOLUME.ATTACH", "Attached")
            .await?;
        Ok(JobOutput::Volume { id: vol.id })
    }

    pub(crate) async fn exec_detach_volume(
        &self,
        caller: &Caller,
        volume_id: i64,
    ) -> SResult<JobOutput> {
        let mut vol = self.load_volume(volume_id).await?;
        let Some(vm_id) = vol.vm_id else {
            return Err(ServiceError::state(format!(
                "Volume {} is not attached to an instance",
                vol.uuid
            )));
        };
        let vm = self.load_vm(vm_id).await?;
        if vm.state == VmState::Running {
            if let Some(h) = vm.host_id {
                self.agents
                    .detach_volume(h, &vm.instance_name, &self.volume_spec(&vol).await?)
                    .await?;
            }
        }
        vol.vm_id = None;
        vol.device_id = None;
        vol.attached = None;
        let mut tx = Tx::new();
        tx.update(&mut vol);
        self.store.commit(tx.ops).await?;
        self.volume_event(caller, &vol, "VOLUME.DETACH", "Detached")
            .await?;
        Ok(JobOutput::Volume { id: vol.id })
    }

    pub(crate) async fn exec_resize_volume(
        &self,
        caller: &Caller,
        volume_id: i64,
        size: i64,
        offering_id: Option<i64>,
    ) -> SResult<JobOutput> {
        let mut vol = self.load_volume(volume_id).await?;
        vol.size = size;
        if offering_id.is_some() {
            vol.disk_offering_id = offering_id;
        }
        if let Some(vm_id) = vol.vm_id {
            let vm = self.load_vm(vm_id).await?;
            if vm.state == VmState::Running {
                if let Some(h) = vm.host_id {
                    self.agents
                        .resize_volume(h, &vm.instance_name, &self.volume_spec(&vol).await?)
                        .await?;
                }
            }
        }
        let mut tx = Tx::new();
        tx.update(&mut vol);
        self.store.commit(tx.ops).await?;
        self.volume_event(caller, &vol, "VOLUME.RESIZE", "Resized")
            .await?;
        Ok(JobOutput::Volume { id: vol.id })
    }
}

/// Filters of listVolumes.
#[derive(Debug, Clone, Default)]
pub struct VolumeFilter {
    pub id: Option<String>,
    pub ids: Vec<String>,
    /// Only this instance's volumes (uuid).
    pub vm: Option<String>,
    pub volume_type: Option<String>,
    pub name: Option<String>,
    pub keyword: Option<String>,
    pub zone: Option<String>,
    pub page: Option<(u64, u64)>,
}

impl Service {
    /// The page of volumes in `scope` the caller may see, ROOT first, then
    /// data disks by device id, as clients expect; and the total.
    pub async fn list_volumes(
        &self,
        caller: &Caller,
        scope: &scope::ListScope,
        f: &VolumeFilter,
    ) -> SResult<(Vec<Volume>, u64)> {
        let mut q = Query::new();
        q.conds = self.scope(caller, scope).await?;
        q = q.and(Cond::IsNull(Col::Ukey));
        q = q.and(Cond::NotIn(
            Col::State,
            vec!["Expunged".into(), "Destroy".into()],
        ));
        if let Some(id) = &f.id {
            // A known id outside the caller's view or already deleted lists
            // nothing, as in CloudStack; only an id that never existed is an
            // error.
            let v: Volume = self.by_uuid("id", id).await?;
            q = q.eq(Col::Id, v.id);
        }
        if !f.ids.is_empty() {
            q = q.and(Cond::In(
                Col::Uuid,
                f.ids.iter().cloned().map(Val::S).collect(),
            ));
        }
        if let Some(vid) = &f.vm {
            let vm: Vm = self.owned(caller, "virtualmachineid", vid).await?;
            q = q.eq(Col::Parent, vm.id);
        }
        if let Some(t) = &f.volume_type {
            q = q.and(Cond::EqNoCase(Col::VolumeType, t.clone()));
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
        let (mut vols, total) = self.store.list::<Volume>(&q).await?;
        vols.sort_by_key(|v| (v.vm_id, v.volume_type != "ROOT", v.device_id, v.id));
        Ok((vols, total))
    }

    /// The volumes attached to an instance the caller may act on.
    /// The volume at `device` of an instance the caller may change.
    pub async fn volume_at_device(
        &self,
        caller: &Caller,
        vm_uuid: &str,
        device: i64,
    ) -> SResult<Volume> {
        let vm: Vm = self.owned(caller, "virtualmachineid", vm_uuid).await?;
        self.volumes_of(caller, &vm)
            .await?
            .into_iter()
            .find(|v| v.device_id == Some(device) && v.removed.is_none())
            .ok_or_else(|| {
                ServiceError::invalid(format!(
                    "Invalid value for parameter deviceid: no volume at device {device} of instance {vm_uuid}"
                ))
            })
    }

    pub async fn volumes_of(&self, caller: &Caller, vm: &Vm) -> SResult<Vec<Volume>> {
        self.check_owned(caller, vm).await?;
        Ok(self.store.all(Query::new().eq(Col::Parent, vm.id)).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offering(size: i64, custom: bool) -> DiskOffering {
        DiskOffering {
            name: "o".into(),
            disk_size_gb: size,
            customized: custom,
            ..Default::default()
        }
    }

    #[test]
    fn sizes_follow_the_offering() {
        assert_eq!(size_for(&offering(5, false), None).unwrap(), 5 * GIB);
        assert!(size_for(&offering(5, false), Some(7))
            .unwrap_err()
            .text()
            .contains("size"));
        assert!(size_for(&offering(0, true), None)
            .unwrap_err()
            .text()
            .contains("size"));
        assert_eq!(size_for(&offering(0, true), Some(9)).unwrap(), 9 * GIB);
        assert!(size_for(&offering(0, true), Some(0)).is_err());
        assert!(size_for(&offering(0, true), Some(MAX_VOLUME_GB + 1)).is_err());
    }
}
