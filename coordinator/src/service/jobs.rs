//! Async jobs. A job record is committed in the same transaction as the change
//! that queues it, before any work runs, so a reply's `jobid` always exists. After
//! a restart, jobs left pending are failed with a clear error and the instances
//! they touched are reconciled with what their hosts report.

use super::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op")]
pub enum Work {
    Deploy {
        vm_id: i64,
        start: bool,
        pin: vm::Pin,
    },
    Start {
        vm_id: i64,
        pin: vm::Pin,
    },
    Stop {
        vm_id: i64,
        forced: bool,
    },
    Reboot {
        vm_id: i64,
    },
    Destroy {
        vm_id: i64,
        expunge: bool,
        volume_ids: Vec<i64>,
    },
    Expunge {
        vm_id: i64,
    },
    DeleteAccount {
        account_id: i64,
    },
    RenewCertificate {
        host_id: i64,
    },
    AttachVolume {
        volume_id: i64,
        vm_id: i64,
        device_id: i64,
    },
    DetachVolume {
        volume_id: i64,
    },
    ResizeVolume {
        volume_id: i64,
        size: i64,
        offering_id: Option<i64>,
    },
    Migrate {
        vm_id: i64,
        host_id: Option<i64>,
    },
    HostMaintenance {
        host_id: i64,
    },
    MigrateWithVolumes {
        vm_id: i64,
        host_id: i64,
        /// (volume id, destination pool id)
        moves: Vec<(i64, i64)>,
    },
    /// Volumes moving between pools while their instance is stopped (or of
    /// no instance), through one host.
    MoveVolumes {
        vm_id: Option<i64>,
        host_id: i64,
        volume_ids: Vec<i64>,
        pool_id: i64,
        output_volume: Option<i64>,
    },
    /// migrateVolume: a MigrateWithVolumes whose result is the volume.
    MigrateVolume {
        vm_id: i64,
        host_id: i64,
        volume_id: i64,
        moves: Vec<(i64, i64)>,
    },
    Scale {
        vm_id: i64,
        size: super::reshape::NewSize,
    },
    CreateVmSnapshot {
        snapshot_id: i64,
    },
    CreateSnapshot {
        snapshot_id: i64,
    },
    RevertSnapshot {
        snapshot_id: i64,
    },
    /// A private template from a volume snapshot or a volume.
    CreateTemplate {
        template_id: i64,
        snapshot_id: Option<i64>,
        volume_id: Option<i64>,
    },
    Restore {
        vm_id: i64,
        root_id: i64,
        template_id: i64,
        disk_offering_id: Option<i64>,
        /// Bytes.
        size: i64,
        root_gb: Option<i64>,
        expunge: bool,
    },
    RevertVmSnapshot {
        snapshot_id: i64,
    },
    DeleteVmSnapshot {
        snapshot_id: i64,
    },
    /// Completes at once with the given result; for commands that are async in
    /// CloudStack but need no host work here.
    Done {
        result: JobOutput,
    },
}

impl Work {
    /// Whether the work, though it holds its instance (a job on the
    /// instance itself), neither starts, stops, reboots nor restores it: a
    /// power event that comes during it is news the job does not act on.
    /// (A scale that moves the instance for room, or a volume's live move,
    /// ends with the record where the instance is; a left event from a host
    /// it no longer runs on is not looked at.) Volume and snapshot jobs do
    /// not hold the instance: events during them are taken at once.
    fn leaves_power_alone(&self) -> bool {
        matches!(self, Work::Scale { .. } | Work::MigrateVolume { .. })
    }
}

/// What a finished job returns, rendered when the job completes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum JobOutput {
    Vm {
        id: i64,
    },
    /// `{"virtualmachine":{}}`: an instance that no longer exists.
    VmGone,
    Volume {
        id: i64,
    },
    AffinityGroup {
        id: i64,
    },
    Host {
        id: i64,
    },
    VmSnapshot {
        id: i64,
    },
    Snapshot {
        id: i64,
    },
    Template {
        id: i64,
    },
    SnapshotPolicy {
        id: i64,
    },
    Success,
}

