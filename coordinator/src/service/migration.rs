//! Live migration of running instances between hosts (root admin only, as
//! in CloudStack).
//!
//! The destination is chosen by placement (honouring strict host tags,
//! affinity groups and capacity), within the source's cluster because the
//! volumes stay on the cluster's shared pool; an admin may name it, and it
//! is still checked. While the instance moves, the destination's capacity
//! is held in the capacity view as well as the source's. The destination
//! is prepared first (networks, DHCP), then the source's agent migrates
//! peer to peer over TLS with the certificates the coordinator issued
//! (plain TCP only when `vm.migrate.tls` is false). Whatever fails, the
//! instance ends up recorded where it really runs: both hosts are asked,
//! the destination is cleaned when it does not run there.

use super::agent::{AgentError, MigrateCmd, PowerState};
use super::jobs::{JobOutput, Work};
use super::placing::PlaceGuard;
use super::vm::Pin;
use super::*;
use crate::placement as pl;
use orrery_model::{Transition, VmState};
use std::time::Duration;

/// What migrateVirtualMachine asks for.
#[derive(Debug, Clone, Default)]
pub struct MigrateRequest {
    pub vm_uuid: String,
    /// `hostid`: the destination; None lets placement choose.
    pub host_uuid: Option<String>,
}

/// A host as a migration destination: whether it fits and what would move.
#[derive(Debug, Clone)]
pub struct MigrationCandidate {
    pub host: Host,
    pub suitable: bool,
    /// The volumes would have to move too (another cluster's storage).
    pub requires_storage_motion: bool,
    /// Why it does not fit, when it does not.
    pub reasons: Vec<String>,
}

/// The libvirt URIs and transport for a move to `dest`.
pub fn transport(dest: &Host, tls: bool) -> (String, String) {
    let scheme = if tls { "qemu+tls" } else { "qemu+tcp" };
    let addr = match dest.ip_address.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(a)) => format!("[{a}]"),
        _ => dest.ip_address.clone(),
    };
    (format!("{scheme}://{addr}/system"), format!("tcp://{addr}"))
}

impl Service {
    /// The specification: live migration of GPU/vGPU enabled instances is
    /// not supported (a stopped one starts wherever placement finds a GPU).
    pub(crate) async fn refuse_gpu_live_migration(&self, vm: &Vm) -> SResult<()> {
        if self.has_gpu(vm).await? {
            return Err(ServiceError::invalid(format!(
                "Live migration of GPU/vGPU enabled Instance is not supported (instance {})",
                vm.uuid
            )));
        }
        Ok(())
    }

    /// Hosts of the instance's zone other than its own, each with whether
    /// it would take the instance now (findHostsForMigration).
    pub async fn migration_candidates(
        &self,
        caller: &Caller,
        vm_uuid: &str,
    ) -> SResult<(Vm, Vec<MigrationCandidate>)> {
        let vm: Vm = self.owned(caller, "id", vm_uuid).await?;
        if vm.state != VmState::Running {
            return Err(ServiceError::state(format!(
                "Instance {} is {}; only a running instance can migrate",
                vm.uuid, vm.state
            )));
        }
        let verdicts = self.migration_verdicts(&vm, None).await?;
        let local = self.has_local_volumes(&vm).await?;
        let mut out = Vec::new();
        for v in verdicts {
            if Some(v.host_id) == vm.host_id {
                continue;
            }
            let Some(host) = self.load_cached::<Host>(v.host_id).await? else {
                continue;
            };
            let (suitable, reasons) = match &v.outcome {
                pl::Outcome::Eligible { .. } => (true, Vec::new()),
                pl::Outcome::Rejected(r) => (false, r.iter().map(|r| r.to_string()).collect()),
            };
            out.push(MigrationCandidate {
                requires_storage_motion: local || Some(host.cluster_id) != vm.cluster_id,
                host,
                suitable,
                reasons,
            });
        }
        Ok((vm, out))
    }

    /// Placement's verdict on every host of the zone for moving `vm`, the
    /// instance's own usage left out; only hosts of its cluster can share
    /// its storage.
    pub(super) async fn migration_verdicts(
        &self,
        vm: &Vm,
        host_id: Option<i64>,
    ) -> SResult<Vec<pl::HostVerdict>> {
        let snap = self.placement_snapshot(vm.zone_id).await?;
        let pin = Pin {
            host_id,
            cluster_id: vm.cluster_id,
            pod_id: None,
        };
        let mut req = self.placement_request(vm, &pin, true).await?;
        req.last_host_id = None;
        req.avoid_hosts = vm.host_id.into_iter().collect();
        Ok(pl::dry_run(&snap, &req, self.allocator_for_moves()))
    }

