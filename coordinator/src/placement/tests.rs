//! Unit tests per filter, weigher and policy, the seed's worked examples of
//! non-strict priorities, and the rejection wording.

use super::*;

const GIB: u64 = 1024 * 1024 * 1024;

pub(super) fn host(id: Id, cluster: Id) -> Host {
    Host {
        id,
        name: format!("host-{id}"),
        zone_id: 1,
        pod_id: 1,
        cluster_id: cluster,
        status: HostStatus::Up,
        resource_state: ResourceState::Enabled,
        cpu_number: 8,
        cpu_speed_mhz: 2000,
        memory_bytes: 16 * GIB,
        ..Default::default()
    }
}

pub(super) fn inst(id: Id, host: Id, account: Id) -> Instance {
    Instance {
        id,
        host_id: Some(host),
        account_id: account,
        cpu_number: 1,
        cpu_speed_mhz: 1000,
        memory_mb: 1024,
        ..Default::default()
    }
}

/// One zone, one pod, clusters as the hosts name them; thresholds off so
/// capacity tests see only the host checks; first fit for determinism.
pub(super) fn parts(hosts: Vec<Host>) -> SnapshotParts {
    let mut cluster_ids: Vec<Id> = hosts.iter().map(|h| h.cluster_id).collect();
    cluster_ids.sort_unstable();
    cluster_ids.dedup();
    let mut pod_ids: Vec<Id> = hosts.iter().map(|h| h.pod_id).collect();
    pod_ids.sort_unstable();
    pod_ids.dedup();
    SnapshotParts {
        zones: vec![Zone {
            id: 1,
            allocation_state: AllocationState::Enabled,
        }],
        pods: pod_ids
            .iter()
            .map(|&id| Pod {
                id,
                zone_id: 1,
                allocation_state: AllocationState::Enabled,
            })
            .collect(),
        clusters: cluster_ids
            .iter()
            .map(|&id| Cluster {
                id,
                zone_id: 1,
                pod_id: hosts.iter().find(|h| h.cluster_id == id).unwrap().pod_id,
                ..Default::default()
            })
            .collect(),
        hosts,
        instances: vec![],
        affinity_groups: vec![],
        settings: Settings {
            allocation_algorithm: "firstfit".into(),
            cluster_threshold_enabled: false,
            ..Default::default()
        },
    }
}

pub(super) fn req() -> Request {
    Request {
        account_id: 1,
        cpu_number: 1,
        cpu_speed_mhz: 1000,
        memory_mb: 512,
        zone_id: Some(1),
        caller_is_admin: false,
        ..Default::default()
    }
}

fn group(id: Id, kind: AffinityKind) -> AffinityGroup {
    AffinityGroup {
        id,
        kind,
        account_id: 1,
    }
}

fn ff() -> &'static dyn Allocator {
    allocator_for("firstfit").unwrap()
}

fn chosen(s: &Snapshot, r: &Request) -> Id {
    plan(s, r, ff()).expect("a host fits").host_id
}

fn order(s: &Snapshot, r: &Request, a: &dyn Allocator) -> Vec<Id> {
    rank(s, r, a)
        .expect("hosts fit")
        .iter()
        .map(|x| x.host_id)
        .collect()
}

/// The reasons `dry_run` gives for one host.
fn reasons(s: &Snapshot, r: &Request, host_id: Id) -> Vec<Reason> {
    dry_run(s, r, ff())
        .into_iter()
        .find(|v| v.host_id == host_id)
        .map(|v| match v.outcome {
            Outcome::Rejected(r) => r,
            Outcome::Eligible { .. } => vec![],
        })
        .unwrap()
}

// ---- filters ----

#[test]
fn host_state_skips_down_disabled_and_maintenance() {
    let mut hs: Vec<Host> = (1..=5).map(|i| host(i, 1)).collect();
    hs[0].status = HostStatus::Down;
    hs[1].resource_state = ResourceState::Maintenance;
    hs[2].resource_state = ResourceState::Disabled;
    hs[3].resource_state = ResourceState::PrepareForMaintenance;
    let s = Snapshot::new(parts(hs));
    assert_eq!(chosen(&s, &req()), 5);
    assert_eq!(
        reasons(&s, &req(), 1),
        vec![Reason::HostNotUp {
            status: HostStatus::Down
        }]
    );
    assert_eq!(
        reasons(&s, &req(), 2),
        vec![Reason::HostNotEnabled {
            state: ResourceState::Maintenance
        }]
    );
    assert_eq!(
        reasons(&s, &req(), 3),
        vec![Reason::HostNotEnabled {
            state: ResourceState::Disabled
        }]
    );
}

#[test]
fn dry_run_lists_every_failed_check() {
    let mut h = host(1, 1);
    h.status = HostStatus::Disconnected;
    h.resource_state = ResourceState::Maintenance;
    h.cpu_number = 1;
    let s = Snapshot::new(parts(vec![h]));
    let mut r = req();
    r.cpu_number = 2;
    r.host_tags = vec!["ssd".into()];
    let got = reasons(&s, &r, 1);
    assert_eq!(
        got,
        vec![
            Reason::HostNotUp {
                status: HostStatus::Disconnected
            },
            Reason::HostNotEnabled {
                state: ResourceState::Maintenance
            },
            Reason::MissingHostTag { tag: "ssd".into() },
            Reason::CpuCores { need: 2, have: 1 },
        ]
    );
}