pub struct NewJob<'a> {
    pub command: &'a str,
    pub instance_type: Option<&'a str>,
    pub instance_uuid: Option<&'a str>,
    pub work: Work,
}

impl Context {
    /// Builds a pending job record; the caller adds it to its transaction and,
    /// after committing, calls `spawn_job`.
    pub fn new_job(&self, caller: &Caller, j: NewJob<'_>) -> Job {
        let admin = if caller.is_admin() { "admin." } else { "user." };
        Job {
            id: 0,
            uuid: new_uuid(),
            version: 0,
            command: j.command.to_string(),
            cmd: format!(
                "org.apache.cloudstack.api.command.{admin}{}",
                class_name(j.command)
            ),
            account_id: caller.account.id,
            user_id: caller.user.id,
            domain_id: caller.domain.id,
            status: JOB_PENDING,
            result_code: 0,
            result_type: None,
            result: None,
            instance_type: j.instance_type.map(str::to_string),
            instance_uuid: j.instance_uuid.map(str::to_string),
            work: serde_json::to_value(&j.work).expect("work serialises"),
            created: now(),
            completed: None,
            runner: Some(self.store.runner_id()).filter(|r| !r.is_empty()),
        }
    }
}

impl Service {
    /// Inserts a new record together with the job that works on it, in one
    /// commit, and starts the job.
    pub(crate) async fn insert_with_job<E: Record>(
        self: &Arc<Self>,
        caller: &Caller,
        record: &E,
        new: NewJob<'_>,
    ) -> SResult<Job> {
        let job = self.new_job(caller, new);
        let mut tx = Tx::new();
        tx.insert(record);
        tx.insert(&job);
        self.store.commit(tx.ops).await?;
        self.spawn_job(job.uuid.clone());
        Ok(job)
    }

    /// Records a job that is already complete, for commands CloudStack runs
    /// asynchronously but that need no host work here. Returns its uuid.
    pub async fn done_job(
        self: &Arc<Self>,
        caller: &Caller,
        command: &str,
        instance_type: &str,
        instance_uuid: &str,
    ) -> SResult<String> {
        self.done_job_with(
            caller,
            command,
            instance_type,
            instance_uuid,
            JobOutput::Success,
        )
        .await
    }

    /// Like `done_job`, with the object the job result shows.
    pub async fn done_job_with(
        self: &Arc<Self>,
        caller: &Caller,
        command: &str,
        instance_type: &str,
        instance_uuid: &str,
        result: JobOutput,
    ) -> SResult<String> {
        let job = self.new_job(
            caller,
            NewJob {
                command,
                instance_type: Some(instance_type),
                instance_uuid: Some(instance_uuid),
                work: Work::Done { result },
            },
        );
        let mut tx = Tx::new();
        tx.insert(&job);
        self.store.commit(tx.ops).await?;
        self.spawn_job(job.uuid.clone());
        Ok(job.uuid)
    }

    pub async fn queue_host_job(
        self: &Arc<Self>,
        caller: &Caller,
        command: &str,
        host: &Host,
    ) -> SResult<String> {
        let job = self.new_job(
            caller,
            NewJob {
                command,
                instance_type: Some("Host"),
                instance_uuid: Some(&host.uuid),
                work: Work::RenewCertificate { host_id: host.id },
            },
        );
        let mut tx = Tx::new();
        tx.insert(&job);
        self.store.commit(tx.ops).await?;
        self.spawn_job(job.uuid.clone());
        Ok(job.uuid)
    }

    /// Runs a committed job in the bounded background set. A job refused
    /// because the coordinator is stopping stays pending; the next start
    /// fails it with a clear error and settles its instance.
    pub fn spawn_job(self: &Arc<Self>, job_uuid: String) {
        let svc = self.clone();
        let uuid = job_uuid.clone();
        let taken = self.tasks.spawn(async move {
            if let Err(e) = svc.run_job(&uuid).await {
                tracing::error!(job = %uuid, error = %e, "job bookkeeping failed");
            }
        });
        if !taken {
            tracing::warn!(job = %job_uuid, "shutting down: job left for the next start");
        }
    }