    fn allocator_for_moves(&self) -> &'static dyn pl::Allocator {
        pl::allocator_for(&self.setting("vm.allocation.algorithm", &[]))
            .or_else(|| pl::allocator_for("random"))
            .expect("the random allocator exists")
    }

    /// Whether any of the instance's volumes lives on a host's own pool
    /// (only that host reaches it, so a plain live migration cannot move it).
    pub(crate) async fn has_local_volumes(&self, vm: &Vm) -> SResult<bool> {
        let vols: Vec<Volume> = self.store.all(Query::new().eq(Col::Parent, vm.id)).await?;
        for v in &vols {
            if self.pool_kind(v.pool_id).await? == "local" {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Checks a migration request and queues its job; returns the job uuid.
    pub async fn migrate_vm(
        self: &Arc<Self>,
        caller: &Caller,
        req: MigrateRequest,
    ) -> SResult<String> {
        if !caller.is_root_admin() {
            return Err(ServiceError::denied(
                "Only the root admin can migrate instances",
            ));
        }
        let vm: Vm = self.owned(caller, "virtualmachineid", &req.vm_uuid).await?;
        if vm.state != VmState::Running {
            return Err(ServiceError::state(format!(
                "Instance {} is {}; migrateVirtualMachine moves a running instance (a stopped one is started where placement decides)",
                vm.uuid, vm.state
            )));
        }
        self.refuse_gpu_live_migration(&vm).await?;
        let dest = match &req.host_uuid {
            Some(u) => {
                let h: Host = self.by_uuid("hostid", u).await?;
                if h.removed.is_some() {
                    return Err(ServiceError::not_found("hostid", u));
                }
                if Some(h.id) == vm.host_id {
                    return Err(ServiceError::invalid(format!(
                        "Instance {} already runs on host {}",
                        vm.uuid, h.name
                    )));
                }
                Some(h.id)
            }
            None => None,
        };
        if self.has_local_volumes(&vm).await? {
            return Err(ServiceError::invalid(format!(
                "Instance {} has volumes on a host's local storage; move it with migrateVirtualMachineWithVolume",
                vm.uuid
            )));
        }
        Self::check_transition(&vm, Transition::BeginMigrate)?;
        let work = Work::Migrate {
            vm_id: vm.id,
            host_id: dest,
        };
        Ok(self
            .queue_vm_job(caller, &vm, "migrateVirtualMachine", work)
            .await?
            .uuid)
    }

    /// Picks and holds the destination, under the placement lock so
    /// concurrent placements see it; on a shared store the lock comes back
    /// too, for `migrate_to` to keep until its Migrating commit.
    pub(super) async fn choose_destination(
        &self,
        vm: &Vm,
        host_id: Option<i64>,
    ) -> SResult<(Host, Option<PlaceGuard<'_>>)> {
        let g = self.placement_guard().await?;
        let verdicts = self.migration_verdicts(vm, host_id).await?;
        let chosen = verdicts
            .iter()
            .filter_map(|v| match v.outcome {
                pl::Outcome::Eligible { rank, .. } => Some((rank, v.host_id)),
                _ => None,
            })
            .min();
        let Some((_, id)) = chosen else {
            let why: Vec<String> = verdicts
                .iter()
                .filter(|v| Some(v.host_id) != vm.host_id)
                .filter_map(|v| match &v.outcome {
                    pl::Outcome::Rejected(r) => Some(format!(
                        "host {}: {}",
                        v.host_id,
                        r.iter()
                            .map(|r| r.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                    _ => None,
                })
                .collect();
            return Err(ServiceError::capacity(format!(
                "Unable to find a host to migrate instance {} to{}",
                vm.uuid,
                if why.is_empty() {
                    " (no other host in its cluster)".to_string()
                } else {
                    format!(": {}", why.join("; "))
                }
            )));
        };
        let host: Host = self
            .load_cached(id)
            .await?
            .ok_or_else(|| ServiceError::internal("host vanished"))?;
        self.capacity.reserve_move(vm, host.id);
        Ok((host, g.until_committed()))
    }

    pub(crate) async fn exec_migrate(
        &self,
        vm_id: i64,
        host_id: Option<i64>,
    ) -> SResult<JobOutput> {
        let vm: Vm = self
            .store
            .load(vm_id)
            .await?
            .ok_or_else(|| ServiceError::internal("instance vanished"))?;
        let source_id = vm
            .host_id
            .ok_or_else(|| ServiceError::internal("running instance without host"))?;
        let source: Host = self
            .load_cached(source_id)
            .await?
            .ok_or_else(|| ServiceError::internal("source host vanished"))?;
        let (dest, held) = self.choose_destination(&vm, host_id).await?;
        let r = self.migrate_to(&vm, &source, &dest, &[], held).await;
        self.capacity.release_move(vm_id);
        r
    }

    /// Moves `vm` to a host of its cluster with room for it at the size of
    /// `sized` (scaling up where its host is full).
    pub(crate) async fn migrate_for_room(&self, vm: &Vm, sized: &Vm) -> SResult<()> {
        let source_id = vm
            .host_id
            .ok_or_else(|| ServiceError::internal("running instance without host"))?;
        let source: Host = self
            .load_cached(source_id)
            .await?
            .ok_or_else(|| ServiceError::internal("source host vanished"))?;
        let (dest, held) = self.choose_destination(sized, None).await?;
        let r = self.migrate_to(vm, &source, &dest, &[], held).await;
        self.capacity.release_move(vm.id);
        r.map(|_| ())
    }

    /// Moves a running instance to `dest`; `moves` are the volumes whose
    /// files are copied along, each to its pool there (empty: the volumes
    /// stay on storage both hosts share).
    pub(super) async fn migrate_to(
        &self,
        vm: &Vm,
        source: &Host,
        dest: &Host,
        moves: &[(Volume, StoragePool)],
        held: Option<PlaceGuard<'_>>,
    ) -> SResult<JobOutput> {
        let tls = self.setting("vm.migrate.tls", &[]) != "false";
        if tls {
            for h in [source, dest] {
                if !h.libvirt_tls && !h.simulated {
                    return Err(ServiceError::invalid(format!(
                        "Host {} has no libvirt TLS certificates (the agent's libvirt_tls option is off); enable it, or set vm.migrate.tls to false to migrate over plain TCP",
                        h.name
                    )));
                }
            }
        }
        if dest.ip_address.is_empty() && !dest.simulated {
            return Err(ServiceError::invalid(format!(
                "Host {} has reported no address to migrate to",
                dest.name
            )));
        }
        let dest_id = dest.id;
        let vm = self
            .transition(
                vm.id,
                Transition::BeginMigrate,
                move |v| v.migrating_to = Some(dest_id),
                |_, _| {},
            )
            .await;
        // Committed (or refused): other coordinators' placements may go on.
        drop(held);
        let vm = vm?;
        let mut spec = self.vm_spec(&vm).await?;
        // The destination is prepared for the layout it will have.
        let mut file_moves = Vec::new();
        for (vol, pool) in moves {
            let to = if pool.scope == "HOST" { "local" } else { "" };
            if let Some(s) = spec.volumes.iter_mut().find(|s| s.uuid == vol.uuid) {
                file_moves.push((vol.uuid.clone(), to.to_string(), s.pool.clone()));
                s.pool = to.to_string();
            }
        }
        let copy = !file_moves.is_empty();
        let (destination_uri, migrate_uri) = transport(dest, tls);
        let cmd = MigrateCmd {
            instance: vm.instance_name.clone(),
            destination_uri,
            migrate_uri,
            tls,
            copy_storage: copy,
            // Volumes that do not move stay on storage both hosts share.
            shared_storage: !copy || file_moves.len() < spec.volumes.len(),
            timeout: Duration::from_secs(self.setting_i64("migratewait").max(1) as u64),
            max_downtime_ms: self
                .setting_i64("vm.migrate.downtime")
                .clamp(0, u32::MAX as i64) as u32,
            bandwidth_mib: self
                .setting_i64("vm.migrate.speed")
                .clamp(0, u32::MAX as i64) as u32,
            moves: file_moves.clone(),
        };
        let progress: super::agent::Progress = {
            let (map, key) = (self.progress.clone(), vm.uuid.clone());
            Arc::new(move |p| {
                map.lock().insert(key.clone(), p);
            })
        };
        let moved = match self.agents.prepare_migration(dest.id, &spec, copy).await {
            Ok(()) => {
                self.agents
                    .migrate(source.id, dest.id, &cmd, progress)
                    .await
            }
            Err(e) => Err(e),
        };
        self.progress.lock().remove(&vm.uuid);
        match moved {
            Ok(()) => self.arrived(&vm, source, dest, moves).await,
            Err(e) => {
                self.migration_failed(&vm, source, dest, e, moves, &file_moves)
                    .await
            }
        }
    }

    /// The instance runs on `dest`: the record, capacity (through the
    /// record) and the event follow it.
    async fn arrived(
        &self,
        vm: &Vm,
        source: &Host,
        dest: &Host,
        moves: &[(Volume, StoragePool)],
    ) -> SResult<JobOutput> {
        let (hid, pod, cl) = (dest.id, dest.pod_id, dest.cluster_id);
        // The volumes' records as they are now, each on its new pool, land
        // with the instance's.
        let mut moved = Vec::new();
        for (vol, pool) in moves {
            if let Some(mut v) = self.store.load::<Volume>(vol.id).await? {
                v.pool_id = Some(pool.id);
                moved.push(v);
            }
        }
        let vm = self
            .transition(
                vm.id,
                Transition::MigrateDone,
                move |v| {
                    v.host_id = Some(hid);
                    v.last_host_id = Some(hid);
                    v.pod_id = Some(pod);
                    v.cluster_id = Some(cl);
                    v.migrating_to = None;
                },
                |_, tx| {
                    for v in &moved {
                        tx.update(&mut v.clone());
                    }
                },
            )
            .await?;
        self.record(
            &vm,
            "VM.MIGRATE",
            &format!(
                "Migrated instance {} from host {} to host {}",
                vm.instance_name, source.name, dest.name
            ),
        )
        .await?;
        Ok(JobOutput::Vm { id: vm.id })
    }

    /// After a failed move: find where the instance runs, record that,
    /// clean the destination when it is not there, and report the cause.
    async fn migration_failed(
        &self,
        vm: &Vm,
        source: &Host,
        dest: &Host,
        cause: AgentError,
        moves: &[(Volume, StoragePool)],
        file_moves: &[(String, String, String)],
    ) -> SResult<JobOutput> {
        let on_dest = self
            .agents
            .power_state(dest.id, &vm.instance_name)
            .await
            .unwrap_or(PowerState::Missing);
        if on_dest == PowerState::On {
            // The switch-over happened; only the report was lost.
            tracing::warn!(vm = %vm.uuid, error = %cause, "migration reported failure but the instance runs on the destination");
            return self.arrived(vm, source, dest, moves).await;
        }
        // Files the preparation made for copied volumes, by pool.
        let mut pools: Vec<&str> = file_moves.iter().map(|(_, p, _)| p.as_str()).collect();
        pools.sort_unstable();
        pools.dedup();
        if pools.is_empty() {
            pools.push("");
        }
        for pool in pools {
            let files: Vec<String> = file_moves
                .iter()
                .filter(|(_, p, _)| p == pool)
                .map(|(u, _, _)| u.clone())
                .collect();
            if let Err(e) = self
                .agents
                .cleanup_migration(dest.id, &vm.instance_name, &vm.uuid, &files, pool)
                .await
            {
                tracing::warn!(vm = %vm.uuid, host = %dest.name, error = %e, "cleaning the destination after a failed migration");
            }
        }
        let on_source = self.agents.power_state(source.id, &vm.instance_name).await;
        match on_source {
            Ok(PowerState::On) | Err(AgentError::NotConnected(_)) | Err(AgentError::Timeout(_)) => {
                // Still on the source (or the source cannot say: its report
                // settles it when it reconnects).
                self.transition(
                    vm.id,
                    Transition::MigrateDone,
                    |v| v.migrating_to = None,
                    |_, _| {},
                )
                .await?;
            }
            _ => {
                self.transition(
                    vm.id,
                    Transition::PoweredOffOutOfBand,
                    |v| {
                        v.host_id = None;
                        v.migrating_to = None;
                    },
                    |_, _| {},
                )
                .await?;
            }
        }
        let vm: Vm = self
            .store
            .load(vm.id)
            .await?
            .ok_or_else(|| ServiceError::internal("instance vanished"))?;
        self.record(
            &vm,
            "VM.MIGRATE",
            &format!(
                "Migration of instance {} from host {} to host {} failed: {cause}",
                vm.instance_name, source.name, dest.name
            ),
        )
        .await?;
        Err(ServiceError::from(cause))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_and_plain_transports() {
        let h = Host {
            ip_address: "10.99.0.2".into(),
            ..Default::default()
        };
        assert_eq!(
            transport(&h, true),
            (
                "qemu+tls://10.99.0.2/system".to_string(),
                "tcp://10.99.0.2".to_string()
            )
        );
        assert_eq!(transport(&h, false).0, "qemu+tcp://10.99.0.2/system");
        let v6 = Host {
            ip_address: "fd00::2".into(),
            ..Default::default()
        };
        assert_eq!(transport(&v6, true).1, "tcp://[fd00::2]");
    }
}