#[test]
fn disabled_zone_pod_or_cluster_takes_nothing() {
    let mut hs = vec![host(1, 1), host(2, 2), host(3, 3)];
    hs[2].pod_id = 2;
    let mut p = parts(hs);
    p.clusters[0].allocation_state = AllocationState::Disabled;
    p.pods
        .iter_mut()
        .find(|p| p.id == 2)
        .unwrap()
        .allocation_state = AllocationState::Disabled;
    let s = Snapshot::new(p);
    assert_eq!(chosen(&s, &req()), 2);
    assert_eq!(
        reasons(&s, &req(), 1),
        vec![Reason::Disabled {
            level: Level::Cluster,
            id: 1
        }]
    );
    assert_eq!(
        reasons(&s, &req(), 3),
        vec![Reason::Disabled {
            level: Level::Pod,
            id: 2
        }]
    );

    let mut p = parts(vec![host(1, 1)]);
    p.zones[0].allocation_state = AllocationState::Disabled;
    let s = Snapshot::new(p);
    let err = plan(&s, &req(), ff()).unwrap_err();
    assert_eq!(err.to_string(), "1 host: zone 1 is disabled for allocation");
}

#[test]
fn host_in_unknown_cluster_is_not_used() {
    let mut p = parts(vec![host(1, 1), host(2, 1)]);
    p.hosts[0].cluster_id = 99;
    let s = Snapshot::new(p);
    assert_eq!(chosen(&s, &req()), 2);
    assert_eq!(
        reasons(&s, &req(), 1),
        vec![Reason::Unknown {
            level: Level::Cluster,
            id: 99
        }]
    );
}

#[test]
fn pins_narrow_the_scope_for_admins() {
    let mut hs: Vec<Host> = (1..=6).map(|i| host(i, 1 + (i - 1) / 2)).collect();
    hs[4].pod_id = 2;
    hs[5].pod_id = 2;
    let s = Snapshot::new(parts(hs));
    let mut r = req();
    r.caller_is_admin = true;
    r.cluster_id = Some(2);
    assert_eq!(chosen(&s, &r), 3);
    r.cluster_id = None;
    r.pod_id = Some(2);
    assert_eq!(chosen(&s, &r), 5);
    r.pod_id = None;
    r.host_id = Some(4);
    let p = plan(&s, &r, ff()).unwrap();
    assert_eq!((p.host_id, p.hosts_in_scope), (4, 1));
    r.host_id = Some(77);
    let err = plan(&s, &r, ff()).unwrap_err();
    assert_eq!(err.to_string(), "no hosts in the requested host 77");
    // A zone with no hosts.
    let mut r = req();
    r.zone_id = Some(9);
    let err = plan(&s, &r, ff()).unwrap_err();
    assert_eq!(err.hosts_out_of_scope, 6);
    assert_eq!(err.to_string(), "no hosts in the requested zone 9");
}

#[test]
fn users_may_only_choose_the_zone() {
    let s = Snapshot::new(parts(vec![host(1, 1), host(2, 1)]));
    let mut r = req();
    r.host_id = Some(2);
    let err = plan(&s, &r, ff()).unwrap_err();
    assert_eq!(err.refused, Some(Reason::PinRequiresAdmin));
    assert_eq!(
        err.to_string(),
        "only an administrator may choose the pod, cluster or host"
    );
    assert!(dry_run(&s, &r, ff())
        .iter()
        .all(|v| matches!(&v.outcome, Outcome::Rejected(rs) if rs[0] == Reason::PinRequiresAdmin)));
    r.caller_is_admin = true;
    assert_eq!(chosen(&s, &r), 2);
}

#[test]
fn avoid_set_is_skipped() {
    let s = Snapshot::new(parts(vec![host(1, 1), host(2, 1)]));
    let mut r = req();
    r.avoid_hosts = vec![1];
    assert_eq!(chosen(&s, &r), 2);
    r.avoid_hosts = vec![1, 2];
    let err = plan(&s, &r, ff()).unwrap_err();
    assert_eq!(err.to_string(), "2 hosts: already tried for this request");
}

#[test]
fn cpu_cores_and_speed_must_suffice() {
    let mut hs = vec![host(1, 1), host(2, 1), host(3, 1)];
    hs[0].cpu_number = 2;
    hs[1].cpu_speed_mhz = 1500;
    let s = Snapshot::new(parts(hs));
    let mut r = req();
    r.cpu_number = 4;
    r.cpu_speed_mhz = 1800;
    assert_eq!(chosen(&s, &r), 3);
    assert_eq!(
        reasons(&s, &r, 1),
        vec![
            Reason::CpuCores { need: 4, have: 2 },
            Reason::Cpu {
                need_mhz: 7200,
                free_mhz: 4000
            }
        ]
    );
    assert_eq!(
        reasons(&s, &r, 2),
        vec![Reason::CpuSpeed {
            need_mhz: 1800,
            have_mhz: 1500
        }]
    );
}

#[test]
fn cpu_capacity_counts_the_overprovisioning_factor() {
    // 8 × 2000 MHz × 2.0 = 32000 MHz; 30 instances of 1000 MHz hold 30000.
    let mut p = parts(vec![host(1, 1)]);
    p.clusters[0].cpu_overprovisioning = 2.0;
    p.instances = (1..=30).map(|i| inst(100 + i, 1, 2)).collect();
    for i in &mut p.instances {
        i.memory_mb = 1;
    }
    let s = Snapshot::new(p);
    let mut r = req();
    r.cpu_number = 2;
    r.cpu_speed_mhz = 1000;
    assert_eq!(chosen(&s, &r), 1, "exactly full is allowed");
    r.cpu_speed_mhz = 1001;
    let err = plan(&s, &r, ff()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "1 host: not enough free CPU (need 2002 MHz, free 2000 MHz)"
    );
}

