//! The capacity each host's instances hold, kept in memory and updated from
//! every committed instance change (see `store::observed`), so a placement
//! decision reads it in O(instances in the zone) without loading records.
//!
//! Commits can be reported out of order when two finish together, so each
//! entry keeps the record version it came from and an older report never
//! overwrites a newer one.

use crate::placement as pl;
use crate::store::observed::CommitObserver;
use crate::store::records::Vm;
use crate::store::{Kind, Op};
use orrery_model::VmState;
use parking_lot::Mutex;
use std::collections::HashMap;

/// States in which an instance holds capacity on its host.
pub(crate) fn holds_capacity(s: VmState) -> bool {
    matches!(
        s,
        VmState::Starting | VmState::Running | VmState::Stopping | VmState::Migrating
    )
}

struct Entry {
    version: i64,
    /// The zone and the instance as placement sees it, while it holds capacity.
    holding: Option<(i64, pl::Instance)>,
    /// While it migrates: the copy it holds on its destination, as its
    /// record says (so every coordinator counts it, and after a restart).
    arriving: Option<pl::Instance>,
}

#[derive(Default)]
pub struct CapacityView {
    entries: Mutex<HashMap<i64, Entry>>,
    /// Hosts chosen by placement whose Starting commit has not landed yet:
    /// they count as held, so the placement lock need not cover the commit.
    reserved: Mutex<HashMap<i64, (i64, pl::Instance)>>,
    /// Instances on their way to another host (live migration): held on the
    /// destination while their record still holds the source, as both
    /// hosts really carry them until the switch-over.
    moving: Mutex<HashMap<i64, (i64, pl::Instance)>>,
}

fn holding(vm: &Vm) -> Option<(i64, pl::Instance)> {
    if vm.host_id.is_none() || !holds_capacity(vm.state) || vm.removed.is_some() {
        return None;
    }
    Some((
        vm.zone_id,
        pl::Instance {
            id: vm.id,
            host_id: vm.host_id,
            account_id: vm.account_id,
            cpu_number: vm.cpu_number.max(0) as u32,
            cpu_speed_mhz: vm.cpu_speed.max(0) as u32,
            memory_mb: vm.memory.max(0) as u64,
            gpu_count: vm.gpu_count.max(0) as u32,
            vgpu_type: vm.vgpu_type.clone(),
            affinity_group_ids: vm.affinity_group_ids.clone(),
            os_category: None,
        },
    ))
}

/// The copy a migrating instance holds on its destination: a distinct id,
/// so its source entry stays counted too.
fn arriving(vm: &Vm, holding: &Option<(i64, pl::Instance)>) -> Option<pl::Instance> {
    let (_, i) = holding.as_ref()?;
    let dest = vm.migrating_to.filter(|_| vm.state == VmState::Migrating)?;
    (Some(dest) != i.host_id).then(|| pl::Instance {
        id: -i.id,
        host_id: Some(dest),
        ..i.clone()
    })
}

impl CapacityView {
    /// Records the state of an instance as of `version`, unless a newer one
    /// is known.
    pub fn observe(&self, vm: &Vm) {
        self.put_vm(vm.id, vm.version, vm);
    }

    /// An instance whose record is gone.
    pub fn forget(&self, id: i64) {
        self.put(id, i64::MAX, None, None);
    }

