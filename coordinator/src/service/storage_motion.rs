//! Live migration with storage: `migrateVirtualMachineWithVolume` moves a
//! running instance to a host together with the files of its volumes, each to
//! a pool that host can reach (its own local pool, or its cluster's shared
//! one), with copy-storage-all semantics; and `findStoragePoolsForMigration`.
//!
//! Pools are reachable from a host when they are its own (scope HOST) or its
//! cluster's (scope CLUSTER). A volume the request does not name stays where
//! it is when the destination reaches its pool, and otherwise goes to the
//! destination's own pool.

use super::jobs::Work;
use super::vm::Pin;
use super::*;
use crate::placement as pl;
use orrery_model::{Transition, VmState};

/// What migrateVirtualMachineWithVolume asks for.
#[derive(Debug, Clone, Default)]
pub struct MigrateWithVolumes {
    pub vm_uuid: String,
    pub host_uuid: String,
    /// `migrateto[i].volume` -> `migrateto[i].pool`, by uuid.
    pub mapping: Vec<(String, String)>,
}

/// A pool as a destination for a volume.
#[derive(Debug, Clone)]
pub struct PoolCandidate {
    pub pool: StoragePool,
    pub suitable: bool,
    pub reason: Option<String>,
}

/// Whether a host can use a pool's files.
pub fn reachable(pool: &StoragePool, host: &Host) -> bool {
    match pool.scope.as_str() {
        "HOST" => pool.host_id == Some(host.id),
        "ZONE" => pool.zone_id == host.zone_id,
        _ => pool.cluster_id == Some(host.cluster_id),
    }
}

const WITH_SNAPSHOTS: &str =
    "Instance with Instance Snapshots cannot be migrated with storage, please remove all Instance Snapshots";

impl Service {
    /// The pool a volume's files are in: its own, or (none recorded) its
    /// instance's cluster's shared pool.
    async fn pool_of(&self, v: &Volume, cluster_id: Option<i64>) -> SResult<Option<StoragePool>> {
        if let Some(id) = v.pool_id {
            return self.load_cached(id).await;
        }
        let Some(c) = cluster_id else { return Ok(None) };
        Ok(self
            .store
            .all::<StoragePool>(Query::new().eq(Col::Parent, c))
            .await?
            .into_iter()
            .find(|p| p.scope == "CLUSTER"))
    }

    async fn pool_free(&self, p: &StoragePool) -> SResult<i64> {
        Ok(p.capacity_bytes - self.infrastructure.pool_allocated(p).await?)
    }

    /// Checks the request and queues the job; returns the job uuid.
    pub async fn migrate_vm_with_volumes(
        self: &Arc<Self>,
        caller: &Caller,
        req: MigrateWithVolumes,
    ) -> SResult<String> {
        let (vm, dest, moves) = self.plan_moves(caller, &req).await?;
        self.refuse_gpu_live_migration(&vm).await?;
        if !moves.is_empty() {
            // Copied volumes would arrive without their internal snapshots.
            self.refuse_with_vm_snapshots(vm.id, WITH_SNAPSHOTS).await?;
        }
        let work = if moves.is_empty() {
            Work::Migrate {
                vm_id: vm.id,
                host_id: Some(dest.id),
            }
        } else {
            Work::MigrateWithVolumes {
                vm_id: vm.id,
                host_id: dest.id,
                moves,
            }
        };
        Ok(self
            .queue_vm_job(caller, &vm, "migrateVirtualMachineWithVolume", work)
            .await?
            .uuid)
    }

