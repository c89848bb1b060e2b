//! Placement in the service: build an immutable snapshot of a zone from
//! cached records and the capacity view, ask the pure engine
//! (`crate::placement`), and apply its answer.
//!
//! The apply step: `exec_start` holds the placement guard from building the
//! snapshot until the chosen host is reserved in the capacity view; the
//! reservation counts until the Starting commit has landed, so every
//! decision sees the capacity and affinity effects of every earlier one, and
//! concurrent deploys can neither overcommit a host nor break a strict group.
//! With several coordinators on one store, reservations are not shared: the
//! guard then also holds the store's placement lock until the commit, and
//! whoever takes it next first catches up with every instance change
//! committed before (a barrier through the commit channel).

use super::vm::Pin;
use super::*;
use crate::placement::{self as pl, Snapshot, SnapshotParts};
use crate::store::{Change, Hold, Kind};
use std::collections::HashSet;
use std::sync::Weak;

/// How long a barrier may take to come back through the commit channel
/// before the capacity view is reloaded from the records instead.
const CATCH_UP: std::time::Duration = std::time::Duration::from_secs(5);

/// Held while a placement is decided. With the embedded store this
/// process's lock is enough: the decision is reserved in the capacity view
/// until its commit lands. Several coordinators cannot see each other's
/// reservations, so on a shared store the guard also holds the store's
/// placement lock and must be kept until the decision is committed
/// (`until_committed`); the next coordinator to decide first catches up
/// with every commit made before it got the lock.
pub(crate) struct PlaceGuard<'a> {
    _local: tokio::sync::MutexGuard<'a, ()>,
    shared: Option<Hold>,
}

impl<'a> PlaceGuard<'a> {
    /// What must be kept until the decision's commit: the guard itself on a
    /// shared store, nothing otherwise.
    pub(crate) fn until_committed(self) -> Option<PlaceGuard<'a>> {
        self.shared.is_some().then_some(self)
    }
}

/// Applies other coordinators' instance changes to the capacity view, in
/// their commit order, and answers barriers once everything before them
/// is applied. Ends with the service.
pub(super) async fn follow_changes(
    svc: Weak<Service>,
    mut changes: tokio::sync::mpsc::UnboundedReceiver<Change>,
) {
    while let Some(change) = changes.recv().await {
        let Some(svc) = svc.upgrade() else {
            return;
        };
        let done = match change {
            Change::Vms(ids) => svc.apply_vm_changes(&ids).await,
            Change::All => svc.reload_capacity().await,
            Change::Barrier(token) => {
                if let Some(tx) = svc.barriers.lock().remove(&token) {
                    // The waiter may have given up; it reloads then.
                    let _ = tx.send(());
                }
                Ok(())
            }
        };
        if let Err(e) = done {
            // The next placement reloads the view rather than trust it.
            svc.capacity_stale
                .store(true, std::sync::atomic::Ordering::Release);
            tracing::warn!(error = %e.text(), "following other coordinators' instance changes failed");
        }
    }
}