#[test]
fn memory_capacity_counts_the_overprovisioning_factor() {
    // 16 GiB × 1.5 = 24576 MB; 20 × 1024 MB held.
    let mut p = parts(vec![host(1, 1)]);
    p.clusters[0].mem_overprovisioning = 1.5;
    p.instances = (1..=20).map(|i| inst(100 + i, 1, 2)).collect();
    for i in &mut p.instances {
        i.cpu_speed_mhz = 100;
    }
    let s = Snapshot::new(p);
    let mut r = req();
    r.memory_mb = 4096;
    assert_eq!(chosen(&s, &r), 1);
    r.memory_mb = 4097;
    assert_eq!(
        reasons(&s, &r, 1),
        vec![Reason::Memory {
            need_mb: 4097,
            free_mb: 4096
        }]
    );
}

#[test]
fn a_restart_does_not_compete_with_itself() {
    // The host is full only because of the instance being started again.
    let mut p = parts(vec![host(1, 1)]);
    let mut me = inst(7, 1, 1);
    me.memory_mb = 16 * 1024;
    me.affinity_group_ids = vec![50];
    me.gpu_count = 0;
    p.instances = vec![me];
    p.affinity_groups = vec![group(50, AffinityKind::HostAntiAffinity)];
    let s = Snapshot::new(p);
    let mut r = req();
    r.memory_mb = 16 * 1024;
    r.affinity_group_ids = vec![50];
    assert!(plan(&s, &r, ff()).is_err(), "a new instance does not fit");
    r.vm_id = Some(7);
    assert_eq!(chosen(&s, &r), 1);
}

#[test]
fn cluster_disable_threshold_closes_a_full_cluster() {
    // Cluster 1: 2 hosts × 16000 MHz = 32000 MHz; 26 × 1000 MHz held = 81%.
    let mut p = parts(vec![host(1, 1), host(2, 1), host(3, 2)]);
    p.settings.cluster_threshold_enabled = true;
    p.instances = (1..=26).map(|i| inst(i, 1 + i % 2, 2)).collect();
    for i in &mut p.instances {
        i.memory_mb = 1;
    }
    let s = Snapshot::new(p.clone());
    let mut r = req();
    r.cpu_number = 1;
    r.cpu_speed_mhz = 1000; // 27000 / 32000 = 84.4% <= 85%
    assert_eq!(chosen(&s, &r), 1);
    r.cpu_speed_mhz = 2000; // 28000 / 32000 = 87.5% > 85%
    assert_eq!(chosen(&s, &r), 3);
    assert_eq!(
        reasons(&s, &r, 1),
        vec![Reason::ClusterCpuThreshold {
            cluster: 1,
            would_be: 0.875,
            threshold: 0.85
        }]
    );
    let mut r1 = r.clone();
    r1.cluster_id = Some(1);
    r1.caller_is_admin = true;
    assert_eq!(
        plan(&s, &r1, ff()).unwrap_err().to_string(),
        "2 hosts: cluster 1 would pass its CPU disable threshold (87.5% > 85.0%)"
    );
    // A cluster-scoped threshold overrides the global one.
    p.clusters[0].cpu_disable_threshold = Some(0.9);
    assert_eq!(chosen(&Snapshot::new(p.clone()), &r), 1);
    // cluster.threshold.enabled = false turns the check off.
    p.clusters[0].cpu_disable_threshold = None;
    p.settings.cluster_threshold_enabled = false;
    assert_eq!(chosen(&Snapshot::new(p), &r), 1);
}

#[test]
fn memory_threshold_applies_too() {
    let mut p = parts(vec![host(1, 1), host(2, 2)]);
    p.settings.cluster_threshold_enabled = true;
    p.settings.mem_disable_threshold = 0.5;
    p.instances = (1..=8).map(|i| inst(i, 1, 2)).collect(); // 8192 of 16384 MB
    let s = Snapshot::new(p);
    let r = req();
    assert_eq!(chosen(&s, &r), 2);
    assert!(matches!(
        reasons(&s, &r, 1)[..],
        [Reason::ClusterMemoryThreshold { cluster: 1, .. }]
    ));
}

#[test]
fn every_offering_tag_must_be_on_the_host() {
    let mut hs = vec![host(1, 1), host(2, 1), host(3, 1)];
    hs[0].tags = vec!["ssd".into()];
    hs[1].tags = vec!["SSD".into(), " gpu ".into()];
    hs[2].tags = vec!["ssd".into(), "gpu".into(), "fast".into()];
    let s = Snapshot::new(parts(hs));
    let mut r = req();
    r.host_tags = vec!["gpu".into(), "Ssd".into()];
    assert_eq!(chosen(&s, &r), 2, "tags match case-insensitively");
    r.template_tag = Some("fast".into());
    assert_eq!(chosen(&s, &r), 3, "the template tag counts too");
    assert_eq!(
        reasons(&s, &r, 1),
        vec![
            Reason::MissingHostTag { tag: "fast".into() },
            Reason::MissingHostTag { tag: "gpu".into() },
        ]
    );
}