    async fn run_job(self: &Arc<Self>, job_uuid: &str) -> SResult<()> {
        let Some(job) = self.store.load_uuid::<Job>(job_uuid).await? else {
            return Ok(());
        };
        let caller = self.identity.caller_for_user(job.user_id).await?;
        let work: Work = serde_json::from_value(job.work.clone())
            .map_err(|e| ServiceError::internal(format!("unreadable job: {e}")))?;
        let vm_uuid = (job.instance_type.as_deref() == Some("VirtualMachine"))
            .then(|| job.instance_uuid.clone())
            .flatten();
        if let Some(u) = &vm_uuid {
            self.busy.lock().insert(u.clone());
        }
        let leaves_power_alone = work.leaves_power_alone();
        let outcome = self.execute(&caller, work).await;
        let recheck = vm_uuid.as_ref().and_then(|u| {
            self.busy.lock().remove(u);
            self.power_rechecks.lock().remove(u)
        });
        // A job's outcome is written whatever it takes: with the data disk
        // full, the write fails until space comes back, and a job left
        // pending would hang its client for good.
        let failed = outcome.is_err();
        retry_until_written("job completion", || {
            self.finish_job(job.id, outcome.clone())
        })
        .await;
        if let (true, Some(host_id), Some(u)) = (leaves_power_alone, recheck, &vm_uuid) {
            // A guest that powered itself off (or crashed) during, say, a
            // live scale: its event was left to this job, which does not
            // look at power. A job that starts, stops or moves the
            // instance settles power itself; a left event about it would
            // only be older news (a start the lock manager refused).
            if let Err(e) = self.recheck_power(host_id, u).await {
                tracing::warn!(vm = %u, error = %e.text(), "power state after a job not checked");
            }
        }
        if let (true, Some(u)) = (failed, &vm_uuid) {
            // A failed job may not have recorded the instance's new state
            // (Starting, Creating), holding capacity: settle it from what the
            // host reports. A job that succeeded recorded it itself.
            retry_until_written("instance state after a job", || {
                self.settle_if_transitional(u)
            })
            .await;
        }
        Ok(())
    }

    async fn settle_if_transitional(&self, vm_uuid: &str) -> SResult<()> {
        let Some(vm) = self.store.load_uuid::<Vm>(vm_uuid).await? else {
            return Ok(());
        };
        if vm.state.is_transitional() && !self.is_busy(vm_uuid) {
            tracing::warn!(vm = %vm.uuid, state = vm.state.as_str(), "instance left in a transitional state by its job; settling it");
            self.settle(vm).await?;
        }
        Ok(())
    }

