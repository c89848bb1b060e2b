//! restoreVirtualMachine (the specification's "Reinstalling/Restoring an
//! Instance"): the instance gets a new root volume from its template or
//! another one; its data volumes, NICs and settings stay. A Running instance
//! is stopped, restored and started again; a Stopped one stays Stopped and
//! its new root is made at its next start.
//!
//! The old root volume is destroyed: with `expunge` its file goes at once,
//! otherwise it is kept in state Destroy until `expunge.delay` has passed
//! (the expunger removes its file then), as CloudStack does.

use super::agent::VolumeSpec;
use super::jobs::{JobOutput, Work};
use super::*;
use crate::service::vm::GIB;
use orrery_model::VmState;

/// What restoreVirtualMachine asks for, resolved.
#[derive(Debug, Clone, Default)]
pub struct RestoreRequest {
    pub template: Option<Template>,
    pub disk_offering: Option<DiskOffering>,
    /// GB; `details[rootdisksize]` wins over the parameter, as in CloudStack.
    pub root_disk_size_gb: Option<i64>,
    pub expunge: bool,
}

/// The new root volume's size: an explicit size (at least the template's),
/// else a fixed-size disk offering's, else the template's, or the size the
/// instance was deployed with when that is larger.
pub fn restored_root_size(
    template: &Template,
    offering: Option<&DiskOffering>,
    root_gb: Option<i64>,
    deployed_gb: Option<i64>,
) -> SResult<i64> {
    if let Some(gb) = root_gb {
        if gb <= 0 {
            return Err(ServiceError::invalid(
                "Invalid value for parameter rootdisksize: it must be positive",
            ));
        }
        let want = gb * GIB;
        if want < template.size {
            return Err(ServiceError::invalid(format!(
                "Invalid value for parameter rootdisksize: {gb} GB is smaller than the template's size of {} bytes",
                template.size
            )));
        }
        return Ok(want);
    }
    if let Some(o) = offering.filter(|o| !o.customized && o.disk_size_gb > 0) {
        return Ok((o.disk_size_gb * GIB).max(template.size));
    }
    Ok(deployed_gb
        .map(|g| g * GIB)
        .filter(|b| *b > template.size)
        .unwrap_or(template.size))
}