#[test]
fn an_admin_named_host_skips_tags_except_strict_ones() {
    let mut hs = vec![host(1, 1)];
    hs[0].tags = vec!["h1".into(), "v1".into()];
    let mut p = parts(hs);
    let mut r = req();
    r.caller_is_admin = true;
    r.host_id = Some(1);
    r.host_tags = vec!["h2".into()];
    r.template_tag = Some("v2".into());
    // No strict tags: the admin's choice wins.
    assert_eq!(chosen(&Snapshot::new(p.clone()), &r), 1);
    // Without the pin the tags bind.
    let mut free = r.clone();
    free.host_id = None;
    assert!(plan(&Snapshot::new(p.clone()), &free, ff()).is_err());
    // vm.strict.host.tags = v1,v2: the template's v2 must match.
    p.settings.strict_host_tags = vec!["v1".into(), "V2".into()];
    let s = Snapshot::new(p.clone());
    assert_eq!(
        plan(&s, &r, ff()).unwrap_err().to_string(),
        "1 host: missing strict host tag 'v2'"
    );
    // resource.limit.host.tags join the strict set while the check is on.
    p.settings.strict_host_tags = vec![];
    p.settings.resource_limit_host_tags = vec!["h2".into()];
    let s = Snapshot::new(p.clone());
    assert_eq!(s.strict_host_tags(), ["h2".to_string()]);
    assert!(plan(&s, &r, ff()).is_err());
    p.settings.strict_resource_limit_host_tag_check = false;
    assert_eq!(chosen(&Snapshot::new(p), &r), 1);
}

#[test]
fn gpu_offerings_need_free_devices() {
    let mut hs = vec![host(1, 1), host(2, 1), host(3, 1)];
    hs[1].gpu_devices = 1;
    hs[2].gpu_devices = 2;
    let mut p = parts(hs);
    let mut g = inst(9, 2, 2);
    g.gpu_count = 1;
    p.instances = vec![g];
    let s = Snapshot::new(p);
    let mut r = req();
    r.gpu_count = 1;
    assert_eq!(chosen(&s, &r), 3);
    assert_eq!(reasons(&s, &r, 1), vec![Reason::Gpu { need: 1, free: 0 }]);
    assert_eq!(reasons(&s, &r, 2), vec![Reason::Gpu { need: 1, free: 0 }]);
    r.gpu_count = 3;
    assert_eq!(
        plan(&s, &r, ff()).unwrap_err().to_string(),
        "3 hosts: not enough free GPUs (need 3, most free 2)"
    );
}

#[test]
fn vgpu_offerings_need_a_free_device_of_their_type() {
    let cap = |max| VgpuCapacity {
        names: vec!["nvidia-231".into(), "GRID T4-8Q".into()],
        max,
    };
    let mut hs = vec![host(1, 1), host(2, 1), host(3, 1)];
    hs[1].vgpu = vec![cap(1)];
    hs[2].vgpu = vec![cap(2)];
    let mut p = parts(hs);
    // Host 2's one 8Q is held (the offering named the type by its name).
    let mut g = inst(9, 2, 2);
    g.vgpu_type = Some("grid t4-8q".into());
    p.instances = vec![g];
    let s = Snapshot::new(p.clone());
    let mut r = req();
    r.vgpu_type = Some("nvidia-231".into());
    assert_eq!(chosen(&s, &r), 3);
    assert_eq!(
        reasons(&s, &r, 1),
        vec![Reason::MissingFeature {
            feature: "the offering's vGPU type"
        }]
    );
    assert_eq!(
        reasons(&s, &r, 2),
        vec![Reason::Vgpu {
            vgpu_type: "nvidia-231".into(),
            max: 1
        }]
    );
    // The instance that holds it may start there again.
    r.vm_id = Some(9);
    assert!(reasons(&s, &r, 2).is_empty());
    // Host 3 full too: nowhere, and the text says why.
    r.vm_id = None;
    let mut a = inst(10, 3, 2);
    a.vgpu_type = Some("nvidia-231".into());
    let mut b = inst(11, 3, 2);
    b.vgpu_type = Some("GRID T4-8Q".into());
    p.instances.extend([a, b]);
    let s = Snapshot::new(p);
    let err = plan(&s, &r, ff()).unwrap_err().to_string();
    assert!(
        err.contains("all 1 vGPUs of type 'nvidia-231' in use"),
        "{err}"
    );
    assert!(
        err.contains("all 2 vGPUs of type 'nvidia-231' in use"),
        "{err}"
    );
}

#[test]
fn max_guests_caps_a_host() {
    let mut hs = vec![host(1, 1), host(2, 1)];
    hs[0].max_guests = Some(2);
    let mut p = parts(hs);
    p.instances = vec![inst(10, 1, 2), inst(11, 1, 2)];
    let s = Snapshot::new(p);
    assert_eq!(chosen(&s, &req()), 2);
    assert_eq!(reasons(&s, &req(), 1), vec![Reason::MaxGuests { limit: 2 }]);
    // Restarting one of them frees its slot.
    let mut r = req();
    r.vm_id = Some(10);
    assert_eq!(chosen(&s, &r), 1);
}

#[test]
fn strict_anti_affinity_never_shares_a_host() {
    let mut p = parts(vec![host(1, 1), host(2, 1), host(3, 1)]);
    p.affinity_groups = vec![group(5, AffinityKind::HostAntiAffinity)];
    let mut a = inst(17, 1, 1);
    a.affinity_group_ids = vec![5];
    let mut b = inst(18, 2, 1);
    b.affinity_group_ids = vec![5];
    p.instances = vec![a, b, inst(19, 3, 1)];
    let s = Snapshot::new(p);
    let mut r = req();
    r.affinity_group_ids = vec![5];
    assert_eq!(chosen(&s, &r), 3);
    assert_eq!(
        reasons(&s, &r, 1),
        vec![Reason::AntiAffinity {
            group: 5,
            instance: 17
        }]
    );
    r.avoid_hosts = vec![3];
    assert_eq!(
        plan(&s, &r, ff()).unwrap_err().to_string(),
        "2 hosts: host anti-affinity with instances 17 and 18; 1 host: already tried for this request"
    );
}

