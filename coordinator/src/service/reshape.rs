//! Changing an instance's compute offering: `changeServiceForVirtualMachine`
//! (also `upgradeVirtualMachine`) on a stopped instance, and
//! `scaleVirtualMachine` on a running one.
//!
//! Scaling a running instance needs `enable.dynamic.scale.vm` in its zone and
//! the dynamic-scaling flag on the instance, its template and both
//! offerings; it only goes up (never fewer vCPUs, less memory or a slower
//! CPU) and stays within the maximums the instance was started with. The
//! instance grows in place when its host has room; otherwise, as long as
//! `scale.retry` allows, it first moves to a host of its cluster that has.
//!
//! CloudStack's rules: the new offering must be one the caller may use, not
//! the one the instance has (unless custom, with new sizes), sized within a
//! custom offering's limits, on the same kind of storage (local or shared),
//! with storage tags that include the current offering's; and with
//! `vm.strict.host.tags` the host the instance last ran on must carry every
//! strict tag the new offering asks for, so it can start there again.

use super::jobs::{JobOutput, Work};
use super::vm::{compute_size, Pin};
use super::*;
use crate::placement as pl;
use orrery_model::VmState;
use std::collections::BTreeMap;

/// What changeServiceForVirtualMachine asks for.
#[derive(Debug, Clone, Default)]
pub struct ChangeOffering {
    pub vm_uuid: String,
    pub offering_uuid: String,
    /// `details`: cpuNumber, cpuSpeed, memory for a custom offering.
    pub details: BTreeMap<String, String>,
}

fn tags(s: &Option<String>) -> Vec<String> {
    s.as_deref()
        .unwrap_or("")
        .split(',')
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Why `new` cannot replace `current` as far as storage goes, if it cannot.
pub fn storage_mismatch(current: &ServiceOffering, new: &ServiceOffering) -> Option<String> {
    if !current.storage_type.eq_ignore_ascii_case(&new.storage_type) {
        return Some(format!(
            "Unable to change the service offering: the new offering uses {} storage while the current one uses {}",
            new.storage_type.to_lowercase(),
            current.storage_type.to_lowercase()
        ));
    }
    let (cur, next) = (tags(&current.storage_tags), tags(&new.storage_tags));
    if !cur.iter().all(|t| next.contains(t)) {
        return Some(format!(
            "Unable to change the service offering: the current offering's storage tags should be a subset of the new offering's. Current tags: [{}]; new tags: [{}]",
            cur.join(", "),
            next.join(", ")
        ));
    }
    None
}

/// The strict host tags `new` asks for that `host_tags` lacks.
pub fn missing_strict_tags(
    strict: &[String],
    host_tags: &[String],
    new: &ServiceOffering,
) -> Vec<String> {
    tags(&new.host_tags)
        .into_iter()
        .filter(|t| strict.iter().any(|s| s.eq_ignore_ascii_case(t)))
        .filter(|t| !host_tags.iter().any(|h| h.eq_ignore_ascii_case(t)))
        .collect()
}

/// What scaleVirtualMachine asks for.
#[derive(Debug, Clone, Default)]
pub struct ScaleRequest {
    pub vm_uuid: String,
    pub offering_uuid: String,
    pub details: BTreeMap<String, String>,
}

/// The size an instance is scaled to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NewSize {
    pub offering_id: i64,
    pub cpu: i64,
    pub speed: i64,
    pub memory: i64,
    pub customized: bool,
}

/// Why a running instance of size `cur` cannot become `new`, if it cannot.
pub fn not_scaling_up(cur: (i64, i64, i64), new: (i64, i64, i64)) -> Option<String> {
    let ((c0, s0, m0), (c1, s1, m1)) = (cur, new);
    if c1 < c0 || s1 < s0 || m1 < m0 {
        return Some(format!(
            "Only scaling up is supported for a running instance: the new offering (cpu={c1}, speed={s1} MHz, memory={m1} MB) has less than the current one (cpu={c0}, speed={s0} MHz, memory={m0} MB)"
        ));
    }
    if (c0, s0, m0) == (c1, s1, m1) {
        return Some(format!(
            "The new offering has the instance's current size (cpu={c0}, speed={s0} MHz, memory={m0} MB): nothing to scale"
        ));
    }
    None
}