fn split_tags(s: &str) -> Vec<String> {
    s.split(',')
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

impl Service {
    /// Takes the placement lock (this process's, and the shared store's
    /// where there is one) and brings the capacity view up to date with
    /// other coordinators' commits.
    pub(crate) async fn placement_guard(&self) -> SResult<PlaceGuard<'_>> {
        let local = self.place_lock.lock().await;
        let shared = self.store.placement_lock().await?;
        if shared.is_some() {
            self.catch_up().await?;
        }
        Ok(PlaceGuard {
            _local: local,
            shared,
        })
    }

    /// Waits until every instance change committed before now (by any
    /// coordinator) is in the capacity view: a barrier sent through the
    /// commit channel comes back after all of them.
    async fn catch_up(&self) -> SResult<()> {
        let token = new_uuid();
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.barriers.lock().insert(token.clone(), tx);
        let back = match self.store.barrier(&token).await {
            Ok(()) => matches!(tokio::time::timeout(CATCH_UP, rx).await, Ok(Ok(()))),
            Err(_) => false,
        };
        self.barriers.lock().remove(&token);
        let stale = self
            .capacity_stale
            .swap(false, std::sync::atomic::Ordering::AcqRel);
        if !back || stale {
            tracing::warn!("capacity view not known to be current; reloading it");
            self.reload_capacity().await?;
        }
        Ok(())
    }

    /// Rebuilds the capacity view from the records.
    pub(crate) async fn reload_capacity(&self) -> SResult<()> {
        let holders: Vec<Vm> = self
            .store
            .all(Query::new().and(Cond::In(Col::State, vm::running_like())))
            .await?;
        let fresh: HashSet<i64> = holders.iter().map(|v| v.id).collect();
        for v in &holders {
            self.capacity.observe(v);
        }
        let gone: Vec<i64> = self
            .capacity
            .holders()
            .into_iter()
            .filter(|id| !fresh.contains(id))
            .collect();
        self.apply_vm_changes(&gone).await
    }

    /// Reads these instances' records into the capacity view.
    async fn apply_vm_changes(&self, ids: &[i64]) -> SResult<()> {
        for chunk in ids.chunks(500) {
            let found: Vec<Vm> = self
                .store
                .all(Query::new().and(Cond::In(
                    Col::Id,
                    chunk.iter().map(|i| Val::I(*i)).collect(),
                )))
                .await?;
            let seen: HashSet<i64> = found.iter().map(|v| v.id).collect();
            for v in &found {
                self.capacity.observe(v);
            }
            for id in chunk.iter().filter(|id| !seen.contains(id)) {
                self.capacity.forget(*id);
            }
        }
        Ok(())
    }

    /// Everything placement needs to decide within a zone, read once.
    pub async fn placement_snapshot(&self, zone_id: i64) -> SResult<Snapshot> {
        let zone: Zone = self
            .load_cached(zone_id)
            .await?
            .ok_or_else(|| ServiceError::internal("zone vanished"))?;
        let pods: Vec<Pod> = self.zone_records(zone_id).await?;
        let clusters: Vec<Cluster> = self.zone_records(zone_id).await?;
        let hosts: Vec<Host> = self.zone_records(zone_id).await?;
        let groups: Vec<AffinityGroup> = self
            .cached(&[Kind::AffinityGroup], "live".into(), async {
                Ok(self
                    .store
                    .all(Query::new().and(Cond::Ne(Col::State, "Removed".into())))
                    .await?)
            })
            .await?;
        let alloc = |s: &str| pl::AllocationState::parse(s);
        let threshold = |name: &str, c: i64| -> Option<f64> {
            self.setting(name, &[("cluster", c)]).parse().ok()
        };
        let parts = SnapshotParts {
            zones: vec![pl::Zone {
                id: zone.id,
                allocation_state: alloc(&zone.allocation_state),
            }],
            pods: pods
                .iter()
                .filter(|p| p.removed.is_none())
                .map(|p| pl::Pod {
                    id: p.id,
                    zone_id: p.zone_id,
                    allocation_state: alloc(&p.allocation_state),
                })
                .collect(),
            clusters: clusters
                .iter()
                .filter(|c| c.removed.is_none())
                .map(|c| pl::Cluster {
                    id: c.id,
                    zone_id: c.zone_id,
                    pod_id: c.pod_id,
                    allocation_state: alloc(&c.allocation_state),
                    cpu_overprovisioning: self
                        .setting_f64("cpu.overprovisioning.factor", &[("cluster", c.id)]),
                    mem_overprovisioning: self
                        .setting_f64("mem.overprovisioning.factor", &[("cluster", c.id)]),
                    cpu_disable_threshold: threshold(
                        "cluster.cpu.allocated.capacity.disablethreshold",
                        c.id,
                    ),
                    mem_disable_threshold: threshold(
                        "cluster.memory.allocated.capacity.disablethreshold",
                        c.id,
                    ),
                })
                .collect(),
            hosts: hosts
                .iter()
                .filter(|h| h.removed.is_none())
                .map(|h| pl::Host {
                    id: h.id,
                    name: h.name.clone(),
                    zone_id: h.zone_id,
                    pod_id: h.pod_id,
                    cluster_id: h.cluster_id,
                    status: pl::HostStatus::parse(&h.state),
                    resource_state: pl::ResourceState::parse(&h.resource_state),
                    cpu_number: h.cpu_number.max(0) as u32,
                    cpu_speed_mhz: h.cpu_speed.max(0) as u32,
                    memory_bytes: h.memory_total.max(0) as u64,
                    tags: h.host_tags.clone(),
                    gpu_devices: super::gpus::passthrough_count(h.facts.as_ref()),
                    preferred_os_category: h.os_category_id,
                    max_guests: None,
                    uefi: host_feature(h, Feature::Uefi),
                    secure_boot: host_feature(h, Feature::SecureBoot),
                    tpm: host_feature(h, Feature::Tpm),
                    vgpu: super::gpus::vgpu_capacity(h.facts.as_ref()),
                })
                .collect(),
            instances: self.capacity.instances(zone_id),
            affinity_groups: groups
                .iter()
                .filter_map(|g| {
                    pl::AffinityKind::parse(&g.group_type).map(|kind| pl::AffinityGroup {
                        id: g.id,
                        kind,
                        account_id: g.account_id,
                    })
                })
                .collect(),
            settings: pl::Settings {
                allocation_algorithm: self.setting("vm.allocation.algorithm", &[]),
                strict_host_tags: split_tags(&self.setting("vm.strict.host.tags", &[])),
                cpu_disable_threshold: self
                    .setting("cluster.cpu.allocated.capacity.disablethreshold", &[])
                    .parse()
                    .unwrap_or(0.85),
                mem_disable_threshold: self
                    .setting("cluster.memory.allocated.capacity.disablethreshold", &[])
                    .parse()
                    .unwrap_or(0.85),
                ..pl::Settings::default()
            },
        };
        Ok(Snapshot::new(parts))
    }

    /// The placement question for an instance about to start.
    pub async fn placement_request(&self, vm: &Vm, pin: &Pin, admin: bool) -> SResult<pl::Request> {
        let offering: Option<ServiceOffering> = self.load_cached(vm.service_offering_id).await?;
        let os: Option<OsType> = self.load_cached(vm.os_type_id).await?;
        Ok(pl::Request {
            vm_id: Some(vm.id),
            account_id: vm.account_id,
            cpu_number: vm.cpu_number.max(0) as u32,
            cpu_speed_mhz: vm.cpu_speed.max(0) as u32,
            memory_mb: vm.memory.max(0) as u64,
            host_tags: offering
                .as_ref()
                .and_then(|o| o.host_tags.clone())
                .map(|t| split_tags(&t))
                .unwrap_or_default(),
            template_tag: None,
            os_category: os.map(|o| o.category_id),
            // Whole GPUs; a vGPU offering needs the type instead.
            gpu_count: offering
                .as_ref()
                .filter(|o| o.vgpu_type.is_none())
                .map(|o| o.gpu_count.max(0) as u32)
                .unwrap_or(0),
            vgpu_type: offering.as_ref().and_then(|o| o.vgpu_type.clone()),
            needs_uefi: boot_needs(&vm.details).uefi,
            needs_secure_boot: boot_needs(&vm.details).secure_boot,
            needs_tpm: boot_needs(&vm.details).tpm,
            affinity_group_ids: vm.affinity_group_ids.clone(),
            zone_id: Some(vm.zone_id),
            pod_id: pin.pod_id,
            cluster_id: pin.cluster_id,
            host_id: pin.host_id,
            avoid_hosts: Vec::new(),
            last_host_id: vm.last_host_id,
            caller_is_admin: admin,
            seed: rand::random(),
        })
    }

    fn allocator(&self) -> &'static dyn pl::Allocator {
        pl::allocator_for(&self.setting("vm.allocation.algorithm", &[]))
            .or_else(|| pl::allocator_for("random"))
            .expect("the random allocator exists")
    }

    /// Picks the host for an instance; a failure is CloudStack's 533 with the
    /// count of hosts rejected for each reason.
    pub(crate) async fn place(&self, vm: &Vm, pin: &Pin) -> SResult<Host> {
        let snap = self.placement_snapshot(vm.zone_id).await?;
        let admin = pin.host_id.is_some() || pin.pod_id.is_some() || pin.cluster_id.is_some();
        let req = self.placement_request(vm, pin, admin).await?;
        match pl::plan(&snap, &req, self.allocator()) {
            Ok(plan) => self
                .load_cached(plan.host_id)
                .await?
                .ok_or_else(|| ServiceError::internal("host vanished")),
            Err(why) => Err(ServiceError::capacity(format!(
                "Unable to create a deployment for VM instance {}: insufficient capacity ({why})",
                vm.uuid
            ))),
        }
    }

    /// Every host of the zone with its rank or every reason it was rejected,
    /// for an instance as it would be started now.
    pub async fn placement_dry_run(&self, vm: &Vm, pin: &Pin) -> SResult<Vec<pl::HostVerdict>> {
        let snap = self.placement_snapshot(vm.zone_id).await?;
        let req = self.placement_request(vm, pin, true).await?;
        Ok(pl::dry_run(&snap, &req, self.allocator()))
    }
}