#[test]
fn strict_affinity_keeps_members_together() {
    let mut p = parts(vec![host(1, 1), host(2, 1), host(3, 1)]);
    p.affinity_groups = vec![group(6, AffinityKind::HostAffinity)];
    let s = Snapshot::new(p.clone());
    let mut r = req();
    r.affinity_group_ids = vec![6];
    assert_eq!(chosen(&s, &r), 1, "no member placed yet: any host");

    let mut m = inst(20, 2, 1);
    m.affinity_group_ids = vec![6];
    let mut stopped = inst(21, 3, 1);
    stopped.host_id = None;
    stopped.affinity_group_ids = vec![6];
    p.instances = vec![m.clone(), stopped];
    let s = Snapshot::new(p.clone());
    assert_eq!(chosen(&s, &r), 2);
    assert_eq!(
        reasons(&s, &r, 1),
        vec![Reason::Affinity { group: 6, host: 2 }]
    );
    // The member's host is full: nowhere to go, said plainly.
    let mut big = r.clone();
    big.memory_mb = 16 * 1024;
    assert_eq!(
        plan(&s, &big, ff()).unwrap_err().to_string(),
        "2 hosts: host affinity with instances on host 2; \
         1 host: not enough free memory (need 16384 MB, free 15360 MB)"
    );
    // Members split over two hosts leave no valid host.
    let mut m2 = inst(22, 3, 1);
    m2.affinity_group_ids = vec![6];
    p.instances = vec![m, m2];
    let s = Snapshot::new(p);
    assert_eq!(plan(&s, &r, ff()).unwrap_err().hosts_in_scope, 3);
}

// ---- order ----

#[test]
fn seed_example_1_non_strict_anti_affinity() {
    // Host-1 has 2 instances of the group, Host-2 has 3: priorities -2 and
    // -3; the instance goes to Host-1.
    let s = soft_world(AffinityKind::NonStrictHostAntiAffinity, 2, 3, None);
    let r = soft_req(&[1]);
    let v = dry_run(&s, &r, ff());
    assert_eq!(priority_of(&v, 1), -2);
    assert_eq!(priority_of(&v, 2), -3);
    let p = plan(&s, &r, ff()).unwrap();
    assert_eq!((p.host_id, p.priority), (1, -2));
}

#[test]
fn seed_example_2_non_strict_affinity() {
    // Host-1 priority 2, Host-2 priority 3: the instance goes to Host-2.
    let s = soft_world(AffinityKind::NonStrictHostAffinity, 2, 3, None);
    let r = soft_req(&[1]);
    let v = dry_run(&s, &r, ff());
    assert_eq!(priority_of(&v, 1), 2);
    assert_eq!(priority_of(&v, 2), 3);
    let p = plan(&s, &r, ff()).unwrap();
    assert_eq!((p.host_id, p.priority), (2, 3));
}

#[test]
fn seed_example_3_both_kinds() {
    // Host-1: 2 in the affinity group, 3 in the anti-affinity group:
    // 0 + 2 - 3 = -1.
    let s = soft_world(
        AffinityKind::NonStrictHostAffinity,
        2,
        0,
        Some((AffinityKind::NonStrictHostAntiAffinity, 3)),
    );
    let r = soft_req(&[1, 2]);
    let v = dry_run(&s, &r, ff());
    assert_eq!(priority_of(&v, 1), -1);
    assert_eq!(priority_of(&v, 2), 0);
    // Host-2 (0) beats Host-1 (-1).
    assert_eq!(chosen(&s, &r), 2);
}

/// Two roomy hosts; group 1 of `kind` with `on1`/`on2` members on hosts 1/2;
/// optionally group 2 with members on host 1.
fn soft_world(
    kind: AffinityKind,
    on1: usize,
    on2: usize,
    second: Option<(AffinityKind, usize)>,
) -> Snapshot {
    let mut p = parts(vec![host(1, 1), host(2, 1)]);
    p.affinity_groups = vec![group(1, kind)];
    let mut next = 100;
    let mut add = |host_id: Id, g: Id, p: &mut SnapshotParts| {
        let mut i = inst(next, host_id, 1);
        i.affinity_group_ids = vec![g];
        i.memory_mb = 64;
        p.instances.push(i);
        next += 1;
    };
    for _ in 0..on1 {
        add(1, 1, &mut p);
    }
    for _ in 0..on2 {
        add(2, 1, &mut p);
    }
    if let Some((k2, n)) = second {
        p.affinity_groups.push(group(2, k2));
        for _ in 0..n {
            add(1, 2, &mut p);
        }
    }
    Snapshot::new(p)
}

fn soft_req(groups: &[Id]) -> Request {
    let mut r = req();
    r.affinity_group_ids = groups.to_vec();
    r
}

fn priority_of(v: &[HostVerdict], host_id: Id) -> i64 {
    match v.iter().find(|v| v.host_id == host_id).unwrap().outcome {
        Outcome::Eligible { priority, .. } => priority,
        ref o => panic!("host {host_id} not eligible: {o:?}"),
    }
}

#[test]
fn equal_priorities_keep_the_allocator_order() {
    // Hosts 1 and 3 both hold one member (-1); 2 and 4 none (0).
    let mut p = parts((1..=4).map(|i| host(i, 1)).collect());
    p.affinity_groups = vec![group(1, AffinityKind::NonStrictHostAntiAffinity)];
    for (id, h) in [(10, 1), (11, 3)] {
        let mut i = inst(id, h, 1);
        i.affinity_group_ids = vec![1];
        p.instances.push(i);
    }
    let s = Snapshot::new(p);
    let r = soft_req(&[1]);
    assert_eq!(order(&s, &r, ff()), vec![2, 4, 1, 3]);
    let vertical = allocator_for("vertical").unwrap();
    // Vertical prefers the fuller host among equals: 1 before 3 is a tie
    // on usage, so id order; 2 and 4 are empty.
    assert_eq!(order(&s, &r, vertical), vec![2, 4, 1, 3]);
}