impl Service {
    /// Checks a scaling request and queues its job (a stopped instance just
    /// changes offering); returns the job uuid.
    pub async fn scale_vm(self: &Arc<Self>, caller: &Caller, req: ScaleRequest) -> SResult<String> {
        let vm: Vm = self.owned(caller, "id", &req.vm_uuid).await?;
        if vm.state == VmState::Stopped {
            let vm = self
                .change_offering(
                    caller,
                    ChangeOffering {
                        vm_uuid: req.vm_uuid,
                        offering_uuid: req.offering_uuid,
                        details: req.details,
                    },
                )
                .await?;
            return self
                .done_job_with(
                    caller,
                    "scaleVirtualMachine",
                    "VirtualMachine",
                    &vm.uuid,
                    JobOutput::Vm { id: vm.id },
                )
                .await;
        }
        let target: Option<ServiceOffering> = self
            .catalog
            .visible_offering(caller, "serviceofferingid", &req.offering_uuid)
            .await
            .ok();
        let target_gpu = target
            .as_ref()
            .is_some_and(|o| o.gpu_count > 0 || o.vgpu_type.is_some());
        if vm.state == VmState::Running && (target_gpu || self.has_gpu(&vm).await?) {
            return Err(ServiceError::invalid(format!(
                "Dynamic scaling of a GPU/vGPU enabled instance is not supported: stop instance {} and change its service offering",
                vm.uuid
            )));
        }
        if vm.state != VmState::Running {
            return Err(ServiceError::state(format!(
                "Unable to scale instance {}: it is {}",
                vm.uuid, vm.state
            )));
        }
        let new: ServiceOffering = self
            .catalog
            .visible_offering(caller, "serviceofferingid", &req.offering_uuid)
            .await?;
        if new.is_system || new.state != "Active" {
            return Err(ServiceError::invalid(format!(
                "Invalid parameter serviceofferingid: offering {} cannot be used for instances",
                new.uuid
            )));
        }
        if let Err(why) = self.scalable(&vm).await? {
            return Err(ServiceError::invalid(format!(
                "Unable to scale instance {}: {why}",
                vm.uuid
            )));
        }
        if !new.dynamic_scaling {
            return Err(ServiceError::invalid(format!(
                "Unable to scale instance {}: the new offering {} does not enable dynamic scaling",
                vm.uuid, new.name
            )));
        }
        let current: Option<ServiceOffering> = self.load_cached(vm.service_offering_id).await?;
        if let Some(cur) = &current {
            if let Some(why) = storage_mismatch(cur, &new) {
                return Err(ServiceError::invalid(why));
            }
        }
        let (cpu, speed, memory) = compute_size(&new, &req.details)?;
        if let Some(why) = not_scaling_up(
            (vm.cpu_number, vm.cpu_speed, vm.memory),
            (cpu, speed, memory),
        ) {
            return Err(ServiceError::invalid(why));
        }
        if let Some(h) = vm.host_id {
            if let Some(host) = self.load_cached::<Host>(h).await? {
                let strict = self.strict_tags();
                let missing = missing_strict_tags(&strict, &host.host_tags, &new);
                if !missing.is_empty() {
                    return Err(ServiceError::invalid(format!(
                        "Unable to scale instance {}: its host {} lacks the strict host tags [{}] that offering {} requires (vm.strict.host.tags)",
                        vm.uuid,
                        host.name,
                        missing.join(", "),
                        new.name
                    )));
                }
            }
        }
        let size = NewSize {
            offering_id: new.id,
            cpu,
            speed,
            memory,
            customized: new.customized,
        };
        Ok(self
            .queue_vm_job(
                caller,
                &vm,
                "scaleVirtualMachine",
                Work::Scale { vm_id: vm.id, size },
            )
            .await?
            .uuid)
    }

    fn strict_tags(&self) -> Vec<String> {
        self.setting("vm.strict.host.tags", &[])
            .split(',')
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect()
    }

    /// Whether `host` has room for `vm` at `size` (its own usage left out).
    async fn fits_on(&self, vm: &Vm, size: &NewSize, host_id: i64) -> SResult<bool> {
        let snap = self.placement_snapshot(vm.zone_id).await?;
        let mut sized = vm.clone();
        sized.cpu_number = size.cpu;
        sized.cpu_speed = size.speed;
        sized.memory = size.memory;
        sized.service_offering_id = size.offering_id;
        let pin = Pin {
            host_id: Some(host_id),
            ..Pin::default()
        };
        let req = self.placement_request(&sized, &pin, true).await?;
        let allocator = pl::allocator_for("firstfit").expect("the firstfit allocator exists");
        Ok(pl::dry_run(&snap, &req, allocator)
            .iter()
            .any(|v| v.host_id == host_id && v.is_eligible()))
    }

