//! Instance snapshots (the specification's "Instance Snapshots"): all of an
//! instance's volumes at one instant, optionally with its memory, kept in
//! primary storage as internal snapshots of the volumes themselves.
//!
//! The tree is kept here: each new snapshot's parent is the instance's
//! current one, and reverting makes the target current, so a snapshot after
//! a revert to an older one starts a branch. Deleting one hands its
//! children to its parent.
//!
//! Rules, as the specification and CloudStack have them: at most
//! `vmsnapshot.max` per instance (failed ones count until deleted); only of
//! a Running or Stopped instance, memory only of a Running one; one
//! snapshot operation on an instance at a time; while an instance has
//! snapshots its volumes cannot be attached, detached or resized, it cannot
//! move, and it cannot be restored from a template; an offering change
//! discards the snapshots with memory (their saved state no longer fits the
//! instance); all of them go when the instance is destroyed. A revert never
//! changes the instance's power state: a snapshot with memory is reverted
//! to while Running (and it runs on in the saved state), a disk-only one
//! while Stopped (and it stays so); the other cases are refused, as
//! CloudStack refuses them.

use super::agent::{AgentError, VmSnapshotCmd};
use super::jobs::{JobOutput, NewJob, Work};
use super::*;
use chrono::Utc;
use orrery_model::VmState;

pub const ALLOCATED: &str = "Allocated";
pub const CREATING: &str = "Creating";
pub const READY: &str = "Ready";
pub const REVERTING: &str = "Reverting";
pub const EXPUNGING: &str = "Expunging";
pub const ERROR: &str = "Error";

const ACTIVE_TASKS: &str =
    "There are other active Instance Snapshot tasks on the Instance, please try again later";

/// Longest display name and description, as CloudStack's columns.
const MAX_NAME: usize = 255;

/// What createVMSnapshot asks for.
#[derive(Debug, Clone, Default)]
pub struct NewVmSnapshot {
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub memory: bool,
    pub quiesce: bool,
}

/// listVMSnapshot's filters.
#[derive(Debug, Clone, Default)]
pub struct VmSnapshotFilter {
    pub id: Option<String>,
    pub ids: Vec<String>,
    pub vm: Option<String>,
    pub name: Option<String>,
    pub state: Option<String>,
    pub keyword: Option<String>,
    pub page: Option<(u64, u64)>,
}

/// CloudStack's internal snapshot name: `<instance name>_VS_<UTC time>`.
pub fn internal_name(instance_name: &str, at: chrono::DateTime<Utc>) -> String {
    format!("{instance_name}_VS_{}", at.format("%Y%m%d%H%M%S"))
}

/// The instance's snapshots after one is deleted: its children hang from
/// its parent, and when it was current its parent becomes current (the
/// instance's state still descends from that one). Returns the changed
/// records.
pub fn reparent_after_delete(all: &[VmSnapshot], gone: &VmSnapshot) -> Vec<VmSnapshot> {
    let mut changed = Vec::new();
    for s in all {
        if s.id == gone.id {
            continue;
        }
        let mut n = s.clone();
        if n.parent_id == Some(gone.id) {
            n.parent_id = gone.parent_id;
        }
        if gone.current && Some(n.id) == gone.parent_id {
            n.current = true;
        }
        if n.parent_id != s.parent_id || n.current != s.current {
            changed.push(n);
        }
    }
    changed
}

fn check_text(param: &str, v: &str) -> SResult<()> {
    if v.chars().count() > MAX_NAME {
        return Err(ServiceError::invalid(format!(
            "Invalid value for parameter {param}: longer than {MAX_NAME} characters"
        )));
    }
    if v.chars().any(|c| c.is_control()) {
        return Err(ServiceError::invalid(format!(
            "Invalid value for parameter {param}: control characters are not allowed"
        )));
    }
    Ok(())
}