#[test]
fn os_category_preference_orders_but_does_not_exclude() {
    let mut hs: Vec<Host> = (1..=4).map(|i| host(i, 1)).collect();
    hs[0].preferred_os_category = Some(8); // prefers another category
    hs[1].preferred_os_category = None;
    hs[2].preferred_os_category = Some(5); // prefers ours
    hs[3].preferred_os_category = None;
    let s = Snapshot::new(parts(hs));
    let mut r = req();
    r.os_category = Some(5);
    assert_eq!(order(&s, &r, ff()), vec![3, 2, 4, 1]);
    r.os_category = None;
    assert_eq!(order(&s, &r, ff()), vec![2, 4, 1, 3]);
}

#[test]
fn gpu_hosts_go_last_for_plain_instances() {
    let mut hs: Vec<Host> = (1..=3).map(|i| host(i, 1)).collect();
    hs[0].gpu_devices = 4;
    let s = Snapshot::new(parts(hs));
    assert_eq!(order(&s, &req(), ff()), vec![2, 3, 1]);
    let mut r = req();
    r.gpu_count = 1;
    assert_eq!(order(&s, &r, ff()), vec![1]);
}

#[test]
fn the_last_host_is_tried_first_while_it_fits() {
    let mut hs: Vec<Host> = (1..=3).map(|i| host(i, 1)).collect();
    hs[2].memory_bytes = GIB;
    let s = Snapshot::new(parts(hs.clone()));
    let mut r = req();
    r.last_host_id = Some(2);
    let p = plan(&s, &r, ff()).unwrap();
    assert_eq!((p.host_id, p.last_host), (2, true));
    // It no longer fits: ordinary order.
    r.last_host_id = Some(3);
    r.memory_mb = 2048;
    let p = plan(&s, &r, ff()).unwrap();
    assert_eq!((p.host_id, p.last_host), (1, false));
    // A last host preferring another OS category is not singled out.
    hs[1].preferred_os_category = Some(9);
    let s = Snapshot::new(parts(hs));
    let mut r = req();
    r.last_host_id = Some(2);
    r.os_category = Some(4);
    assert_eq!(chosen(&s, &r), 1);
}

#[test]
fn non_strict_priority_outranks_the_last_host() {
    let s = soft_world(AffinityKind::NonStrictHostAntiAffinity, 1, 0, None);
    let mut r = soft_req(&[1]);
    r.last_host_id = Some(1);
    assert_eq!(chosen(&s, &r), 2);
    // Restarting the only member: its own presence does not count.
    let mut r = soft_req(&[1]);
    r.vm_id = Some(100);
    r.last_host_id = Some(1);
    assert_eq!(chosen(&s, &r), 1);
}

// ---- allocation policies ----

#[test]
fn firstfit_goes_by_host_id_whatever_the_snapshot_order() {
    let s = Snapshot::new(parts(vec![host(9, 1), host(3, 1), host(5, 1)]));
    assert_eq!(order(&s, &req(), ff()), vec![3, 5, 9]);
}

#[test]
fn random_is_a_pure_seeded_shuffle() {
    let s = Snapshot::new(parts((1..=20).map(|i| host(i, 1)).collect()));
    let random = allocator_for("random").unwrap();
    let mut r = req();
    r.seed = 42;
    let a = order(&s, &r, random);
    assert_eq!(a, order(&s, &r, random), "same seed, same order");
    let mut sorted = a.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (1..=20).collect::<Vec<_>>());
    let firsts: std::collections::HashSet<Id> = (0..200)
        .map(|seed| {
            r.seed = seed;
            plan(&s, &r, random).unwrap().host_id
        })
        .collect();
    assert!(firsts.len() >= 15, "seeds spread the choice: {firsts:?}");
}

#[test]
fn userdispersing_prefers_hosts_with_fewer_of_the_accounts_instances() {
    let mut p = parts((1..=3).map(|i| host(i, 1)).collect());
    p.instances = vec![
        inst(10, 1, 1),
        inst(11, 1, 1),
        inst(12, 2, 1),
        inst(13, 3, 2),
        inst(14, 3, 2),
        inst(15, 3, 2),
    ];
    let s = Snapshot::new(p);
    let a = allocator_for("userdispersing").unwrap();
    assert_eq!(order(&s, &req(), a), vec![3, 2, 1]);
    let mut other = req();
    other.account_id = 2;
    assert_eq!(order(&s, &other, a), vec![1, 2, 3]);
}

#[test]
fn userconcentratedpod_prefers_pods_with_the_accounts_instances() {
    let mut hs: Vec<Host> = (1..=6).map(|i| host(i, i)).collect();
    for h in &mut hs {
        h.pod_id = 1 + (h.id - 1) / 2; // pods 1, 2, 3 of two hosts each
    }
    let mut p = parts(hs);
    p.instances = vec![
        inst(10, 3, 1),
        inst(11, 4, 1),
        inst(12, 5, 1),
        inst(13, 1, 2),
    ];
    let s = Snapshot::new(p);
    let a = allocator_for("userconcentratedpod_firstfit").unwrap();
    assert_eq!(order(&s, &req(), a), vec![3, 4, 5, 6, 1, 2]);
    let a = allocator_for("userconcentratedpod_random").unwrap();
    let got = order(&s, &req(), a);
    let mut head = got[..2].to_vec();
    head.sort_unstable();
    assert_eq!(head, vec![3, 4], "pod 2 first, shuffled within: {got:?}");
}

