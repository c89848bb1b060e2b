//! Properties over random small clouds: a plan never over-commits a host, the
//! strict groups always hold, the non-strict priorities follow the seed's
//! arithmetic, and plan, rank, dry_run and the rejection agree.

use proptest::prelude::*;

use super::tests::{host, inst, parts};
use super::*;

const KINDS: [AffinityKind; 4] = [
    AffinityKind::HostAntiAffinity,
    AffinityKind::HostAffinity,
    AffinityKind::NonStrictHostAntiAffinity,
    AffinityKind::NonStrictHostAffinity,
];

#[derive(Debug, Clone)]
struct World {
    parts: SnapshotParts,
    req: Request,
    allocator: &'static str,
}

fn world() -> impl Strategy<Value = World> {
    let hosts = prop::collection::vec(
        (
            1u32..=16,      // cores
            1000u32..=3000, // MHz
            1u64..=32,      // GiB
            0u32..=2,       // GPUs
            prop::option::of(1i64..=3),
            prop::bool::weighted(0.9), // up
            1i64..=3,                  // cluster
            prop::bool::weighted(0.5), // tag "ssd"
        ),
        1..8,
    );
    let clusters = prop::collection::vec((1.0f64..3.0, 1.0f64..2.0, 0.5f64..1.0), 3);
    let instances = prop::collection::vec(
        (
            0usize..8,                  // host slot (modulo host count)
            prop::bool::weighted(0.85), // placed
            1i64..=3,                   // account
            1u32..=4,
            500u32..=2500,
            256u64..=8192,
            prop::collection::vec(1i64..=4, 0..3), // groups
        ),
        0..24,
    );
    let req = (
        (1i64..=3, 1u32..=8, 500u32..=3000, 256u64..=16384),
        prop::collection::vec(1i64..=4, 0..3),
        prop::option::of(0usize..24), // restart one of the instances
        prop::option::of(0usize..8),  // last host slot
        prop::bool::weighted(0.3),    // wants "ssd"
        0u32..=1,                     // GPUs
        any::<u64>(),
        prop::bool::weighted(0.5), // thresholds on
    );
    (
        hosts,
        clusters,
        instances,
        prop::collection::vec(0usize..4, 4),
        req,
        prop::sample::select(ALLOCATOR_NAMES),
    )
        .prop_map(|(hs, cl, is, kinds, r, allocator)| {
            let hosts: Vec<Host> = hs
                .iter()
                .enumerate()
                .map(|(i, &(cores, mhz, gib, gpus, os, up, cluster, ssd))| {
                    let mut h = host(i as Id + 1, cluster);
                    h.cpu_number = cores;
                    h.cpu_speed_mhz = mhz;
                    h.memory_bytes = gib << 30;
                    h.gpu_devices = gpus;
                    h.preferred_os_category = os;
                    if !up {
                        h.status = HostStatus::Down;
                    }
                    if ssd {
                        h.tags = vec!["ssd".into()];
                    }
                    h
                })
                .collect();
            let n = hosts.len();
            let mut p = parts(hosts);
            for c in &mut p.clusters {
                let (cf, mf, th) = cl[(c.id - 1) as usize];
                c.cpu_overprovisioning = cf;
                c.mem_overprovisioning = mf;
                c.cpu_disable_threshold = Some(th);
                c.mem_disable_threshold = Some(th);
            }
            p.affinity_groups = (1..=4)
                .map(|g| AffinityGroup {
                    id: g,
                    kind: KINDS[kinds[(g - 1) as usize]],
                    account_id: 1,
                })
                .collect();
            p.instances = is
                .iter()
                .enumerate()
                .map(|(i, (slot, placed, account, cores, mhz, mb, groups))| {
                    let mut x = inst(1000 + i as Id, (slot % n) as Id + 1, *account);
                    if !placed {
                        x.host_id = None;
                    }
                    x.cpu_number = *cores;
                    x.cpu_speed_mhz = *mhz;
                    x.memory_mb = *mb;
                    x.affinity_group_ids = groups.clone();
                    x
                })
                .collect();
            let ((account, cores, mhz, mb), groups, restart, last, ssd, gpus, seed, th) = r;
            p.settings.cluster_threshold_enabled = th;
            let vm_id = restart
                .filter(|&i| i < p.instances.len())
                .map(|i| 1000 + i as Id);
            let req = Request {
                vm_id,
                account_id: account,
                cpu_number: cores,
                cpu_speed_mhz: mhz,
                memory_mb: mb,
                host_tags: if ssd { vec!["ssd".into()] } else { vec![] },
                os_category: Some(2),
                gpu_count: gpus,
                affinity_group_ids: groups,
                zone_id: Some(1),
                last_host_id: last.map(|s| (s % n) as Id + 1),
                seed,
                ..Default::default()
            };
            World {
                parts: p,
                req,
                allocator,
            }
        })
}

/// Instances other than the one being placed, on `host`.
fn others_on<'a>(w: &'a World, host: Id) -> impl Iterator<Item = &'a Instance> + 'a {
    w.parts
        .instances
        .iter()
        .filter(move |i| i.host_id == Some(host) && Some(i.id) != w.req.vm_id)
}

fn kind_of(w: &World, g: Id) -> AffinityKind {
    w.parts
        .affinity_groups
        .iter()
        .find(|x| x.id == g)
        .unwrap()
        .kind
}

