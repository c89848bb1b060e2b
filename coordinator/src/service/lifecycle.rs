//! Instance power and removal actions with their rules in one place: stop
//! is idempotent, delete protection blocks destroy and expunge, expunging
//! needs the setting or an admin and the role's expungeVirtualMachine rule,
//! and a destroy may only take the instance's own data volumes along.

use super::jobs::{JobOutput, Work};
use super::vm::Pin;
use super::*;
use orrery_model::{Transition, VmState};

/// What startVirtualMachine, stopVirtualMachine, rebootVirtualMachine,
/// destroyVirtualMachine and expungeVirtualMachine ask for.
#[derive(Debug, Clone)]
pub enum VmAction {
    Start {
        pin: Pin,
    },
    Stop {
        forced: bool,
    },
    Reboot,
    /// `volumes`: uuids of data volumes to delete with the instance.
    Destroy {
        expunge: bool,
        volumes: Vec<String>,
    },
    Expunge,
}

fn protection_error(vm: &Vm) -> ServiceError {
    ServiceError::invalid(format!(
        "Instance {} has delete protection enabled and cannot be deleted; remove it with updateVirtualMachine deleteprotection=false first",
        vm.uuid
    ))
}

impl Service {
    fn may_expunge_by_setting(&self, caller: &Caller) -> bool {
        caller.is_admin()
            || self.setting(
                "allow.user.expunge.recover.vm",
                &[("account", caller.account.id)],
            ) == "true"
    }

    /// Expunging is allowed to admins, or to users when the setting permits;
    /// the role's rule for expungeVirtualMachine applies however expunging
    /// is reached.
    async fn check_expunge_allowed(&self, caller: &Caller) -> SResult<()> {
        if !self.may_expunge_by_setting(caller) {
            return Err(ServiceError::denied("Parameter expunge can be passed by Admin only. Or when the allow.user.expunge.recover.vm key is set."));
        }
        if !self
            .identity
            .role_allows(caller, "expungeVirtualMachine")
            .await?
        {
            return Err(ServiceError::denied(
                "The caller's role does not allow expungeVirtualMachine, so expunge=true is refused",
            ));
        }
        Ok(())
    }

    async fn queue_action(
        self: &Arc<Self>,
        caller: &Caller,
        vm: &Vm,
        command: &str,
        t: Transition,
        work: Work,
    ) -> SResult<String> {
        Self::check_transition(vm, t)?;
        Ok(self.queue_vm_job(caller, vm, command, work).await?.uuid)
    }

    /// Checks an action on an instance the caller may act on and queues its
    /// job; returns the job's uuid.
    pub async fn vm_action(
        self: &Arc<Self>,
        caller: &Caller,
        vm_uuid: &str,
        command: &str,
        action: VmAction,
    ) -> SResult<String> {
        let vm: Vm = self.owned(caller, "id", vm_uuid).await?;
        match action {
            VmAction::Start { pin } => {
                let work = Work::Start { vm_id: vm.id, pin };
                self.queue_action(caller, &vm, command, Transition::BeginStart, work)
                    .await
            }
            // CloudStack's stop is idempotent: stopping a Stopped instance
            // succeeds (clients retry stops, and Terraform stops before
            // changing offerings).
            VmAction::Stop { .. } if vm.state == VmState::Stopped => {
                self.done_job_with(
                    caller,
                    command,
                    "VirtualMachine",
                    &vm.uuid,
                    JobOutput::Vm { id: vm.id },
                )
                .await
            }
            VmAction::Stop { forced } => {
                let work = Work::Stop {
                    vm_id: vm.id,
                    forced,
                };
                self.queue_action(caller, &vm, command, Transition::BeginStop, work)
                    .await
            }
            VmAction::Reboot => {
                let work = Work::Reboot { vm_id: vm.id };
                self.queue_action(caller, &vm, command, Transition::Reboot, work)
                    .await
            }
            VmAction::Destroy { expunge, volumes } => {
                if expunge {
                    self.check_expunge_allowed(caller).await?;
                }
                if vm.delete_protection {
                    return Err(protection_error(&vm));
                }
                let mut volume_ids = Vec::new();
                for vid in &volumes {
                    let vol: Volume = self.owned(caller, "volumeids", vid).await?;
                    if vol.vm_id != Some(vm.id) || vol.volume_type != "DATADISK" {
                        return Err(ServiceError::invalid(format!(
                            "Volume {vid} is not a data volume of instance {}",
                            vm.uuid
                        )));
                    }
                    volume_ids.push(vol.id);
                }
                // A destroyed instance asked to be expunged goes straight on.
                let t = if vm.state == VmState::Destroyed && expunge {
                    Transition::BeginExpunge
                } else {
                    Transition::Destroy
                };
                let work = Work::Destroy {
                    vm_id: vm.id,
                    expunge,
                    volume_ids,
                };
                self.queue_action(caller, &vm, command, t, work).await
            }
            VmAction::Expunge => {
                if !self.may_expunge_by_setting(caller) {
                    return Err(ServiceError::denied(
                        "Expunging is allowed to admins only, or when allow.user.expunge.recover.vm is set",
                    ));
                }
                if vm.delete_protection {
                    return Err(protection_error(&vm));
                }
                if vm.state != VmState::Destroyed {
                    return Err(ServiceError::state(format!(
                        "Instance {} is {}; only a destroyed instance can be expunged",
                        vm.uuid, vm.state
                    )));
                }
                let work = Work::Expunge { vm_id: vm.id };
                self.queue_action(caller, &vm, command, Transition::BeginExpunge, work)
                    .await
            }
        }
    }
}