    /// migrateVolume with `livemigrate`: a running instance's volume moves to
    /// a pool of another host, the instance going along to that host (a
    /// pool of its own host would need a copy within one host, which is not
    /// offered). The volumes of stopped instances are not moved between
    /// pools.
    pub async fn migrate_volume(
        self: &Arc<Self>,
        caller: &Caller,
        volume_uuid: &str,
        pool_uuid: &str,
        live: bool,
    ) -> SResult<String> {
        if !caller.is_root_admin() {
            return Err(ServiceError::denied(
                "Only the root admin can migrate volumes",
            ));
        }
        let v: Volume = self.owned(caller, "volumeid", volume_uuid).await?;
        let pool: StoragePool = self.by_uuid("storageid", pool_uuid).await?;
        if v.pool_id == Some(pool.id) {
            return Err(ServiceError::invalid(format!(
                "Invalid parameter storageid: volume {} is already on storage pool {}",
                v.uuid, pool.name
            )));
        }
        let vm: Option<Vm> = match v.vm_id {
            Some(id) => self.store.load(id).await?,
            None => None,
        };
        if let Some(vm) = &vm {
            self.refuse_with_vm_snapshots(vm.id, WITH_SNAPSHOTS).await?;
        }
        let vm = match vm {
            Some(vm) if vm.state == VmState::Running => vm,
            other => {
                let output = Some(v.id);
                return self
                    .move_volumes_offline(caller, other, vec![v], pool, "migrateVolume", output)
                    .await;
            }
        };
        if !live {
            return Err(ServiceError::invalid(format!(
                "Invalid parameter livemigrate: volume {} belongs to running instance {}; pass livemigrate=true to move it while the instance runs",
                v.uuid, vm.uuid
            )));
        }
        let current: Option<Host> = match vm.host_id {
            Some(h) => self.load_cached(h).await?,
            None => None,
        };
        if current.as_ref().is_some_and(|h| reachable(&pool, h)) {
            return Err(ServiceError::invalid(format!(
                "Invalid parameter storageid: storage pool {} is used by the instance's own host; moving a running instance's volume within one host is not supported, choose a pool of another host",
                pool.name
            )));
        }
        let dest = match pool.host_id {
            Some(h) => self.load_cached::<Host>(h).await?,
            None => {
                let hosts: Vec<Host> = self.zone_records(vm.zone_id).await?;
                hosts.into_iter().find(|h| {
                    h.removed.is_none()
                        && h.state == "Up"
                        && h.resource_state == "Enabled"
                        && reachable(&pool, h)
                })
            }
        }
        .ok_or_else(|| {
            ServiceError::invalid(format!(
                "Invalid parameter storageid: no host in service can use storage pool {}",
                pool.name
            ))
        })?;
        let req = MigrateWithVolumes {
            vm_uuid: vm.uuid.clone(),
            host_uuid: dest.uuid.clone(),
            mapping: vec![(v.uuid.clone(), pool.uuid.clone())],
        };
        let (vm, dest, moves) = self.plan_moves(caller, &req).await?;
        self.refuse_gpu_live_migration(&vm).await?;
        let work = Work::MigrateVolume {
            vm_id: vm.id,
            host_id: dest.id,
            volume_id: v.id,
            moves,
        };
        let job = self.new_job(
            caller,
            super::jobs::NewJob {
                command: "migrateVolume",
                instance_type: Some("VirtualMachine"),
                instance_uuid: Some(&vm.uuid),
                work,
            },
        );
        let mut tx = Tx::new();
        tx.insert(&job);
        self.store.commit(tx.ops).await?;
        self.spawn_job(job.uuid.clone());
        Ok(job.uuid)
    }

    /// migrateVirtualMachine with `storageid`: every volume of a stopped
    /// instance moves to that pool.
    pub async fn migrate_stopped_vm_storage(
        self: &Arc<Self>,
        caller: &Caller,
        vm_uuid: &str,
        pool_uuid: &str,
    ) -> SResult<String> {
        if !caller.is_root_admin() {
            return Err(ServiceError::denied(
                "Only the root admin can migrate instances",
            ));
        }
        let vm: Vm = self.owned(caller, "virtualmachineid", vm_uuid).await?;
        let pool: StoragePool = self.by_uuid("storageid", pool_uuid).await?;
        if vm.state != VmState::Stopped {
            return Err(ServiceError::state(format!(
                "Instance {} is {}; storageid moves a stopped instance's volumes (a running one moves with migrateVirtualMachineWithVolume)",
                vm.uuid, vm.state
            )));
        }
        self.refuse_with_vm_snapshots(
            vm.id,
            "Instance's disk cannot be migrated, please remove all the Instance Snapshots for this Instance",
        )
        .await?;
        let vols: Vec<Volume> = self.store.all(Query::new().eq(Col::Parent, vm.id)).await?;
        self.move_volumes_offline(caller, Some(vm), vols, pool, "migrateVirtualMachine", None)
            .await
    }