    pub(crate) async fn exec_scale(&self, vm_id: i64, size: NewSize) -> SResult<JobOutput> {
        let mut attempts = self.setting_i64("scale.retry").max(0) + 1;
        loop {
            attempts -= 1;
            let vm: Vm = self
                .store
                .load(vm_id)
                .await?
                .ok_or_else(|| ServiceError::internal("instance vanished"))?;
            if vm.state != VmState::Running {
                return Err(ServiceError::state(format!(
                    "Unable to scale instance {}: it is {}",
                    vm.uuid, vm.state
                )));
            }
            let host_id = vm
                .host_id
                .ok_or_else(|| ServiceError::internal("running instance without host"))?;
            if self.fits_on(&vm, &size, host_id).await? {
                return self.scale_in_place(&vm, host_id, &size).await;
            }
            if attempts <= 0 {
                return Err(ServiceError::capacity(format!(
                    "Unable to scale instance {}: its host lacks room for {} vCPUs at {} MHz and {} MB, and no other host of its cluster could take it within scale.retry",
                    vm.uuid, size.cpu, size.speed, size.memory
                )));
            }
            // Move to a host of the cluster with room for the new size,
            // then try again there.
            let mut sized = vm.clone();
            sized.cpu_number = size.cpu;
            sized.cpu_speed = size.speed;
            sized.memory = size.memory;
            self.migrate_for_room(&vm, &sized).await?;
        }
    }

    async fn scale_in_place(&self, vm: &Vm, host_id: i64, size: &NewSize) -> SResult<JobOutput> {
        self.agents
            .scale(host_id, &vm.instance_name, size.cpu, size.memory)
            .await?;
        let s = *size;
        let vm = self
            .transition(
                vm.id,
                orrery_model::Transition::Rescale,
                move |v| {
                    v.service_offering_id = s.offering_id;
                    v.cpu_number = s.cpu;
                    v.cpu_speed = s.speed;
                    v.memory = s.memory;
                    for k in ["cpuNumber", "cpuSpeed", "memory"] {
                        v.details.remove(k);
                    }
                    if s.customized {
                        v.details.insert("cpuNumber".into(), s.cpu.to_string());
                        v.details.insert("cpuSpeed".into(), s.speed.to_string());
                        v.details.insert("memory".into(), s.memory.to_string());
                    }
                },
                |_, _| {},
            )
            .await?;
        self.record(
            &vm,
            "VM.DYNAMIC.SCALE",
            &format!(
                "Scaled instance to {} vCPUs at {} MHz and {} MB",
                s.cpu, s.speed, s.memory
            ),
        )
        .await?;
        self.discard_memory_snapshots(&vm).await?;
        Ok(JobOutput::Vm { id: vm.id })
    }