impl Service {
    pub async fn restore_vm(
        self: &Arc<Self>,
        caller: &Caller,
        vm: &Vm,
        req: RestoreRequest,
    ) -> SResult<Job> {
        self.check_owned(caller, vm).await?;
        if !matches!(vm.state, VmState::Running | VmState::Stopped) {
            return Err(ServiceError::refused(format!(
                "Vm {} currently in {} state, restore vm can only execute when VM in Running or Stopped",
                vm.uuid, vm.state
            )));
        }
        if self.is_busy(&vm.uuid) {
            return Err(ServiceError::conflict(format!(
                "Instance {} is busy with another operation; try again later",
                vm.uuid
            )));
        }
        let vols: Vec<Volume> = self.store.all(Query::new().eq(Col::Parent, vm.id)).await?;
        let roots: Vec<&Volume> = vols
            .iter()
            .filter(|v| v.volume_type == "ROOT" && v.removed.is_none())
            .collect();
        let root = match roots.as_slice() {
            [r] => *r,
            [] => {
                return Err(ServiceError::refused(format!(
                    "Can not find root volume for VM {}",
                    vm.uuid
                )))
            }
            more => {
                return Err(ServiceError::refused(format!(
                    "There are {} root volumes for VM {}",
                    more.len(),
                    vm.uuid
                )))
            }
        };
        self.refuse_with_vm_snapshots(
            vm.id,
            "Unable to restore Instance, please remove Instance Snapshots before restoring Instance",
        )
        .await?;
        let Some(current) = vm.template_id else {
            if req.template.as_ref().is_some_and(|t| !t.is_iso) {
                return Err(ServiceError::invalid(
                    "VM has been created using an ISO therefore it can not be re-installed with a template",
                ));
            }
            return Err(ServiceError::invalid(format!(
                "Instance {} was deployed from an ISO: its root disk has no template to be restored from",
                vm.uuid
            )));
        };
        let template = match req.template {
            Some(t) => {
                if t.is_iso {
                    return Err(ServiceError::invalid(
                        "Invalid template id provided to restore the VM ",
                    ));
                }
                let visible = t.is_public
                    || caller.can_access(t.account_id, &self.domain_path(t.domain_id).await?);
                if t.removed.is_some() || !visible {
                    return Err(ServiceError::not_found("templateid", &t.uuid));
                }
                t
            }
            None => self
                .load_cached::<Template>(current)
                .await?
                .ok_or_else(|| {
                    ServiceError::refused(
                        "Cannot find template/ISO for specified volumeid and vmId",
                    )
                })?,
        };
        if !template.is_ready || template.zone_id.is_some_and(|z| z != vm.zone_id) {
            return Err(ServiceError::invalid(format!(
                "Cannot restore the vm as the template {} isn't available in the zone",
                template.uuid
            )));
        }
        let deployed_gb = vm
            .details
            .get("rootdisksize")
            .and_then(|v| v.trim().parse::<i64>().ok());
        let size = restored_root_size(
            &template,
            req.disk_offering.as_ref(),
            req.root_disk_size_gb,
            deployed_gb,
        )?;
        let job = self.vm_job(
            caller,
            vm,
            "restoreVirtualMachine",
            Work::Restore {
                vm_id: vm.id,
                root_id: root.id,
                template_id: template.id,
                disk_offering_id: req.disk_offering.as_ref().map(|d| d.id),
                size,
                root_gb: req.root_disk_size_gb,
                expunge: req.expunge,
            },
        );
        let mut tx = Tx::new();
        tx.insert(&job);
        self.store.commit(tx.ops).await?;
        self.spawn_job(job.uuid.clone());
        Ok(job)
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn exec_restore(
        self: &Arc<Self>,
        caller: &Caller,
        vm_id: i64,
        root_id: i64,
        template_id: i64,
        disk_offering_id: Option<i64>,
        size: i64,
        root_gb: Option<i64>,
        expunge: bool,
    ) -> SResult<JobOutput> {
        let vm = self.load_vm(vm_id).await?;
        let was_running = vm.state == VmState::Running;
        if was_running {
            self.exec_stop(caller, vm_id, false).await?;
        }
        let vm = self.load_vm(vm_id).await?;
        if vm.state != VmState::Stopped {
            return Err(ServiceError::state(format!(
                "Instance {} is {}; it must be Stopped to get a new root volume",
                vm.uuid, vm.state
            )));
        }
        let old: Volume = self
            .store
            .load(root_id)
            .await?
            .ok_or_else(|| ServiceError::internal("root volume vanished"))?;
        // Where the old file is: the host it last ran on (a local pool's
        // file is only there; a shared pool's any host of it reaches).
        let host = vm.last_host_id;
        let old_spec: VolumeSpec = self.volume_spec(&old).await?;
        let t = now();
        let new_root = Volume {
            id: self.store.new_id::<Volume>().await?,
            uuid: new_uuid(),
            version: 0,
            name: old.name.clone(),
            vm_id: Some(vm.id),
            account_id: vm.account_id,
            domain_id: vm.domain_id,
            zone_id: vm.zone_id,
            volume_type: "ROOT".into(),
            size,
            disk_offering_id: disk_offering_id.or(old.disk_offering_id),
            // Made from the template at the next start.
            state: "Allocated".into(),
            device_id: Some(0),
            // The same pool, so an instance on local storage stays on its
            // host.
            pool_id: old.pool_id,
            template_id: Some(template_id),
            created: t,
            attached: Some(t),
            removed: None,
            last_host_id: None,
            from_snapshot: None,
        };
        let template: Template = self
            .load_cached(template_id)
            .await?
            .ok_or_else(|| ServiceError::internal("template vanished"))?;
        let mut old = old;
        old.vm_id = None;
        old.device_id = None;
        old.attached = None;
        old.state = "Destroy".into();
        old.removed = Some(t);
        // The expunger removes the file later through this host.
        old.last_host_id = if expunge { None } else { host };
        let mut tx = Tx::new();
        tx.update(&mut old);
        tx.insert(&new_root);
        self.store.commit(tx.ops).await?;
        let vm = self
            .update_restored(vm.id, template_id, template.os_type_id, root_gb)
            .await?;
        self.record(
            &vm,
            "VM.RESTORE",
            &format!(
                "Restored instance with a new root volume {} from template {}",
                new_root.uuid, template.name
            ),
        )
        .await?;
        if expunge {
            if let Some(h) = host {
                self.agents
                    .reset_volume(h, &vm.instance_name, &old_spec)
                    .await?;
            }
            let mut old: Volume = self
                .store
                .load(root_id)
                .await?
                .ok_or_else(|| ServiceError::internal("root volume vanished"))?;
            old.state = "Expunged".into();
            let mut tx = Tx::new();
            tx.update(&mut old);
            self.store.commit(tx.ops).await?;
        }
        if was_running {
            let pin = vm::Pin {
                host_id: host,
                ..vm::Pin::default()
            };
            self.exec_start(caller, vm.id, pin).await?;
        }
        Ok(JobOutput::Vm { id: vm.id })
    }

    /// The instance's template and OS after a restore (and the root size
    /// it now asks for), written while it is Stopped.
    async fn update_restored(
        &self,
        vm_id: i64,
        template_id: i64,
        os_type_id: i64,
        root_gb: Option<i64>,
    ) -> SResult<Vm> {
        for _ in 0..10 {
            let mut vm = self.load_vm(vm_id).await?;
            vm.template_id = Some(template_id);
            vm.os_type_id = os_type_id;
            if let Some(gb) = root_gb {
                vm.details.insert("rootdisksize".into(), gb.to_string());
            }
            let mut tx = Tx::new();
            tx.update(&mut vm);
            match self.store.commit(tx.ops).await {
                Ok(()) => return Ok(vm),
                Err(crate::store::StoreError::Conflict(..)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ServiceError::conflict("instance record kept changing"))
    }

    /// One pass over volumes destroyed on their own (an old root after a
    /// restore) longer than `expunge.delay` ago: their files go through
    /// the host that last used them.
    pub async fn expunge_destroyed_volumes(&self) -> SResult<usize> {
        let cutoff = now() - self.setting_i64("expunge.delay");
        let vols: Vec<Volume> = self
            .store
            .all(Query::new().eq(Col::State, "Destroy"))
            .await?;
        let mut n = 0;
        for mut v in vols.into_iter().filter(|v| {
            v.vm_id.is_none() && v.last_host_id.is_some() && v.removed.unwrap_or(0) <= cutoff
        }) {
            let Some(h) = v.last_host_id else { continue };
            let spec = self.volume_spec(&v).await?;
            if let Err(e) = self.agents.reset_volume(h, "", &spec).await {
                // Tried again next pass (the host may be down).
                tracing::warn!(volume = %v.uuid, error = %e, "removing a destroyed volume's file");
                continue;
            }
            v.state = "Expunged".into();
            let mut tx = Tx::new();
            tx.update(&mut v);
            self.store.commit(tx.ops).await?;
            n += 1;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpl(size: i64) -> Template {
        Template {
            size,
            ..Default::default()
        }
    }

    #[test]
    fn the_new_root_size_follows_cloudstack() {
        let t = tmpl(2 * GIB);
        assert_eq!(restored_root_size(&t, None, None, None).unwrap(), 2 * GIB);
        assert_eq!(
            restored_root_size(&t, None, Some(5), None).unwrap(),
            5 * GIB
        );
        assert!(restored_root_size(&t, None, Some(1), None).is_err());
        assert!(restored_root_size(&t, None, Some(0), None).is_err());
        // The size it was deployed with, when larger than the template.
        assert_eq!(
            restored_root_size(&t, None, None, Some(8)).unwrap(),
            8 * GIB
        );
        assert_eq!(
            restored_root_size(&t, None, None, Some(1)).unwrap(),
            2 * GIB
        );
        let fixed = DiskOffering {
            disk_size_gb: 10,
            customized: false,
            ..Default::default()
        };
        assert_eq!(
            restored_root_size(&t, Some(&fixed), None, Some(8)).unwrap(),
            10 * GIB
        );
        // An explicit size wins over the offering.
        assert_eq!(
            restored_root_size(&t, Some(&fixed), Some(3), None).unwrap(),
            3 * GIB
        );
    }
}