    /// Instances the view counts as holding capacity now.
    pub fn holders(&self) -> Vec<i64> {
        self.entries
            .lock()
            .iter()
            .filter(|(_, e)| e.holding.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    fn put_vm(&self, id: i64, version: i64, vm: &Vm) {
        let h = holding(vm);
        let a = arriving(vm, &h);
        self.put(id, version, h, a);
    }

    fn put(
        &self,
        id: i64,
        version: i64,
        holding: Option<(i64, pl::Instance)>,
        arriving: Option<pl::Instance>,
    ) {
        let mut m = self.entries.lock();
        match m.get(&id) {
            Some(e) if e.version >= version => {}
            _ => {
                m.insert(
                    id,
                    Entry {
                        version,
                        holding,
                        arriving,
                    },
                );
            }
        }
    }

    /// Instances holding capacity in a zone, reservations included.
    pub fn instances(&self, zone_id: i64) -> Vec<pl::Instance> {
        let m = self.entries.lock();
        let mut out: Vec<pl::Instance> = Vec::new();
        for e in m.values() {
            if let Some((z, i)) = &e.holding {
                if *z == zone_id {
                    out.push(i.clone());
                    out.extend(e.arriving.clone());
                }
            }
        }
        let r = self.reserved.lock();
        for (id, (z, i)) in r.iter() {
            let committed = m.get(id).is_some_and(|e| e.holding.is_some());
            if *z == zone_id && !committed {
                out.push(i.clone());
            }
        }
        for (id, (z, i)) in self.moving.lock().iter() {
            // Counted here only until the record holds the destination
            // (as its host, or as where it migrates to).
            let arrived = m.get(id).is_some_and(|e| {
                e.holding
                    .as_ref()
                    .is_some_and(|(_, held)| held.host_id == i.host_id)
                    || e.arriving.as_ref().is_some_and(|a| a.host_id == i.host_id)
            });
            if *z == zone_id && !arrived {
                // A distinct id: the record's entry stays counted too.
                out.push(pl::Instance {
                    id: -i.id,
                    ..i.clone()
                });
            }
        }
        out
    }

    /// Counts `vm` on `host` as well as where its record holds it, until
    /// `release_move`.
    pub fn reserve_move(&self, vm: &Vm, host_id: i64) {
        let mut v = vm.clone();
        v.host_id = Some(host_id);
        v.state = VmState::Running;
        if let Some(h) = holding(&v) {
            self.moving.lock().insert(vm.id, h);
        }
    }

    pub fn release_move(&self, vm_id: i64) {
        self.moving.lock().remove(&vm_id);
    }

    /// Counts `vm` on `host` until `release`, whatever the store says.
    pub fn reserve(&self, vm: &Vm, host_id: i64) {
        let mut v = vm.clone();
        v.host_id = Some(host_id);
        v.state = VmState::Starting;
        if let Some(h) = holding(&v) {
            self.reserved.lock().insert(vm.id, h);
        }
    }

    /// Ends a reservation; by then the commit it covered has either landed
    /// (and the entry holds the capacity) or failed.
    pub fn release(&self, vm_id: i64) {
        self.reserved.lock().remove(&vm_id);
    }
}

impl CommitObserver for CapacityView {
    fn wants(&self, kind: Kind) -> bool {
        kind == Kind::Vm
    }

    fn committed(&self, ops: &[Op]) {
        for op in ops {
            match op {
                Op::Insert { id, data, .. } => {
                    if let Ok(vm) = serde_json::from_str::<Vm>(data) {
                        self.put_vm(*id, 1, &vm);
                    }
                }
                Op::Update {
                    id, version, data, ..
                } => {
                    if let Ok(vm) = serde_json::from_str::<Vm>(data) {
                        self.put_vm(*id, version + 1, &vm);
                    }
                }
                // Removal is final: no later report may bring it back.
                Op::Delete { id, .. } => self.forget(*id),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(id: i64, state: VmState, host: Option<i64>) -> Vm {
        Vm {
            id,
            zone_id: 1,
            state,
            host_id: host,
            cpu_number: 2,
            memory: 512,
            ..Default::default()
        }
    }

    fn update(v: &Vm, version: i64) -> Op {
        Op::Update {
            kind: Kind::Vm,
            id: v.id,
            version,
            index: Default::default(),
            data: serde_json::to_string(v).unwrap(),
        }
    }

    #[test]
    fn follows_commits_and_ignores_older_reports() {
        let c = CapacityView::default();
        let running = vm(7, VmState::Running, Some(3));
        let stopped = vm(7, VmState::Stopped, None);
        c.committed(&[update(&running, 1)]);
        assert_eq!(c.instances(1).len(), 1);
        assert_eq!(c.instances(1)[0].host_id, Some(3));
        assert!(c.instances(2).is_empty());
        c.committed(&[update(&stopped, 2)]);
        assert!(c.instances(1).is_empty());
        // The Running report arriving late must not resurrect the capacity.
        c.committed(&[update(&running, 1)]);
        assert!(c.instances(1).is_empty());
    }

    #[test]
    fn a_reservation_counts_until_released_and_never_twice() {
        let c = CapacityView::default();
        let stopped = vm(4, VmState::Stopped, None);
        c.reserve(&stopped, 9);
        let held = c.instances(1);
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].host_id, Some(9));
        // The Starting commit lands while the reservation is still there.
        c.committed(&[update(&vm(4, VmState::Starting, Some(9)), 1)]);
        assert_eq!(c.instances(1).len(), 1);
        c.release(4);
        assert_eq!(c.instances(1).len(), 1);
        // A reservation whose commit failed leaves nothing behind.
        c.reserve(&vm(5, VmState::Stopped, None), 9);
        c.release(5);
        assert_eq!(c.instances(1).len(), 1);
    }

    #[test]
    fn a_migrating_record_holds_both_hosts_and_a_move_is_not_counted_twice() {
        let c = CapacityView::default();
        let mut m = vm(3, VmState::Migrating, Some(1));
        m.migrating_to = Some(2);
        m.version = 5;
        // Reserved before the Migrating commit, then the commit lands.
        c.reserve_move(&vm(3, VmState::Running, Some(1)), 2);
        c.observe(&m);
        let mut hosts: Vec<Option<i64>> = c.instances(1).iter().map(|i| i.host_id).collect();
        hosts.sort();
        assert_eq!(hosts, vec![Some(1), Some(2)]);
        c.release_move(3);
        assert_eq!(c.instances(1).len(), 2);
        // Arrived: only the destination.
        let mut done = vm(3, VmState::Running, Some(2));
        done.version = 6;
        c.observe(&done);
        let held = c.instances(1);
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].host_id, Some(2));
        assert_eq!(c.holders(), vec![3]);
        c.forget(3);
        assert!(c.instances(1).is_empty() && c.holders().is_empty());
    }

    #[test]
    fn deletes_are_final_and_non_holding_states_hold_nothing() {
        let c = CapacityView::default();
        c.observe(&Vm {
            version: 4,
            ..vm(1, VmState::Starting, Some(2))
        });
        c.observe(&Vm {
            version: 1,
            ..vm(2, VmState::Destroyed, Some(2))
        });
        assert_eq!(c.instances(1).len(), 1);
        c.committed(&[Op::Delete {
            kind: Kind::Vm,
            id: 1,
        }]);
        c.observe(&Vm {
            version: 9,
            ..vm(1, VmState::Running, Some(2))
        });
        assert!(c.instances(1).is_empty());
    }
}