#[test]
fn least_and_most_consumed() {
    let mut p = parts((1..=3).map(|i| host(i, 1)).collect());
    // CPU used: host 1 3000, host 2 1000, host 3 2000 MHz;
    // memory used: host 1 1024, host 2 3072, host 3 2048 MB.
    let mut add = |id: Id, h: Id, cpu: u32, mem: u64| {
        let mut i = inst(id, h, 2);
        i.cpu_speed_mhz = cpu;
        i.memory_mb = mem;
        p.instances.push(i);
    };
    add(10, 1, 3000, 1024);
    add(11, 2, 1000, 3072);
    add(12, 3, 2000, 2048);
    let s = Snapshot::new(p.clone());
    let least = allocator_for("firstfitleastconsumed").unwrap();
    let horizontal = allocator_for("horizontal").unwrap();
    let vertical = allocator_for("vertical").unwrap();
    assert_eq!(order(&s, &req(), least), vec![2, 3, 1]);
    assert_eq!(order(&s, &req(), horizontal), vec![2, 3, 1]);
    assert_eq!(order(&s, &req(), vertical), vec![1, 3, 2]);
    // host.capacityType.to.order.clusters = RAM.
    p.settings.capacity_type_to_order = CapacityType::Ram;
    let s = Snapshot::new(p);
    assert_eq!(order(&s, &req(), least), vec![1, 3, 2]);
    assert_eq!(order(&s, &req(), vertical), vec![2, 3, 1]);
}

#[test]
fn allocator_names() {
    for name in ALLOCATOR_NAMES {
        let a = allocator_for(name).unwrap_or_else(|| panic!("{name}"));
        if *name != "horizontal" {
            assert_eq!(a.name(), *name);
        }
    }
    assert_eq!(allocator_for(" FirstFit ").unwrap().name(), "firstfit");
    assert!(allocator_for("bestfit").is_none());
    // The default setting names a real policy.
    assert!(allocator_for(&Settings::default().allocation_algorithm).is_some());
}

/// A policy outside the built-ins: the trait is all it takes.
struct HighestIdFirst;
impl Allocator for HighestIdFirst {
    fn name(&self) -> &'static str {
        "highest-id"
    }
    fn key(&self, _: &AllocContext<'_>, h: &HostCandidate<'_>) -> AllocKey {
        (-h.host.id, 0)
    }
}

#[test]
fn custom_allocators_plug_in() {
    let s = Snapshot::new(parts((1..=3).map(|i| host(i, 1)).collect()));
    let p = plan(&s, &req(), &HighestIdFirst).unwrap();
    assert_eq!((p.host_id, p.allocator), (3, "highest-id"));
}

// ---- plan / rank / dry_run agree ----

#[test]
fn plan_rank_and_dry_run_agree() {
    let mut hs: Vec<Host> = (1..=6).map(|i| host(i, 1)).collect();
    hs[1].status = HostStatus::Down;
    hs[4].gpu_devices = 1;
    let mut p = parts(hs);
    p.instances = vec![inst(10, 3, 1)];
    let s = Snapshot::new(p);
    let a = allocator_for("userdispersing").unwrap();
    let p = plan(&s, &req(), a).unwrap();
    let ranked = order(&s, &req(), a);
    let v = dry_run(&s, &req(), a);
    assert_eq!(p.host_id, ranked[0]);
    assert_eq!(p.eligible_hosts, ranked.len());
    let eligible: Vec<Id> = v
        .iter()
        .filter(|v| v.is_eligible())
        .map(|v| v.host_id)
        .collect();
    assert_eq!(eligible, ranked);
    assert_eq!(ranked, vec![1, 4, 6, 3, 5]);
    assert_eq!(v.last().unwrap().host_id, 2);
}

// ---- rejection wording ----

#[test]
fn rejection_text_groups_reasons_largest_first() {
    let mut hs: Vec<Host> = (1..=6).map(|i| host(i, 1)).collect();
    for h in &mut hs {
        h.tags = vec!["ssd".into()];
    }
    hs[3].tags = vec![];
    hs[4].tags = vec!["hdd".into()];
    let mut p = parts(hs);
    p.affinity_groups = vec![group(3, AffinityKind::HostAntiAffinity)];
    // Free memory: host 1 1024 MB, host 2 2048 MB, host 3 512 MB.
    let mut fill = |id: Id, h: Id, mb: u64| {
        let mut i = inst(id, h, 2);
        i.memory_mb = mb;
        p.instances.push(i);
    };
    fill(30, 1, 16384 - 1024);
    fill(31, 2, 16384 - 2048);
    fill(32, 3, 16384 - 512);
    let mut member = inst(17, 6, 1);
    member.affinity_group_ids = vec![3];
    p.instances.push(member);
    let s = Snapshot::new(p);
    let mut r = req();
    r.memory_mb = 4096;
    r.host_tags = vec!["ssd".into()];
    r.affinity_group_ids = vec![3];
    let err = plan(&s, &r, ff()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "3 hosts: not enough free memory (need 4096 MB, most free 2048 MB); \
         2 hosts: missing host tag 'ssd'; \
         1 host: host anti-affinity with instance 17"
    );
    assert_eq!(err.hosts_in_scope, 6);
    assert_eq!(err.groups.iter().map(|g| g.count).sum::<usize>(), 6);
    assert_eq!(err.count_where(|r| matches!(r, Reason::Memory { .. })), 3);
}