/// The seed's arithmetic, computed straight from the instance list.
fn expected_priority(w: &World, host: Id) -> i64 {
    let mut groups = w.req.affinity_group_ids.clone();
    groups.sort_unstable();
    groups.dedup();
    let mut p = 0;
    for g in groups {
        let step = match kind_of(w, g) {
            AffinityKind::NonStrictHostAntiAffinity => -1,
            AffinityKind::NonStrictHostAffinity => 1,
            _ => continue,
        };
        p += step
            * others_on(w, host)
                .filter(|i| i.affinity_group_ids.contains(&g))
                .count() as i64;
    }
    p
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn plans_respect_capacity_and_strict_groups(w in world()) {
        let s = Snapshot::new(w.parts.clone());
        let a = allocator_for(w.allocator).unwrap();
        let Ok(plan) = plan(&s, &w.req, a) else { return Ok(()) };
        let h = w.parts.hosts.iter().find(|h| h.id == plan.host_id).unwrap();
        let c = w.parts.clusters.iter().find(|c| c.id == h.cluster_id).unwrap();

        // Capacity with the over-provisioning factors.
        let cpu: u64 = others_on(&w, h.id).map(|i| i.cpu_mhz_total()).sum();
        let mem: u64 = others_on(&w, h.id).map(|i| i.memory_mb).sum();
        let gpus: u32 = others_on(&w, h.id).map(|i| i.gpu_count).sum();
        prop_assert!((cpu + w.req.cpu_mhz_total()) as f64
            <= h.cpu_mhz_total() as f64 * c.cpu_overprovisioning);
        prop_assert!((mem + w.req.memory_mb) as f64
            <= h.memory_mb_total() as f64 * c.mem_overprovisioning);
        prop_assert!(h.cpu_number >= w.req.cpu_number);
        prop_assert!(gpus + w.req.gpu_count <= h.gpu_devices || w.req.gpu_count == 0);
        prop_assert_eq!(h.status, HostStatus::Up);

        for &g in &w.req.affinity_group_ids {
            let members = || w.parts.instances.iter()
                .filter(move |i| Some(i.id) != w.req.vm_id && i.affinity_group_ids.contains(&g));
            match kind_of(&w, g) {
                // Strict anti-affinity never shares a host.
                AffinityKind::HostAntiAffinity => prop_assert!(
                    members().all(|m| m.host_id != Some(h.id))),
                // Strict affinity always co-locates with placed members.
                AffinityKind::HostAffinity => prop_assert!(
                    members().all(|m| m.host_id.is_none() || m.host_id == Some(h.id))),
                _ => {}
            }
        }

        // The non-strict priority is the seed's arithmetic, and no eligible
        // host has a higher one.
        prop_assert_eq!(plan.priority, expected_priority(&w, h.id));
        let verdicts = dry_run(&s, &w.req, a);
        for v in &verdicts {
            if let Outcome::Eligible { priority, .. } = v.outcome {
                prop_assert_eq!(priority, expected_priority(&w, v.host_id));
                prop_assert!(priority <= plan.priority);
            }
        }
    }

    #[test]
    fn plan_rank_dry_run_and_rejection_agree(w in world()) {
        let s = Snapshot::new(w.parts.clone());
        let a = allocator_for(w.allocator).unwrap();
        let verdicts = dry_run(&s, &w.req, a);
        prop_assert_eq!(verdicts.len(), w.parts.hosts.len());
        let eligible: Vec<Id> = verdicts.iter().filter(|v| v.is_eligible()).map(|v| v.host_id).collect();
        match (plan(&s, &w.req, a), rank(&s, &w.req, a)) {
            (Ok(p), Ok(r)) => {
                let ranked: Vec<Id> = r.iter().map(|x| x.host_id).collect();
                prop_assert_eq!(p.host_id, ranked[0]);
                prop_assert_eq!(p.eligible_hosts, ranked.len());
                prop_assert_eq!(&ranked, &eligible);
                // Ordered by priority, highest first.
                prop_assert!(r.windows(2).all(|x| x[0].priority >= x[1].priority));
            }
            (Err(e), Err(e2)) => {
                prop_assert_eq!(&e, &e2);
                prop_assert!(eligible.is_empty());
                let counted: usize = e.groups.iter().map(|g| g.count).sum();
                prop_assert_eq!(counted, e.hosts_in_scope);
                prop_assert_eq!(e.hosts_in_scope + e.hosts_out_of_scope, w.parts.hosts.len());
                prop_assert!(e.groups.windows(2).all(|x| x[0].count >= x[1].count));
                prop_assert!(!e.to_string().is_empty());
            }
            (p, r) => prop_assert!(false, "plan {:?} and rank {:?} disagree", p, r),
        }
    }

    #[test]
    fn snapshot_order_does_not_change_the_choice(w in world(), rot in 0usize..8) {
        let a = allocator_for(w.allocator).unwrap();
        let s = Snapshot::new(w.parts.clone());
        let mut shuffled = w.parts.clone();
        let n = shuffled.hosts.len();
        shuffled.hosts.rotate_left(rot % n);
        shuffled.instances.reverse();
        let s2 = Snapshot::new(shuffled);
        prop_assert_eq!(
            plan(&s, &w.req, a).map(|p| p.host_id).ok(),
            plan(&s2, &w.req, a).map(|p| p.host_id).ok()
        );
    }
}