impl Service {
    /// The instance's live snapshots, oldest first.
    pub(crate) async fn vm_snapshots_of(&self, vm_id: i64) -> SResult<Vec<VmSnapshot>> {
        Ok(self.store.all(Query::new().eq(Col::Parent, vm_id)).await?)
    }

    /// Refuses with `text` while the instance has snapshots (CloudStack's
    /// rule for changes the snapshots could not be reverted across).
    pub(crate) async fn refuse_with_vm_snapshots(&self, vm_id: i64, text: &str) -> SResult<()> {
        if !self.vm_snapshots_of(vm_id).await?.is_empty() {
            return Err(ServiceError::invalid(text));
        }
        Ok(())
    }

    /// Marks a snapshot deleted in `tx`.
    fn remove_snapshot(tx: &mut Tx, s: &VmSnapshot) {
        let mut s = s.clone();
        s.removed = Some(now());
        s.current = false;
        s.state = "Removed".into();
        tx.update(&mut s);
    }

    fn busy_snapshot(all: &[VmSnapshot]) -> bool {
        all.iter().any(|s| {
            matches!(
                s.state.as_str(),
                ALLOCATED | CREATING | REVERTING | EXPUNGING
            )
        })
    }

    pub async fn create_vm_snapshot(
        self: &Arc<Self>,
        caller: &Caller,
        vm: &Vm,
        req: &NewVmSnapshot,
    ) -> SResult<(Job, VmSnapshot)> {
        self.check_owned(caller, vm).await?;
        if let Some(n) = &req.display_name {
            check_text("name", n)?;
        }
        if let Some(d) = &req.description {
            check_text("description", d)?;
        }
        if !matches!(vm.state, VmState::Running | VmState::Stopped) {
            return Err(ServiceError::state(format!(
                "Creating Instance Snapshot failed because Instance:{} is not in Running or Stopped state",
                vm.uuid
            )));
        }
        if req.memory && vm.state != VmState::Running {
            return Err(ServiceError::invalid(
                "Can not Snapshot memory when the Instance is not in Running state",
            ));
        }
        if !req.memory
            && vm.state == VmState::Running
            && !self.setting_bool("kvm.vmstoragesnapshot.enabled")
        {
            return Err(ServiceError::refused(
                "Creating a snapshot of a running KVM Instance without memory is not supported",
            ));
        }
        if req.memory && req.quiesce {
            // The guest would be saved frozen and come back frozen.
            return Err(ServiceError::invalid(
                "Invalid parameter quiescevm: a snapshot with memory is consistent without quiescing; quiescevm applies to disk-only snapshots",
            ));
        }
        if req.memory && super::placing::boot_needs(&vm.details).uefi {
            return Err(ServiceError::invalid(format!(
                "Instance {} boots with UEFI: its firmware variables cannot be saved with its memory; take a snapshot with snapshotmemory=false",
                vm.uuid
            )));
        }
        if self.is_busy(&vm.uuid) {
            return Err(ServiceError::conflict(format!(
                "Instance {} is busy with another operation; try again later",
                vm.uuid
            )));
        }
        let all = self.vm_snapshots_of(vm.id).await?;
        let max = self.setting_i64("vmsnapshot.max").max(1);
        if all.len() as i64 >= max {
            return Err(ServiceError::refused(format!(
                "Creating Instance Snapshot failed due to a Instance can just have : {max} Instance Snapshots. Please delete old ones"
            )));
        }
        if Self::busy_snapshot(&all) {
            return Err(ServiceError::refused(ACTIVE_TASKS));
        }
        let vols: Vec<Volume> = self.store.all(Query::new().eq(Col::Parent, vm.id)).await?;
        if let Some(v) = vols
            .iter()
            .find(|v| v.removed.is_none() && v.state != "Ready")
        {
            return Err(ServiceError::state(format!(
                "Creating instance snapshot failed due to volume {} being {}; an instance that never started has nothing to snapshot",
                v.uuid, v.state
            )));
        }
        let now_t = Utc::now();
        let mut name = internal_name(&vm.instance_name, now_t);
        // Two within one second: keep names unique per instance.
        let mut n = 1;
        while all.iter().any(|s| s.name == name) {
            n += 1;
            name = format!("{}_{n}", internal_name(&vm.instance_name, now_t));
        }
        // Display names may repeat, as in CloudStack; the internal name
        // tells snapshots apart.
        let display_name = req
            .display_name
            .clone()
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| name.clone());
        let snap = VmSnapshot {
            id: self.store.new_id::<VmSnapshot>().await?,
            uuid: new_uuid(),
            version: 0,
            name,
            display_name,
            description: req.description.clone().unwrap_or_default(),
            vm_id: vm.id,
            account_id: vm.account_id,
            domain_id: vm.domain_id,
            zone_id: vm.zone_id,
            memory: req.memory,
            quiesce: req.quiesce,
            state: ALLOCATED.into(),
            parent_id: all.iter().find(|s| s.current).map(|s| s.id),
            current: false,
            saved: None,
            created: now(),
            removed: None,
        };
        let new = NewJob {
            command: "createVMSnapshot",
            instance_type: Some("VMSnapshot"),
            instance_uuid: Some(&snap.uuid),
            work: Work::CreateVmSnapshot {
                snapshot_id: snap.id,
            },
        };
        let job = self.insert_with_job(caller, &snap, new).await?;
        Ok((job, snap))
    }

    async fn load_snapshot(&self, id: i64) -> SResult<VmSnapshot> {
        self.store
            .load(id)
            .await?
            .ok_or_else(|| ServiceError::internal("instance snapshot vanished"))
    }

    async fn set_snapshot_state(&self, id: i64, state: &str) -> SResult<VmSnapshot> {
        let mut s = self.load_snapshot(id).await?;
        s.state = state.into();
        let mut tx = Tx::new();
        tx.update(&mut s);
        self.store.commit(tx.ops).await?;
        Ok(s)
    }

    /// The command a host gets for a snapshot of `vm`.
    async fn snapshot_cmd(&self, vm: &Vm, s: &VmSnapshot) -> SResult<VmSnapshotCmd> {
        let vols: Vec<Volume> = self.store.all(Query::new().eq(Col::Parent, vm.id)).await?;
        let mut specs = Vec::new();
        for v in vols.iter().filter(|v| v.removed.is_none()) {
            specs.push(self.volume_spec(v).await?);
        }
        Ok(VmSnapshotCmd {
            instance: vm.instance_name.clone(),
            snapshot: s.name.clone(),
            memory: s.memory,
            quiesce: s.quiesce,
            volumes: specs,
            saved: s.saved.clone().unwrap_or_default(),
        })
    }

    /// The host that holds an instance's volumes now: where it runs, or
    /// where it last ran.
    fn snapshot_host(vm: &Vm) -> SResult<i64> {
        vm.host_id.or(vm.last_host_id).ok_or_else(|| {
            ServiceError::state(format!("Instance {} has never run on a host", vm.uuid))
        })
    }

    fn quiesce_error(e: AgentError) -> ServiceError {
        match e {
            AgentError::GuestAgent { reason, .. } => ServiceError::invalid(format!(
                "Invalid parameter quiescevm: the instance's guest agent does not answer ({reason}); install and start qemu-guest-agent in the guest, or take the snapshot without quiescevm"
            )),
            other => other.into(),
        }
    }

    pub(crate) async fn exec_create_vm_snapshot(&self, snapshot_id: i64) -> SResult<JobOutput> {
        let s = self.set_snapshot_state(snapshot_id, CREATING).await?;
        let vm = self.load_vm(s.vm_id).await?;
        let outcome = async {
            if s.memory && vm.state != VmState::Running {
                return Err(ServiceError::state(format!(
                    "Can not snapshot memory when the instance is not in Running state (instance {} is {})",
                    vm.uuid, vm.state
                )));
            }
            let host = Self::snapshot_host(&vm)?;
            let cmd = self.snapshot_cmd(&vm, &s).await?;
            let wait = std::time::Duration::from_secs(
                self.setting_i64("vmsnapshot.create.wait").max(1) as u64,
            );
            match tokio::time::timeout(wait, self.agents.create_vm_snapshot(host, &cmd)).await {
                Ok(r) => r.map_err(Self::quiesce_error),
                Err(_) => Err(ServiceError::unavailable(format!(
                    "The instance snapshot took longer than vmsnapshot.create.wait ({} s)",
                    wait.as_secs()
                ))),
            }
        }
        .await;
        match outcome {
            Ok(saved) => {
                let all = self.vm_snapshots_of(vm.id).await?;
                let mut tx = Tx::new();
                for mut o in all.into_iter().filter(|o| o.current && o.id != s.id) {
                    o.current = false;
                    tx.update(&mut o);
                }
                let mut s = self.load_snapshot(snapshot_id).await?;
                s.state = READY.into();
                s.current = true;
                s.saved = saved;
                tx.update(&mut s);
                self.snapshot_event(
                    &mut tx,
                    &vm,
                    &s,
                    "VMSNAPSHOT.CREATE",
                    "Created instance snapshot",
                );
                self.store.commit(tx.ops).await?;
                Ok(JobOutput::VmSnapshot { id: s.id })
            }
            Err(e) => {
                // Listed in Error (and counted) until deleted, as in
                // CloudStack; the host removed whatever part it had made.
                self.set_snapshot_state(snapshot_id, ERROR).await?;
                Err(ServiceError::refused(format!(
                    "Failed to create Instance Snapshot: [{}] due to: {}",
                    s.display_name,
                    e.text()
                )))
            }
        }
    }

    pub async fn revert_vm_snapshot(
        self: &Arc<Self>,
        caller: &Caller,
        s: &VmSnapshot,
    ) -> SResult<Job> {
        self.check_owned(caller, s).await?;
        let vm = self.load_vm(s.vm_id).await?;
        self.check_owned(caller, &vm).await?;
        if self.is_busy(&vm.uuid) || Self::busy_snapshot(&self.vm_snapshots_of(vm.id).await?) {
            return Err(ServiceError::refused(ACTIVE_TASKS));
        }
        if !matches!(vm.state, VmState::Running | VmState::Stopped) {
            return Err(ServiceError::state(
                "Instance Snapshot reverting failed because the Instance is not in Running or Stopped state.",
            ));
        }
        if vm.state == VmState::Running && !s.memory {
            return Err(ServiceError::state(
                "Reverting to the Instance Snapshot is not allowed for running Instances as this would result in an Instance state change. For running Instances only Snapshots with memory can be reverted. In order to revert to a Snapshot without memory you need to first stop the Instance.",
            ));
        }
        if vm.state == VmState::Stopped && s.memory {
            return Err(ServiceError::state(
                "Reverting to the Instance Snapshot is not allowed for stopped Instances when the Snapshot contains memory as this would result in an Instance state change. In order to revert to a Snapshot with memory you need to first start the Instance.",
            ));
        }
        if s.state != READY {
            return Err(ServiceError::state(
                "Instance Snapshot reverting failed because the Instance Snapshot is not in Created state.",
            ));
        }
        // A revert runs as a job on the instance (which it changes).
        let new = NewJob {
            command: "revertToVMSnapshot",
            instance_type: Some("VirtualMachine"),
            instance_uuid: Some(&vm.uuid),
            work: Work::RevertVmSnapshot { snapshot_id: s.id },
        };
        self.queue_snapshot_job(caller, s, REVERTING, new).await
    }

    /// Moves the snapshot to `state` and queues its job in one commit.
    async fn queue_snapshot_job(
        self: &Arc<Self>,
        caller: &Caller,
        s: &VmSnapshot,
        state: &str,
        new: NewJob<'_>,
    ) -> SResult<Job> {
        let mut s = s.clone();
        s.state = state.into();
        let job = self.new_job(caller, new);
        let mut tx = Tx::new();
        tx.update(&mut s);
        tx.insert(&job);
        self.store.commit(tx.ops).await?;
        self.spawn_job(job.uuid.clone());
        Ok(job)
    }

    pub(crate) async fn exec_revert_vm_snapshot(&self, snapshot_id: i64) -> SResult<JobOutput> {
        let s = self.load_snapshot(snapshot_id).await?;
        let outcome = self.revert_inner(&s).await;
        // Whatever happened, the snapshot itself is unchanged.
        let mut s = self.load_snapshot(snapshot_id).await?;
        let vm = self.load_vm(s.vm_id).await?;
        let mut tx = Tx::new();
        s.state = READY.into();
        if outcome.is_ok() {
            for mut o in self
                .vm_snapshots_of(vm.id)
                .await?
                .into_iter()
                .filter(|o| o.current && o.id != s.id)
            {
                o.current = false;
                tx.update(&mut o);
            }
            s.current = true;
            self.snapshot_event(
                &mut tx,
                &vm,
                &s,
                "VMSNAPSHOT.REVERTTO",
                "Reverted instance to snapshot",
            );
        }
        tx.update(&mut s);
        self.store.commit(tx.ops).await?;
        outcome?;
        Ok(JobOutput::Vm { id: vm.id })
    }

    async fn revert_inner(&self, s: &VmSnapshot) -> SResult<()> {
        let vm = self.load_vm(s.vm_id).await?;
        // The request was checked against the power state; it cannot have
        // changed since, the instance being busy with this job.
        let host = if s.memory {
            vm.host_id.ok_or_else(|| {
                ServiceError::state(format!("Instance {} is not running", vm.uuid))
            })?
        } else {
            Self::snapshot_host(&vm)?
        };
        let cmd = self.snapshot_cmd(&vm, s).await?;
        self.agents
            .revert_vm_snapshot(host, &cmd)
            .await
            .map_err(|e| {
                ServiceError::refused(format!(
                    "Unable to revert VM {} to snapshot {}: {e}",
                    vm.instance_name, s.name
                ))
            })
    }

    pub async fn delete_vm_snapshot(
        self: &Arc<Self>,
        caller: &Caller,
        s: &VmSnapshot,
    ) -> SResult<Job> {
        self.check_owned(caller, s).await?;
        let vm = self.load_vm(s.vm_id).await?;
        if !matches!(s.state.as_str(), READY | ERROR) {
            return Err(ServiceError::state(format!(
                "Can't delete the Instance Snapshot {} due to it is not in Created or Error, or Expunging State",
                s.uuid
            )));
        }
        if self.is_busy(&vm.uuid) || Self::busy_snapshot(&self.vm_snapshots_of(vm.id).await?) {
            return Err(ServiceError::refused(ACTIVE_TASKS));
        }
        let new = NewJob {
            command: "deleteVMSnapshot",
            instance_type: Some("VMSnapshot"),
            instance_uuid: Some(&s.uuid),
            work: Work::DeleteVmSnapshot { snapshot_id: s.id },
        };
        self.queue_snapshot_job(caller, s, EXPUNGING, new).await
    }

    pub(crate) async fn exec_delete_vm_snapshot(&self, snapshot_id: i64) -> SResult<JobOutput> {
        let s = self.load_snapshot(snapshot_id).await?;
        let vm = self.load_vm(s.vm_id).await?;
        let removed = async {
            let host = Self::snapshot_host(&vm)?;
            let cmd = self.snapshot_cmd(&vm, &s).await?;
            self.agents.delete_vm_snapshot(host, &cmd).await?;
            Ok::<_, ServiceError>(())
        }
        .await;
        if let Err(e) = removed {
            self.set_snapshot_state(snapshot_id, ERROR).await?;
            return Err(ServiceError::refused(format!(
                "Failed to delete Instance Snapshot: {}",
                e.text()
            )));
        }
        let all = self.vm_snapshots_of(vm.id).await?;
        let mut tx = Tx::new();
        for mut c in reparent_after_delete(&all, &s) {
            tx.update(&mut c);
        }
        Self::remove_snapshot(&mut tx, &s);
        self.snapshot_event(
            &mut tx,
            &vm,
            &s,
            "VMSNAPSHOT.DELETE",
            "Deleted instance snapshot",
        );
        self.store.commit(tx.ops).await?;
        Ok(JobOutput::Success)
    }

    /// Removes every snapshot of an instance being destroyed (CloudStack
    /// does so at destroy, not at expunge): from its volumes where its host
    /// answers (a failure there is logged; the volumes go at expunge
    /// anyway) and from the records.
    pub(crate) async fn destroy_vm_snapshots(&self, vm: &Vm) -> SResult<()> {
        let all = self.vm_snapshots_of(vm.id).await?;
        if all.is_empty() {
            return Ok(());
        }
        let host = vm.host_id.or(vm.last_host_id);
        let mut tx = Tx::new();
        for s in &all {
            if let Some(h) = host {
                let cmd = self.snapshot_cmd(vm, s).await?;
                if let Err(e) = self.agents.delete_vm_snapshot(h, &cmd).await {
                    tracing::warn!(snapshot = %s.uuid, error = %e, "removing a snapshot of a destroyed instance from its volumes");
                }
            }
            Self::remove_snapshot(&mut tx, s);
            self.snapshot_event_raw(
                &mut tx,
                vm,
                s,
                "VMSNAPSHOT.DELETE",
                "Deleted instance snapshot with its instance",
            );
        }
        self.store.commit(tx.ops).await?;
        Ok(())
    }

    /// Discards the snapshots with memory after an offering change: the
    /// saved state was of the old shape. Disk-only snapshots stay.
    pub(crate) async fn discard_memory_snapshots(&self, vm: &Vm) -> SResult<()> {
        let memory: Vec<i64> = self
            .vm_snapshots_of(vm.id)
            .await?
            .iter()
            .filter(|s| s.memory)
            .map(|s| s.id)
            .collect();
        let host = vm.host_id.or(vm.last_host_id);
        for id in memory {
            // Fresh each time: removing one re-parents the others.
            let s = &self.load_snapshot(id).await?;
            if let Some(h) = host {
                let cmd = self.snapshot_cmd(vm, s).await?;
                if let Err(e) = self.agents.delete_vm_snapshot(h, &cmd).await {
                    tracing::warn!(snapshot = %s.uuid, error = %e, "removing a discarded snapshot from the volumes");
                }
            }
            let all = self.vm_snapshots_of(vm.id).await?;
            let mut tx = Tx::new();
            for mut c in reparent_after_delete(&all, s) {
                tx.update(&mut c);
            }
            Self::remove_snapshot(&mut tx, s);
            self.snapshot_event_raw(
                &mut tx,
                vm,
                s,
                "VMSNAPSHOT.DELETE",
                "Discarded instance snapshot with memory after a service offering change",
            );
            self.store.commit(tx.ops).await?;
        }
        Ok(())
    }

    fn snapshot_event(&self, tx: &mut Tx, vm: &Vm, s: &VmSnapshot, kind: &str, what: &str) {
        self.snapshot_event_raw(tx, vm, s, kind, what)
    }

    fn snapshot_event_raw(&self, tx: &mut Tx, vm: &Vm, s: &VmSnapshot, kind: &str, what: &str) {
        tx.insert(&Event {
            id: 0,
            uuid: new_uuid(),
            version: 0,
            event_type: kind.into(),
            level: "INFO".into(),
            description: format!(
                "{what} {} ({}). Instance Id: {}",
                s.display_name, s.uuid, vm.uuid
            ),
            state: "Completed".into(),
            account_id: vm.account_id,
            domain_id: vm.domain_id,
            user_id: vm.user_id,
            resource_uuid: Some(s.uuid.clone()),
            resource_type: Some("VMSnapshot".into()),
            resource_name: Some(s.display_name.clone()),
            created: now(),
        });
    }

    pub async fn list_vm_snapshots(
        &self,
        caller: &Caller,
        scope: &scope::ListScope,
        f: &VmSnapshotFilter,
    ) -> SResult<(Vec<VmSnapshot>, u64)> {
        let mut q = Query::new();
        q.conds = self.scope(caller, scope).await?;
        // Deleted ones keep their ids but are not listed.
        q = q.and(Cond::NotNull(Col::Ukey));
        if let Some(id) = &f.id {
            // A known id outside the caller's view lists nothing; only an
            // id that never existed is an error.
            let s: VmSnapshot = self.by_uuid("vmsnapshotid", id).await?;
            q = q.eq(Col::Id, s.id);
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
        if let Some(n) = &f.name {
            q = q.and(Cond::EqNoCase(Col::Name, n.clone()));
        }
        if let Some(st) = &f.state {
            q = q.and(Cond::EqNoCase(Col::State, st.clone()));
        }
        if let Some(k) = &f.keyword {
            q = q.and(Cond::Contains(vec![Col::Name, Col::Keyword], k.clone()));
        }
        q.page = f.page;
        // Newest first, as CloudStack lists them.
        q.descending = true;
        Ok(self.store.list::<VmSnapshot>(&q).await?)
    }

    /// A snapshot the caller may act on, by uuid.
    pub async fn vm_snapshot(
        &self,
        caller: &Caller,
        param: &str,
        uuid: &str,
    ) -> SResult<VmSnapshot> {
        self.owned(caller, param, uuid).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn snap(id: i64, parent: Option<i64>, current: bool) -> VmSnapshot {
        VmSnapshot {
            id,
            parent_id: parent,
            current,
            ..Default::default()
        }
    }

    #[test]
    fn internal_names_follow_cloudstack() {
        let t = Utc.with_ymd_and_hms(2026, 12, 7, 8, 30, 5).unwrap();
        assert_eq!(internal_name("i-2-10-VM", t), "i-2-10-VM_VS_20261207083005");
    }

    #[test]
    fn deleting_a_middle_snapshot_hands_its_children_to_its_parent() {
        // 1 <- 2 <- 3 (current), 2 <- 4
        let all = vec![
            snap(1, None, false),
            snap(2, Some(1), false),
            snap(3, Some(2), true),
            snap(4, Some(2), false),
        ];
        let changed = reparent_after_delete(&all, &all[1]);
        let ids: Vec<(i64, Option<i64>, bool)> = changed
            .iter()
            .map(|s| (s.id, s.parent_id, s.current))
            .collect();
        assert_eq!(ids, vec![(3, Some(1), true), (4, Some(1), false)]);
    }

    #[test]
    fn deleting_the_current_snapshot_makes_its_parent_current() {
        let all = vec![snap(1, None, false), snap(2, Some(1), true)];
        let changed = reparent_after_delete(&all, &all[1]);
        assert_eq!(changed.len(), 1);
        assert!(changed[0].current && changed[0].id == 1);
        // The root going: its child becomes a root.
        let all = vec![snap(1, None, true), snap(2, Some(1), false)];
        let changed = reparent_after_delete(&all, &all[0]);
        assert_eq!(changed.len(), 1);
        assert_eq!((changed[0].id, changed[0].parent_id), (2, None));
    }

    #[test]
    fn names_and_descriptions_are_bounded() {
        assert!(check_text("name", "ok name").is_ok());
        assert!(check_text("name", &"x".repeat(256)).is_err());
        assert!(check_text("description", "a\u{1}b").is_err());
    }
}