/// What an instance's details ask of its host's firmware and devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BootNeeds {
    pub uefi: bool,
    pub secure_boot: bool,
    pub tpm: bool,
}

/// Pure: `UEFI` (LEGACY/SECURE), `boottype`/`bootmode`, and `tpm` or the
/// vTPM's `tpmversion`/`tpmmodel`.
pub fn boot_needs(details: &std::collections::BTreeMap<String, String>) -> BootNeeds {
    let detail = |k: &str| {
        details
            .iter()
            .find(|(dk, _)| dk.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str())
    };
    BootNeeds {
        uefi: detail("UEFI").is_some()
            || detail("boottype").is_some_and(|v| v.eq_ignore_ascii_case("UEFI")),
        secure_boot: detail("UEFI").is_some_and(|v| v.eq_ignore_ascii_case("SECURE"))
            || detail("bootmode").is_some_and(|v| v.eq_ignore_ascii_case("SECURE")),
        tpm: detail("tpm").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || detail("tpmversion").is_some()
            || detail("tpmmodel").is_some(),
    }
}

#[derive(Debug, Clone, Copy)]
enum Feature {
    Uefi,
    SecureBoot,
    Tpm,
}

/// Whether a host offers a feature, from the facts its agent reported. A
/// host without facts (simulated, or not heard from yet) is not excluded:
/// its agent refuses what it cannot do when asked.
fn host_feature(h: &Host, f: Feature) -> bool {
    let Some(facts) = &h.facts else {
        return true;
    };
    let firmware = facts["firmware"].as_array().cloned().unwrap_or_default();
    match f {
        Feature::Uefi => !firmware.is_empty(),
        Feature::SecureBoot => firmware
            .iter()
            .any(|x| x["secureboot"].as_bool() == Some(true)),
        Feature::Tpm => facts["tpm"].as_bool().unwrap_or(false),
    }
}

#[cfg(test)]
mod boot_tests {
    use super::*;

    #[test]
    fn details_name_what_the_host_must_offer() {
        let d = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        assert_eq!(boot_needs(&d(&[])), BootNeeds::default());
        let n = boot_needs(&d(&[("UEFI", "SECURE"), ("tpmmodel", "tpm-crb")]));
        assert!(n.uefi && n.secure_boot && n.tpm);
        let n = boot_needs(&d(&[("boottype", "uefi"), ("bootmode", "legacy")]));
        assert!(n.uefi && !n.secure_boot && !n.tpm);
        let mut h = Host::default();
        assert!(host_feature(&h, Feature::SecureBoot));
        h.facts = Some(
            serde_json::json!({"firmware": [{"path": "/x", "secureboot": false}], "tpm": false}),
        );
        assert!(host_feature(&h, Feature::Uefi));
        assert!(!host_feature(&h, Feature::SecureBoot));
        assert!(!host_feature(&h, Feature::Tpm));
    }
}
