//! Host maintenance: `prepareHostForMaintenance` empties a host by live
//! migration, `cancelHostMaintenance` returns it to service.
//!
//! The host leaves placement at once (PrepareForMaintenance takes no new
//! instances); every running instance then moves in its own migrate job,
//! so each shows up, succeeds or fails on its own, and placement picks each
//! destination. Instances that cannot move are force-stopped only when
//! `host.maintenance.local.storage.strategy` is ForceStop; otherwise the host
//! goes to ErrorInMaintenance with the reasons. A cancel during the
//! preparation stops further moves.

use super::jobs::{JobOutput, NewJob, Work};
use super::records::{JOB_FAILED, JOB_PENDING};
use super::*;
use orrery_model::VmState;
use std::time::Duration;

const PREPARING: &str = "PrepareForMaintenance";
const MAINTENANCE: &str = "Maintenance";
const ERROR_IN_MAINTENANCE: &str = "ErrorInMaintenance";

/// How often the preparation looks at the jobs it queued.
const POLL: Duration = Duration::from_millis(250);

impl Service {
    async fn set_resource_state(&self, host_id: i64, state: &str) -> SResult<Host> {
        for _ in 0..10 {
            let mut h: Host = self
                .store
                .load(host_id)
                .await?
                .ok_or_else(|| ServiceError::internal("host vanished"))?;
            h.resource_state = state.to_string();
            let mut tx = Tx::new();
            tx.update(&mut h);
            match self.store.commit(tx.ops).await {
                Ok(()) => return Ok(h),
                Err(crate::store::StoreError::Conflict(..)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ServiceError::conflict(
            "The host is being changed concurrently; retry",
        ))
    }

    async fn host_event(&self, caller: &Caller, h: &Host, kind: &str, what: &str) -> SResult<()> {
        let mut tx = Tx::new();
        tx.insert(&Event {
            id: 0,
            uuid: new_uuid(),
            version: 0,
            event_type: kind.into(),
            level: "INFO".into(),
            state: "Completed".into(),
            description: what.into(),
            account_id: caller.account.id,
            domain_id: caller.domain.id,
            user_id: caller.user.id,
            resource_type: Some("Host".into()),
            resource_uuid: Some(h.uuid.clone()),
            resource_name: Some(h.name.clone()),
            created: now(),
        });
        self.store.commit(tx.ops).await?;
        Ok(())
    }

    /// Puts a host into PrepareForMaintenance and queues the job that empties
    /// it; returns the job uuid.
    pub async fn prepare_host_maintenance(
        self: &Arc<Self>,
        caller: &Caller,
        host_uuid: &str,
    ) -> SResult<String> {
        if !caller.is_root_admin() {
            return Err(ServiceError::denied(
                "Only the root admin can put hosts into maintenance",
            ));
        }
        let mut h: Host = self.by_uuid("id", host_uuid).await?;
        if h.removed.is_some() {
            return Err(ServiceError::not_found("id", host_uuid));
        }
        match h.resource_state.as_str() {
            "Enabled" | "Disabled" | ERROR_IN_MAINTENANCE => {}
            other => {
                return Err(ServiceError::state(format!(
                "Host {} is in resource state {other}; it is already in or entering maintenance",
                h.name
            )))
            }
        }
        h.resource_state = PREPARING.into();
        let job = self.new_job(
            caller,
            NewJob {
                command: "prepareHostForMaintenance",
                instance_type: Some("Host"),
                instance_uuid: Some(&h.uuid),
                work: Work::HostMaintenance { host_id: h.id },
            },
        );
        let mut tx = Tx::new();
        tx.update(&mut h);
        tx.insert(&job);
        self.store.commit(tx.ops).await?;
        self.spawn_job(job.uuid.clone());
        Ok(job.uuid)
    }

    /// Returns a host in or entering maintenance to service.
    pub async fn cancel_host_maintenance(
        self: &Arc<Self>,
        caller: &Caller,
        host_uuid: &str,
    ) -> SResult<String> {
        if !caller.is_root_admin() {
            return Err(ServiceError::denied(
                "Only the root admin can take hosts out of maintenance",
            ));
        }
        let h: Host = self.by_uuid("id", host_uuid).await?;
        if h.removed.is_some() {
            return Err(ServiceError::not_found("id", host_uuid));
        }
        if !matches!(
            h.resource_state.as_str(),
            PREPARING | MAINTENANCE | ERROR_IN_MAINTENANCE
        ) {
            return Err(ServiceError::state(format!(
                "Host {} is in resource state {}; only a host in or entering maintenance can leave it",
                h.name, h.resource_state
            )));
        }
        let h = self.set_resource_state(h.id, "Enabled").await?;
        self.host_event(
            caller,
            &h,
            "MAINT.CANCEL",
            &format!("Cancelled maintenance of host {}", h.name),
        )
        .await?;
        self.done_job_with(
            caller,
            "cancelHostMaintenance",
            "Host",
            &h.uuid,
            JobOutput::Host { id: h.id },
        )
        .await
    }

    async fn running_on(&self, host_id: i64) -> SResult<Vec<Vm>> {
        let vms: Vec<Vm> = self.store.all(Query::new().eq(Col::Host, host_id)).await?;
        Ok(vms
            .into_iter()
            .filter(|v| v.removed.is_none() && v.host_id == Some(host_id))
            .filter(|v| {
                matches!(
                    v.state,
                    VmState::Running | VmState::Starting | VmState::Migrating | VmState::Stopping
                )
            })
            .collect())
    }

    async fn still_preparing(&self, host_id: i64) -> SResult<bool> {
        Ok(self
            .store
            .load::<Host>(host_id)
            .await?
            .is_some_and(|h| h.resource_state == PREPARING))
    }

    /// Waits for jobs to finish; returns the failed ones' texts by instance.
    async fn wait_jobs(&self, jobs: &[(Vm, String)]) -> SResult<Vec<(Vm, String)>> {
        let mut failed = Vec::new();
        for (vm, uuid) in jobs {
            loop {
                let Some(j) = self.store.load_uuid::<Job>(uuid).await? else {
                    break;
                };
                if j.status == JOB_PENDING {
                    tokio::time::sleep(POLL).await;
                    continue;
                }
                if j.status == JOB_FAILED {
                    let why = j
                        .result
                        .as_ref()
                        .and_then(|r| r.get("text").or_else(|| r.get("errortext")))
                        .and_then(|t| t.as_str())
                        .unwrap_or("the migration failed")
                        .to_string();
                    failed.push((vm.clone(), why));
                }
                break;
            }
        }
        Ok(failed)
    }

    pub(crate) async fn exec_host_maintenance(
        self: &Arc<Self>,
        caller: &Caller,
        host_id: i64,
    ) -> SResult<JobOutput> {
        // Instances still starting or stopping settle first.
        for _ in 0..240 {
            let busy = self
                .running_on(host_id)
                .await?
                .iter()
                .any(|v| v.state.is_transitional());
            if !busy {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        let mut jobs = Vec::new();
        for vm in self.running_on(host_id).await? {
            if !self.still_preparing(host_id).await? {
                break;
            }
            if vm.state != VmState::Running {
                continue;
            }
            let work = Work::Migrate {
                vm_id: vm.id,
                host_id: None,
            };
            match self
                .queue_vm_job(caller, &vm, "migrateVirtualMachine", work)
                .await
            {
                Ok(job) => jobs.push((vm, job.uuid)),
                Err(e) => {
                    tracing::warn!(vm = %vm.uuid, error = %e, "queueing a migration for maintenance")
                }
            }
        }
        let failed = self.wait_jobs(&jobs).await?;
        let host: Host = self
            .store
            .load(host_id)
            .await?
            .ok_or_else(|| ServiceError::internal("host vanished"))?;
        if host.resource_state != PREPARING {
            // Cancelled meanwhile: leave the host as the cancel set it.
            return Ok(JobOutput::Host { id: host_id });
        }
        let mut left = self.running_on(host_id).await?;
        if !left.is_empty()
            && self.setting("host.maintenance.local.storage.strategy", &[]) == "ForceStop"
        {
            let mut stops = Vec::new();
            for vm in &left {
                let work = Work::Stop {
                    vm_id: vm.id,
                    forced: true,
                };
                if let Ok(job) = self
                    .queue_vm_job(caller, vm, "stopVirtualMachine", work)
                    .await
                {
                    stops.push((vm.clone(), job.uuid));
                }
            }
            self.wait_jobs(&stops).await?;
            left = self.running_on(host_id).await?;
        }
        if left.is_empty() {
            let h = self.set_resource_state(host_id, MAINTENANCE).await?;
            self.host_event(
                caller,
                &h,
                "MAINT.PREPARE",
                &format!("Host {} is in maintenance", h.name),
            )
            .await?;
            return Ok(JobOutput::Host { id: host_id });
        }
        let reasons: Vec<String> = left
            .iter()
            .map(|vm| {
                let why = failed
                    .iter()
                    .find(|(f, _)| f.id == vm.id)
                    .map(|(_, w)| w.as_str())
                    .unwrap_or("it could not be moved");
                format!("instance {}: {why}", vm.instance_name)
            })
            .collect();
        let h = self
            .set_resource_state(host_id, ERROR_IN_MAINTENANCE)
            .await?;
        let text = format!(
            "Host {} could not be emptied for maintenance: {}",
            h.name,
            reasons.join("; ")
        );
        self.host_event(caller, &h, "MAINT.PREPARE", &text).await?;
        Err(ServiceError::capacity(text))
    }
}