    /// Gives a stopped instance another compute offering; its new size
    /// applies at the next start.
    pub async fn change_offering(&self, caller: &Caller, req: ChangeOffering) -> SResult<Vm> {
        let vm: Vm = self.owned(caller, "id", &req.vm_uuid).await?;
        let new: ServiceOffering = self
            .catalog
            .visible_offering(caller, "serviceofferingid", &req.offering_uuid)
            .await?;
        if new.is_system || new.state != "Active" {
            return Err(ServiceError::invalid(format!(
                "Invalid parameter serviceofferingid: offering {} cannot be used for instances",
                new.uuid
            )));
        }
        match vm.state {
            VmState::Stopped => {}
            VmState::Running => {
                return Err(ServiceError::state(format!(
                    "Unable to change the service offering of instance {}: it is Running; stop it first, or use scaleVirtualMachine where dynamic scaling is enabled",
                    vm.uuid
                )))
            }
            s => {
                return Err(ServiceError::state(format!(
                    "Unable to change the service offering of instance {}: it is {s}",
                    vm.uuid
                )))
            }
        }
        let current: Option<ServiceOffering> = self.load_cached(vm.service_offering_id).await?;
        if let Some(cur) = &current {
            if cur.id == new.id && !new.customized {
                return Err(ServiceError::invalid(format!(
                    "Not changing the service offering of instance {}: it already has offering {}",
                    vm.uuid, new.name
                )));
            }
            if let Some(why) = storage_mismatch(cur, &new) {
                return Err(ServiceError::invalid(why));
            }
        }
        let (cpu, speed, mem) = compute_size(&new, &req.details)?;
        if let Some(owner) = self.load_cached::<Account>(vm.account_id).await? {
            self.check_gpu_limit(&owner, super::limits::gpu_units(&new), Some(vm.id))
                .await?;
        }
        let strict: Vec<String> = self
            .setting("vm.strict.host.tags", &[])
            .split(',')
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect();
        if let Some(h) = vm.last_host_id {
            if let Some(host) = self.load_cached::<Host>(h).await? {
                let missing = missing_strict_tags(&strict, &host.host_tags, &new);
                if !missing.is_empty() {
                    return Err(ServiceError::invalid(format!(
                        "Unable to change the service offering of instance {}: its host {} lacks the strict host tags [{}] that offering {} requires (vm.strict.host.tags)",
                        vm.uuid,
                        host.name,
                        missing.join(", "),
                        new.name
                    )));
                }
            }
        }
        let custom: BTreeMap<String, String> = if new.customized {
            [("cpuNumber", cpu), ("cpuSpeed", speed), ("memory", mem)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        } else {
            BTreeMap::new()
        };
        let (new_id, dynamic) = (new.id, new.dynamic_scaling);
        let vgpu = new.vgpu_type.clone();
        let gpus = if new.vgpu_type.is_some() {
            0
        } else {
            new.gpu_count
        };
        let vm = self
            .update_stopped(vm.id, move |v| {
                v.service_offering_id = new_id;
                v.cpu_number = cpu;
                v.cpu_speed = speed;
                v.memory = mem;
                for k in ["cpuNumber", "cpuSpeed", "memory"] {
                    v.details.remove(k);
                }
                v.details.extend(custom.clone());
                // An instance is only scalable while its offering allows it.
                v.dynamically_scalable = v.dynamically_scalable && dynamic;
                v.gpu_count = gpus;
                v.vgpu_type = vgpu.clone();
            })
            .await?;
        self.record(
            &vm,
            "VM.UPGRADE",
            &format!("Changed the service offering to {}", new.name),
        )
        .await?;
        // The specification: snapshots with memory cannot be kept across an
        // offering change (their saved state is of the old size).
        self.discard_memory_snapshots(&vm).await?;
        Ok(vm)
    }

    /// Applies `edit` to an instance that must still be Stopped when the
    /// write lands.
    async fn update_stopped(&self, vm_id: i64, edit: impl Fn(&mut Vm)) -> SResult<Vm> {
        for _ in 0..10 {
            let mut vm: Vm = self
                .store
                .load(vm_id)
                .await?
                .ok_or_else(|| ServiceError::internal("instance vanished"))?;
            if vm.state != VmState::Stopped {
                return Err(ServiceError::state(format!(
                    "Instance {} is {}; its offering can only change while it is Stopped",
                    vm.uuid, vm.state
                )));
            }
            edit(&mut vm);
            vm.last_updated = now();
            let mut tx = Tx::new();
            tx.update(&mut vm);
            match self.store.commit(tx.ops).await {
                Ok(()) => return Ok(vm),
                Err(crate::store::StoreError::Conflict(..)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ServiceError::conflict(
            "The instance is being changed concurrently; retry",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offering(storage: &str, stags: Option<&str>, htags: Option<&str>) -> ServiceOffering {
        ServiceOffering {
            storage_type: storage.into(),
            storage_tags: stags.map(String::from),
            host_tags: htags.map(String::from),
            ..Default::default()
        }
    }

    #[test]
    fn storage_kind_and_tags_must_be_kept() {
        let cur = offering("shared", Some("ssd"), None);
        assert!(storage_mismatch(&cur, &offering("shared", Some("ssd,fast"), None)).is_none());
        assert!(
            storage_mismatch(&cur, &offering("local", Some("ssd"), None))
                .unwrap()
                .contains("local storage")
        );
        assert!(
            storage_mismatch(&cur, &offering("shared", Some("hdd"), None))
                .unwrap()
                .contains("subset")
        );
        // No tags before: anything goes.
        let plain = offering("shared", None, None);
        assert!(storage_mismatch(&plain, &offering("shared", Some("hdd"), None)).is_none());
    }

    #[test]
    fn running_instances_only_scale_up() {
        assert!(not_scaling_up((1, 500, 256), (2, 500, 512)).is_none());
        assert!(not_scaling_up((1, 500, 256), (1, 500, 512)).is_none());
        assert!(not_scaling_up((2, 500, 256), (1, 500, 512))
            .unwrap()
            .contains("Only scaling up"));
        assert!(not_scaling_up((1, 1000, 256), (2, 500, 512))
            .unwrap()
            .contains("Only scaling up"));
        assert!(not_scaling_up((1, 500, 256), (1, 500, 256))
            .unwrap()
            .contains("nothing to scale"));
    }

    #[test]
    fn only_strict_tags_the_host_lacks_are_reported() {
        let new = offering("shared", None, Some("gpu, avx512,rack1"));
        let strict = vec!["GPU".to_string(), "avx512".to_string()];
        assert_eq!(
            missing_strict_tags(&strict, &["avx512".into()], &new),
            vec!["gpu".to_string()]
        );
        assert!(missing_strict_tags(&strict, &["gpu".into(), "AVX512".into()], &new).is_empty());
        assert!(missing_strict_tags(&[], &[], &new).is_empty());
    }
}