    /// Records a job's outcome: the typed output on success (the wire layer
    /// renders it when the job is queried), the failure's kind and text
    /// otherwise.
    pub(crate) async fn finish_job(&self, job_id: i64, outcome: SResult<JobOutput>) -> SResult<()> {
        for _ in 0..5 {
            let Some(mut job) = self.store.load::<Job>(job_id).await? else {
                return Ok(());
            };
            match &outcome {
                Ok(out) => {
                    job.status = JOB_SUCCEEDED;
                    job.result_code = 0;
                    job.result_type = Some("object".into());
                    job.result = Some(json!(out));
                }
                Err(e) => {
                    job.status = JOB_FAILED;
                    job.result_type = Some("object".into());
                    job.result = Some(json!(super::error::JobFailure::from(e)));
                }
            }
            job.completed = Some(now());
            let mut tx = Tx::new();
            tx.update(&mut job);
            match self.store.commit(tx.ops).await {
                Ok(()) => return Ok(()),
                Err(crate::store::StoreError::Conflict(..)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ServiceError::internal("job record kept changing"))
    }

    async fn execute(self: &Arc<Self>, caller: &Caller, work: Work) -> SResult<JobOutput> {
        match work {
            Work::Deploy { vm_id, start, pin } => self.exec_deploy(caller, vm_id, start, pin).await,
            Work::Start { vm_id, pin } => self.exec_start(caller, vm_id, pin).await,
            Work::Stop { vm_id, forced } => self.exec_stop(caller, vm_id, forced).await,
            Work::Reboot { vm_id } => self.exec_reboot(caller, vm_id).await,
            Work::Destroy {
                vm_id,
                expunge,
                volume_ids,
            } => self.exec_destroy(caller, vm_id, expunge, volume_ids).await,
            Work::Expunge { vm_id } => {
                self.exec_expunge(caller, vm_id).await?;
                Ok(JobOutput::Success)
            }
            Work::DeleteAccount { account_id } => {
                self.exec_delete_account(caller, account_id).await?;
                Ok(JobOutput::Success)
            }
            Work::AttachVolume {
                volume_id,
                vm_id,
                device_id,
            } => {
                self.exec_attach_volume(caller, volume_id, vm_id, device_id)
                    .await
            }
            Work::DetachVolume { volume_id } => self.exec_detach_volume(caller, volume_id).await,
            Work::ResizeVolume {
                volume_id,
                size,
                offering_id,
            } => {
                self.exec_resize_volume(caller, volume_id, size, offering_id)
                    .await
            }
            Work::RenewCertificate { host_id } => {
                let pem = self.agents.renew_certificate(host_id).await?;
                self.infrastructure
                    .set_host_certificate(host_id, &pem)
                    .await?;
                Ok(JobOutput::Success)
            }
            Work::Migrate { vm_id, host_id } => self.exec_migrate(vm_id, host_id).await,
            Work::MigrateWithVolumes {
                vm_id,
                host_id,
                moves,
            } => self.exec_migrate_with_volumes(vm_id, host_id, moves).await,
            Work::MoveVolumes {
                vm_id,
                host_id,
                volume_ids,
                pool_id,
                output_volume,
            } => {
                self.exec_move_volumes(vm_id, host_id, volume_ids, pool_id, output_volume)
                    .await
            }
            Work::MigrateVolume {
                vm_id,
                host_id,
                volume_id,
                moves,
            } => {
                self.exec_migrate_with_volumes(vm_id, host_id, moves)
                    .await?;
                Ok(JobOutput::Volume { id: volume_id })
            }
            Work::Scale { vm_id, size } => self.exec_scale(vm_id, size).await,
            Work::HostMaintenance { host_id } => self.exec_host_maintenance(caller, host_id).await,
            Work::Restore {
                vm_id,
                root_id,
                template_id,
                disk_offering_id,
                size,
                root_gb,
                expunge,
            } => {
                self.exec_restore(
                    caller,
                    vm_id,
                    root_id,
                    template_id,
                    disk_offering_id,
                    size,
                    root_gb,
                    expunge,
                )
                .await
            }
            Work::CreateSnapshot { snapshot_id } => self.exec_create_snapshot(snapshot_id).await,
            Work::RevertSnapshot { snapshot_id } => self.exec_revert_snapshot(snapshot_id).await,
            Work::CreateTemplate {
                template_id,
                snapshot_id,
                volume_id,
            } => {
                self.exec_create_template(template_id, snapshot_id, volume_id)
                    .await
            }
            Work::CreateVmSnapshot { snapshot_id } => {
                self.exec_create_vm_snapshot(snapshot_id).await
            }
            Work::RevertVmSnapshot { snapshot_id } => {
                self.exec_revert_vm_snapshot(snapshot_id).await
            }
            Work::DeleteVmSnapshot { snapshot_id } => {
                self.exec_delete_vm_snapshot(snapshot_id).await
            }
            Work::Done { result } => Ok(result),
        }
    }

    /// Fails every job a previous run left pending and brings the instances they
    /// were working on back to a stable state. Runs once at startup, before the
    /// API accepts requests.
    /// With a shared store, the leader settles what a coordinator that died
    /// left running: its pending jobs fail with a clear error and their
    /// instances are brought out of transitional states from what their
    /// hosts report. Returns how many jobs were settled.
    pub async fn settle_orphaned_jobs(&self) -> SResult<usize> {
        if !self.store.shared() || !self.leads() {
            return Ok(0);
        }
        self.settle_jobs_of_the_gone(false).await
    }

    /// Pending jobs whose coordinator is gone (and, with `unowned`, those
    /// that name none) fail with a clear error; their instances are settled.
    async fn settle_jobs_of_the_gone(&self, unowned: bool) -> SResult<usize> {
        let pending: Vec<Job> = self
            .store
            .all(Query::new().eq(Col::State, JOB_PENDING.to_string()))
            .await?;
        let mut alive: std::collections::HashMap<String, bool> = Default::default();
        let mut n = 0;
        // Snapshots their failed jobs were working on.
        let (mut vm_snaps, mut snaps) = (Vec::new(), Vec::new());
        for job in pending {
            // Jobs without a runner predate sharing: only a start settles
            // those.
            let live = match job.runner.clone() {
                None => !unowned,
                Some(runner) => match alive.get(&runner) {
                    Some(l) => *l,
                    None => {
                        let l = self.store.runner_alive(&runner).await?;
                        alive.insert(runner, l);
                        l
                    }
                },
            };
            if live {
                continue;
            }
            self.finish_job(
                job.id,
                Err(ServiceError::internal(
                    "The coordinator running this job stopped before it completed; another coordinator took over: check the resource's state and retry",
                )),
            )
            .await?;
            n += 1;
            match serde_json::from_value::<Work>(job.work.clone()) {
                Ok(
                    Work::CreateVmSnapshot { snapshot_id }
                    | Work::RevertVmSnapshot { snapshot_id }
                    | Work::DeleteVmSnapshot { snapshot_id },
                ) => vm_snaps.push(snapshot_id),
                Ok(Work::CreateSnapshot { snapshot_id } | Work::RevertSnapshot { snapshot_id }) => {
                    snaps.push(snapshot_id)
                }
                _ => {}
            }
            if job.instance_type.as_deref() == Some("VirtualMachine") {
                if let Some(uuid) = &job.instance_uuid {
                    if let Some(vm) = self.store.load_uuid::<Vm>(uuid).await? {
                        if vm.state.is_transitional() {
                            self.settle(vm).await?;
                        }
                    }
                }
            }
        }
        self.settle_snapshot_tasks(Some(&vm_snaps), Some(&snaps))
            .await?;
        Ok(n)
    }

    pub async fn recover_after_restart(&self) -> SResult<usize> {
        // Other coordinators may be at work: only what the gone ones left.
        if self.store.shared() {
            return self.settle_jobs_of_the_gone(true).await;
        }
        let pending: Vec<Job> = self
            .store
            .all(Query::new().eq(Col::State, JOB_PENDING.to_string()))
            .await?;
        let n = pending.len();
        for job in pending {
            self.finish_job(
                job.id,
                Err(ServiceError::internal(
                    "The job was interrupted by a restart of the coordinator before it completed; check the resource's state and retry",
                )),
            )
            .await?;
        }
        self.reconcile_transitional().await?;
        self.settle_interrupted_snapshots().await?;
        Ok(n)
    }
}

/// `deployVirtualMachine` -> `vm.DeployVMCmd`-like class names, which clients show.
fn class_name(command: &str) -> String {
    let mut c = command.to_string();
    if let Some(f) = c.get_mut(0..1) {
        f.make_ascii_uppercase();
    }
    // CloudStack abbreviates VirtualMachine in its class names (DeployVMCmd).
    format!("{}Cmd", c.replace("VirtualMachine", "VM"))
}

/// Runs `write` until it succeeds, backing off from 50 ms to 5 s between
/// tries. For bookkeeping that must not be lost when the store refuses
/// writes for a while (a full disk); every failure is logged.
pub(crate) async fn retry_until_written<F, Fut>(what: &str, mut write: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = SResult<()>>,
{
    let mut pause = std::time::Duration::from_millis(50);
    let mut tries = 0u32;
    loop {
        match write().await {
            Ok(()) => {
                if tries > 0 {
                    tracing::info!(what, tries, "written after retrying");
                }
                return;
            }
            Err(e) => {
                tries += 1;
                tracing::warn!(what, tries, error = %e, "could not write; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(5));
            }
        }
    }
}