    /// Moves volumes of a stopped instance, or a volume of none, to `target`
    /// through a host in service that can use both their pools and the
    /// target (the instance's last host first); returns the job uuid.
    pub async fn move_volumes_offline(
        self: &Arc<Self>,
        caller: &Caller,
        vm: Option<Vm>,
        vols: Vec<Volume>,
        target: StoragePool,
        command: &str,
        output_volume: Option<i64>,
    ) -> SResult<String> {
        if let Some(vm) = &vm {
            if vm.state != VmState::Stopped {
                return Err(ServiceError::state(format!(
                    "Instance {} is {}; its volumes move while it is Stopped (or with it, live, when it runs)",
                    vm.uuid, vm.state
                )));
            }
        }
        let cluster = vm.as_ref().and_then(|vm| vm.cluster_id);
        let mut moving = Vec::new();
        let mut from = Vec::new();
        for v in vols {
            if v.pool_id == Some(target.id) {
                continue;
            }
            let Some(p) = self.pool_of(&v, cluster).await? else {
                return Err(ServiceError::invalid(format!(
                    "Volume {} has no storage yet; it is placed when its instance first starts",
                    v.uuid
                )));
            };
            if p.id == target.id {
                continue;
            }
            from.push(p);
            moving.push(v);
        }
        if moving.is_empty() {
            return Err(ServiceError::invalid(format!(
                "Invalid parameter storageid: everything is already on storage pool {}",
                target.name
            )));
        }
        let free = self.pool_free(&target).await?;
        let need: i64 = moving.iter().map(|v| v.size).sum();
        if need > free {
            return Err(ServiceError::capacity(format!(
                "Storage pool {} has {free} bytes free; the volumes moving there need {need}",
                target.name
            )));
        }
        let zone = vm.as_ref().map(|vm| vm.zone_id).unwrap_or(target.zone_id);
        let mut hosts: Vec<Host> = self.zone_records(zone).await?;
        let last = vm.as_ref().and_then(|vm| vm.last_host_id);
        hosts.sort_by_key(|h| (Some(h.id) != last, h.id));
        let host = hosts
            .into_iter()
            .find(|h| {
                h.removed.is_none()
                    && h.state == "Up"
                    && h.resource_state == "Enabled"
                    && reachable(&target, h)
                    && from.iter().all(|p| reachable(p, h))
            })
            .ok_or_else(|| {
                ServiceError::invalid(format!(
                    "Invalid parameter storageid: no host in service can use both storage pool {} and {}",
                    from.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", "),
                    target.name
                ))
            })?;
        if let Some(vm) = &vm {
            Self::check_transition(vm, Transition::BeginStorageMove)?;
        }
        let work = Work::MoveVolumes {
            vm_id: vm.as_ref().map(|vm| vm.id),
            host_id: host.id,
            volume_ids: moving.iter().map(|v| v.id).collect(),
            pool_id: target.id,
            output_volume,
        };
        let (kind, uuid) = match &vm {
            Some(vm) => ("VirtualMachine", vm.uuid.clone()),
            None => ("Volume", moving[0].uuid.clone()),
        };
        let job = self.new_job(
            caller,
            super::jobs::NewJob {
                command,
                instance_type: Some(kind),
                instance_uuid: Some(&uuid),
                work,
            },
        );
        let mut tx = Tx::new();
        tx.insert(&job);
        self.store.commit(tx.ops).await?;
        self.spawn_job(job.uuid.clone());
        Ok(job.uuid)
    }

    pub(crate) async fn exec_move_volumes(
        &self,
        vm_id: Option<i64>,
        host_id: i64,
        volume_ids: Vec<i64>,
        pool_id: i64,
        output_volume: Option<i64>,
    ) -> SResult<super::jobs::JobOutput> {
        let target: StoragePool = self
            .load_cached(pool_id)
            .await?
            .ok_or_else(|| ServiceError::internal("storage pool vanished"))?;
        let to = if target.scope == "HOST" { "local" } else { "" };
        let vm = match vm_id {
            Some(id) => Some(
                self.transition(id, Transition::BeginStorageMove, |_| {}, |_, _| {})
                    .await?,
            ),
            None => None,
        };
        let instance = vm
            .as_ref()
            .map(|v| v.instance_name.clone())
            .unwrap_or_default();
        let mut outcome = Ok(());
        for id in volume_ids {
            let Some(mut v) = self.store.load::<Volume>(id).await? else {
                continue;
            };
            let spec = self.volume_spec(&v).await?;
            if let Err(e) = self.agents.move_volume(host_id, &instance, &spec, to).await {
                outcome = Err(ServiceError::from(e));
                break;
            }
            v.pool_id = Some(target.id);
            let mut tx = Tx::new();
            tx.update(&mut v);
            self.store.commit(tx.ops).await?;
        }
        if let Some(vm) = &vm {
            let pinned = target.host_id;
            self.transition(
                vm.id,
                Transition::StorageMoveDone,
                move |v| {
                    // It starts where its disks now are.
                    if pinned.is_some() {
                        v.last_host_id = pinned;
                    }
                },
                |_, _| {},
            )
            .await?;
        }
        outcome?;
        Ok(match (output_volume, vm) {
            (Some(id), _) => super::jobs::JobOutput::Volume { id },
            (None, Some(vm)) => super::jobs::JobOutput::Vm { id: vm.id },
            (None, None) => super::jobs::JobOutput::Success,
        })
    }

    /// Where everything goes: the instance, its destination, and each
    /// volume that moves with the pool it goes to.
    async fn plan_moves(
        &self,
        caller: &Caller,
        req: &MigrateWithVolumes,
    ) -> SResult<(Vm, Host, Vec<(i64, i64)>)> {
        if !caller.is_root_admin() {
            return Err(ServiceError::denied(
                "Only the root admin can migrate instances",
            ));
        }
        let vm: Vm = self.owned(caller, "virtualmachineid", &req.vm_uuid).await?;
        if vm.state != VmState::Running {
            return Err(ServiceError::state(format!(
                "Instance {} is {}; only a running instance migrates with its volumes",
                vm.uuid, vm.state
            )));
        }
        let dest: Host = self.by_uuid("hostid", &req.host_uuid).await?;
        if dest.removed.is_some() || dest.zone_id != vm.zone_id {
            return Err(ServiceError::not_found("hostid", &req.host_uuid));
        }
        if Some(dest.id) == vm.host_id {
            return Err(ServiceError::invalid(format!(
                "Instance {} already runs on host {}",
                vm.uuid, dest.name
            )));
        }
        let vols: Vec<Volume> = self.store.all(Query::new().eq(Col::Parent, vm.id)).await?;
        let mut moves: Vec<(i64, i64)> = Vec::new();
        for (vu, pu) in &req.mapping {
            let Some(v) = vols.iter().find(|v| &v.uuid == vu) else {
                return Err(ServiceError::invalid(format!(
                    "Invalid parameter migrateto: volume {vu} is not a volume of instance {}",
                    vm.uuid
                )));
            };
            let p: StoragePool = self.by_uuid("migrateto", pu).await?;
            if !reachable(&p, &dest) {
                return Err(ServiceError::invalid(format!(
                    "Invalid parameter migrateto: storage pool {} cannot be used by host {}",
                    p.name, dest.name
                )));
            }
            if v.pool_id == Some(p.id) {
                continue;
            }
            moves.push((v.id, p.id));
        }
        let own_pool: Option<StoragePool> = self
            .store
            .all::<StoragePool>(Query::new().eq(Col::Host, dest.id))
            .await?
            .into_iter()
            .find(|p| p.scope == "HOST");
        for v in &vols {
            if moves.iter().any(|(id, _)| *id == v.id)
                || req.mapping.iter().any(|(u, _)| *u == v.uuid)
            {
                continue;
            }
            let current = self.pool_of(v, vm.cluster_id).await?;
            if current.as_ref().is_some_and(|p| reachable(p, &dest)) {
                continue;
            }
            let Some(own) = &own_pool else {
                return Err(ServiceError::invalid(format!(
                    "Invalid parameter migrateto: volume {} must be given a pool that host {} can use",
                    v.uuid, dest.name
                )));
            };
            moves.push((v.id, own.id));
        }
        // Room in each target pool for what moves there.
        let mut need: std::collections::BTreeMap<i64, i64> = Default::default();
        for (vid, pid) in &moves {
            let size = vols
                .iter()
                .find(|v| v.id == *vid)
                .map(|v| v.size)
                .unwrap_or(0);
            *need.entry(*pid).or_default() += size;
        }
        for (pid, bytes) in need {
            if let Some(p) = self.load_cached::<StoragePool>(pid).await? {
                let free = self.pool_free(&p).await?;
                if bytes > free {
                    return Err(ServiceError::capacity(format!(
                        "Storage pool {} has {free} bytes free; the volumes moving there need {bytes}",
                        p.name
                    )));
                }
            }
        }
        Self::check_transition(&vm, Transition::BeginMigrate)?;
        Ok((vm, dest, moves))
    }

    pub(crate) async fn exec_migrate_with_volumes(
        &self,
        vm_id: i64,
        host_id: i64,
        moves: Vec<(i64, i64)>,
    ) -> SResult<super::jobs::JobOutput> {
        let vm: Vm = self
            .store
            .load(vm_id)
            .await?
            .ok_or_else(|| ServiceError::internal("instance vanished"))?;
        let source: Host = match vm.host_id {
            Some(h) => self.load_cached(h).await?,
            None => None,
        }
        .ok_or_else(|| ServiceError::internal("running instance without host"))?;
        let mut pairs = Vec::new();
        for (vid, pid) in moves {
            let v: Volume = self
                .store
                .load(vid)
                .await?
                .ok_or_else(|| ServiceError::internal("volume vanished"))?;
            let p: StoragePool = self
                .load_cached(pid)
                .await?
                .ok_or_else(|| ServiceError::internal("storage pool vanished"))?;
            pairs.push((v, p));
        }
        let (dest, held) = {
            let g = self.placement_guard().await?;
            let snap = self.placement_snapshot(vm.zone_id).await?;
            let pin = Pin {
                host_id: Some(host_id),
                ..Pin::default()
            };
            let mut req = self.placement_request(&vm, &pin, true).await?;
            req.last_host_id = None;
            req.avoid_hosts = vm.host_id.into_iter().collect();
            let allocator = pl::allocator_for("firstfit").expect("the firstfit allocator exists");
            let verdicts = pl::dry_run(&snap, &req, allocator);
            match verdicts.iter().find(|v| v.host_id == host_id) {
                Some(v) if v.is_eligible() => {}
                Some(pl::HostVerdict {
                    outcome: pl::Outcome::Rejected(r),
                    ..
                }) => {
                    return Err(ServiceError::capacity(format!(
                        "Unable to migrate instance {}: the host does not fit ({})",
                        vm.uuid,
                        r.iter()
                            .map(|r| r.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )))
                }
                _ => {
                    return Err(ServiceError::capacity(format!(
                        "Unable to migrate instance {}: the host cannot take it",
                        vm.uuid
                    )))
                }
            }
            let h: Host = self
                .load_cached(host_id)
                .await?
                .ok_or_else(|| ServiceError::internal("host vanished"))?;
            self.capacity.reserve_move(&vm, h.id);
            (h, g.until_committed())
        };
        let r = self.migrate_to(&vm, &source, &dest, &pairs, held).await;
        self.capacity.release_move(vm.id);
        r
    }

    /// Pools a volume could move to, each with whether it fits
    /// (findStoragePoolsForMigration): the zone's pools other than its own.
    pub async fn storage_pools_for_migration(
        &self,
        caller: &Caller,
        volume_uuid: &str,
    ) -> SResult<Vec<PoolCandidate>> {
        if !caller.is_root_admin() {
            return Err(ServiceError::denied(
                "Only the root admin can migrate volumes",
            ));
        }
        let v: Volume = self.owned(caller, "id", volume_uuid).await?;
        let vm: Option<Vm> = match v.vm_id {
            Some(id) => self.store.load(id).await?,
            None => None,
        };
        let current = self
            .pool_of(&v, vm.as_ref().and_then(|vm| vm.cluster_id))
            .await?;
        let pools: Vec<StoragePool> = self
            .store
            .all(Query::new().eq(Col::Zone, v.zone_id))
            .await?;
        let mut out = Vec::new();
        for p in pools {
            if current.as_ref().is_some_and(|c| c.id == p.id) || p.state != "Up" {
                continue;
            }
            let free = self.pool_free(&p).await?;
            let reason =
                (free < v.size).then(|| format!("{free} bytes free, the volume needs {}", v.size));
            out.push(PoolCandidate {
                suitable: reason.is_none(),
                reason,
                pool: p,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_reach_their_host_cluster_or_zone() {
        let host = Host {
            id: 7,
            cluster_id: 3,
            zone_id: 1,
            ..Default::default()
        };
        let local = |h| StoragePool {
            scope: "HOST".into(),
            host_id: Some(h),
            cluster_id: Some(3),
            zone_id: 1,
            ..Default::default()
        };
        assert!(reachable(&local(7), &host));
        assert!(!reachable(&local(8), &host));
        let cluster = |c| StoragePool {
            scope: "CLUSTER".into(),
            cluster_id: Some(c),
            zone_id: 1,
            ..Default::default()
        };
        assert!(reachable(&cluster(3), &host));
        assert!(!reachable(&cluster(4), &host));
        let zone = StoragePool {
            scope: "ZONE".into(),
            zone_id: 1,
            ..Default::default()
        };
        assert!(reachable(&zone, &host));
    }
}
