//! Placement in the service: build an immutable snapshot of a zone from
//! cached records and the capacity view, ask the pure engine
//! (`crate::placement`), and apply its answer.
//!
//! The apply step: `exec_start` holds `place_lock` from building the snapshot
//! until the chosen host is reserved in the capacity view; the reservation
//! counts until the Starting commit has landed, so every decision sees the
//! capacity and affinity effects of every earlier one, and concurrent deploys
//! can neither overcommit a host nor break a strict group.

use super::vm::Pin;
use super::*;
use crate::placement::{self as pl, Snapshot, SnapshotParts};
use crate::store::Kind;

fn split_tags(s: &str) -> Vec<String> {
    s.split(',')
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

impl Service {
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