#[test]
fn long_id_lists_are_cut() {
    let mut p = parts((1..=7).map(|i| host(i, 1)).collect());
    p.affinity_groups = vec![group(3, AffinityKind::HostAntiAffinity)];
    for h in 1..=7 {
        let mut i = inst(100 + h, h, 1);
        i.affinity_group_ids = vec![3];
        p.instances.push(i);
    }
    let s = Snapshot::new(p);
    let mut r = req();
    r.affinity_group_ids = vec![3];
    assert_eq!(
        plan(&s, &r, ff()).unwrap_err().to_string(),
        "7 hosts: host anti-affinity with instances 101, 102, 103, 104, 105 and 2 more"
    );
}

#[test]
fn reason_texts() {
    let cases: Vec<(Reason, &str)> = vec![
        (
            Reason::OutsideScope {
                level: Level::Pod,
                wanted: 4,
            },
            "not in the requested pod 4",
        ),
        (
            Reason::HostNotUp {
                status: HostStatus::Alert,
            },
            "host is Alert, not Up",
        ),
        (
            Reason::HostNotEnabled {
                state: ResourceState::Disabled,
            },
            "host is disabled",
        ),
        (
            Reason::HostNotEnabled {
                state: ResourceState::Maintenance,
            },
            "host is in Maintenance",
        ),
        (
            Reason::CpuCores { need: 8, have: 4 },
            "not enough CPU cores (need 8, host has 4)",
        ),
        (
            Reason::Memory {
                need_mb: 4096,
                free_mb: 100,
            },
            "not enough free memory (need 4096 MB, free 100 MB)",
        ),
        (
            Reason::AntiAffinity {
                group: 1,
                instance: 17,
            },
            "host anti-affinity with instance 17",
        ),
        (
            Reason::Affinity { group: 1, host: 4 },
            "host affinity with instances on host 4",
        ),
        (
            Reason::MaxGuests { limit: 50 },
            "host runs its maximum of 50 instances",
        ),
    ];
    for (r, text) in cases {
        assert_eq!(r.to_string(), text);
    }
}

#[test]
fn parsers_accept_cloudstack_spellings() {
    assert_eq!(HostStatus::parse("Up"), HostStatus::Up);
    assert_eq!(HostStatus::parse("disconnected"), HostStatus::Disconnected);
    assert_eq!(HostStatus::parse("weird"), HostStatus::Unknown);
    assert_eq!(
        ResourceState::parse("PrepareForMaintenance"),
        ResourceState::PrepareForMaintenance
    );
    assert_eq!(AllocationState::parse("Enabled"), AllocationState::Enabled);
    assert_eq!(
        AllocationState::parse("Disabled"),
        AllocationState::Disabled
    );
    assert_eq!(
        AffinityKind::parse("non-strict host anti-affinity"),
        Some(AffinityKind::NonStrictHostAntiAffinity)
    );
    assert_eq!(
        AffinityKind::parse("Host Affinity"),
        Some(AffinityKind::HostAffinity)
    );
    assert_eq!(AffinityKind::parse("ExplicitDedication"), None);
    assert_eq!(CapacityType::parse("ram"), CapacityType::Ram);
    assert_eq!(CapacityType::parse("CPU"), CapacityType::Cpu);
}

// ---- HA margin ----

#[test]
fn ha_capacity_leaves_one_host_spare() {
    assert_eq!(ha_capacity(5, 10), 40);
    assert_eq!(ha_capacity(1, 10), 0);
    assert_eq!(ha_capacity(0, 10), 0);
}

#[test]
fn ha_report_compares_instances_with_the_safe_figure() {
    let mut hs: Vec<Host> = (1..=4)
        .map(|i| host(i, if i <= 3 { 1 } else { 2 }))
        .collect();
    hs[3].max_guests = Some(2);
    let mut p = parts(hs);
    p.instances = (1..=5).map(|i| inst(i, 1 + (i % 3), 2)).collect();
    p.instances.push(inst(50, 4, 2));
    let mut unplaced = inst(51, 4, 2);
    unplaced.host_id = None;
    p.instances.push(unplaced);
    let s = Snapshot::new(p);
    let report = ha_report(&s, 2);
    assert_eq!(
        report,
        vec![
            ClusterHaReport {
                cluster_id: 1,
                hosts: 3,
                instances: 5,
                per_host_limit: 2,
                safe_instances: 4,
                headroom: -1,
            },
            ClusterHaReport {
                cluster_id: 2,
                hosts: 1,
                instances: 1,
                per_host_limit: 2,
                safe_instances: 0,
                headroom: -1,
            },
        ]
    );
    assert!(report[0].over_limit());
    assert_eq!(ha_report(&s, 10)[0].safe_instances, ha_capacity(3, 10));
    assert!(!ha_report(&s, 10)[0].at_limit());
}

#[test]
fn hosts_without_the_firmware_or_tpm_asked_for_are_skipped_with_the_reason() {
    let mut plain = host(1, 1);
    plain.uefi = true;
    let mut full = host(2, 1);
    full.uefi = true;
    full.secure_boot = true;
    full.tpm = true;
    let snap = Snapshot::new(parts(vec![plain, full]));
    let mut r = req();
    r.needs_uefi = true;
    r.needs_secure_boot = true;
    r.needs_tpm = true;
    assert_eq!(plan(&snap, &r, ff()).unwrap().host_id, 2);
    let verdicts = dry_run(&snap, &r, ff());
    let text = format!("{:?}", verdicts.iter().find(|v| v.host_id == 1).unwrap());
    assert!(
        text.contains("secure boot") && text.contains("swtpm"),
        "{text}"
    );
    r.host_id = Some(1);
    r.caller_is_admin = true;
    let err = plan(&snap, &r, ff()).unwrap_err();
    assert!(
        err.to_string().contains("UEFI secure boot firmware"),
        "{err}"
    );
}
