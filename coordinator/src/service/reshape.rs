//! Changing an instance's compute offering: `changeServiceForVirtualMachine`
//! (also `upgradeVirtualMachine`) on a stopped instance.
//!
//! CloudStack's rules: the new offering must be one the caller may use, not
//! the one the instance has (unless custom, with new sizes), sized within a
//! custom offering's limits, on the same kind of storage (local or shared),
//! with storage tags that include the current offering's; and with
//! `vm.strict.host.tags` the host the instance last ran on must carry every
//! strict tag the new offering asks for, so it can start there again.

use super::vm::compute_size;
use super::*;
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

impl Service {
    /// Gives a stopped instance another compute offering; its new size
    /// applies at the next start.
    pub async fn change_offering(&self, caller: &Caller, req: ChangeOffering) -> SResult<Vm> {
        let vm: Vm = self.owned(caller, "id", &req.vm_uuid).await?;
        let new: ServiceOffering = self
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
            })
            .await?;
        self.record(
            &vm,
            "VM.UPGRADE",
            &format!("Changed the service offering to {}", new.name),
        )
        .await?;
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
