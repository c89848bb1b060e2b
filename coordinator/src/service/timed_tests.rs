//! Leases and schedules end to end inside one process, on simulated time: a
//! real SQLite store, the simulated hosts, and a manual clock driving the
//! scheduler's ticks.

use super::schedules::TickReport;
use super::vm::{DeployArgs, VmUpdate};
use super::*;
use crate::store::sqlite::SqliteStore;
use crate::store::Store;
use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use orrery_model::VmState;
use orrery_schedule::clock::ManualClock;
use orrery_schedule::lease::LeaseRequest;
use orrery_schedule::plan::{CreateRequest, UpdateRequest};
use std::path::PathBuf;

struct Fixture {
    dir: PathBuf,
    svc: Arc<Service>,
    clock: Arc<ManualClock>,
    admin: Caller,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap()
}

async fn service_on(dir: &std::path::Path, clock: Arc<ManualClock>) -> Arc<Service> {
    service_with(dir, clock, |s| s, std::time::Duration::ZERO).await
}

/// A service whose store is wrapped (to inject faults) and whose simulated
/// hosts take `delay` per power change.
async fn service_with(
    dir: &std::path::Path,
    clock: Arc<ManualClock>,
    wrap: impl FnOnce(crate::store::DynStore) -> crate::store::DynStore,
    delay: std::time::Duration,
) -> Arc<Service> {
    let store = SqliteStore::open(&dir.join("orrery.db")).await.unwrap();
    store.migrate().await.unwrap();
    let svc = Service::new(
        wrap(Arc::new(store)),
        Arc::new(agent::Simulator::new(delay)),
        dir.to_path_buf(),
    )
    .await
    .unwrap();
    svc.set_clock(clock);
    svc
}

async fn fixture() -> Fixture {
    fixture_with(|s| s, std::time::Duration::ZERO).await
}

async fn fixture_with(
    wrap: impl FnOnce(crate::store::DynStore) -> crate::store::DynStore,
    delay: std::time::Duration,
) -> Fixture {
    let dir = std::env::temp_dir().join(format!("orrery-timed-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    // The template's file, as registration would have left it.
    let tdir = dir.join("secondary/template/tmpl/1");
    std::fs::create_dir_all(&tdir).unwrap();
    std::fs::write(tdir.join("t.qcow2"), vec![0u8; 4096]).unwrap();
    let clock = Arc::new(ManualClock::new(t0()));
    let svc = service_with(&dir, clock.clone(), wrap, delay).await;
    svc.initialise(None).await.unwrap();
    svc.ensure_simulated_hosts(2, 0).await.unwrap();
    let admin = svc.identity.caller_for_user(2).await.unwrap();
    Fixture {
        dir,
        svc,
        clock,
        admin,
    }
}

fn set(svc: &Service, name: &str, value: &str) {
    svc.cache_setting("global", 0, name, value);
}

impl Fixture {
    async fn offering(&self, lease: Option<(i64, &str)>) -> ServiceOffering {
        let o = ServiceOffering {
            id: self.svc.store.new_id::<ServiceOffering>().await.unwrap(),
            uuid: new_uuid(),
            version: 1,
            name: "tiny".into(),
            display_text: "tiny".into(),
            cpu_number: Some(1),
            cpu_speed: Some(100),
            memory: Some(64),
            storage_type: "shared".into(),
            state: "Active".into(),
            lease_duration: lease.map(|l| l.0),
            lease_expiry_action: lease.map(|l| l.1.to_string()),
            ..Default::default()
        };
        let mut tx = Tx::new();
        tx.insert(&o);
        self.svc.store.commit(tx.ops).await.unwrap();
        o
    }

    async fn deploy(&self, offering: &ServiceOffering, lease: LeaseRequest) -> Vm {
        let vm = self.deploy_nowait(offering, lease).await;
        self.settle(vm.id, VmState::Running).await
    }

    /// Deploys and returns once the job is accepted.
    async fn deploy_nowait(&self, offering: &ServiceOffering, lease: LeaseRequest) -> Vm {
        let zone: Zone = self
            .svc
            .store
            .all(Query::new())
            .await
            .unwrap()
            .into_iter()
            .next()
            .unwrap();
        let t = Template {
            id: self.svc.store.new_id::<Template>().await.unwrap(),
            uuid: new_uuid(),
            version: 1,
            name: "t".into(),
            display_text: "t".into(),
            format: "QCOW2".into(),
            hypervisor: "Simulator".into(),
            os_type_id: 1,
            account_id: self.admin.account.id,
            domain_id: self.admin.domain.id,
            is_public: true,
            is_ready: true,
            status: "Download Complete".into(),
            size: 1 << 30,
            template_type: "USER".into(),
            path: Some("template/tmpl/1/t.qcow2".into()),
            bootable: true,
            ..Default::default()
        };
        let mut tx = Tx::new();
        tx.insert(&t);
        self.svc.store.commit(tx.ops).await.unwrap();
        let args = DeployArgs {
            zone,
            offering: offering.clone(),
            template: Some(t),
            iso: None,
            disk_offering: None,
            owner: self.admin.account.clone(),
            name: None,
            display_name: None,
            group: None,
            details: Default::default(),
            root_disk_size_gb: None,
            data_disk_size_gb: None,
            keypairs: vec![],
            ssh_public_keys: vec![],
            userdata: None,
            userdata_ref: None,
            userdata_details: Default::default(),
            userdata_id: None,
            post: false,
            extraconfig: None,
            start: true,
            pin: Default::default(),
            network: None,
            affinity_groups: vec![],
            ha_enable: None,
            dynamically_scalable: None,
            display_vm: true,
            lease,
        };
        let (vm, _) = self.svc.deploy(&self.admin, args).await.unwrap();
        vm
    }

    /// Waits for the instance's jobs to bring it to `state`.
    async fn settle(&self, id: i64, state: VmState) -> Vm {
        for _ in 0..200 {
            let vm: Vm = self.svc.store.load(id).await.unwrap().unwrap();
            if vm.state == state && !self.svc.busy.lock().contains(&vm.uuid) {
                return vm;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        let vm: Vm = self.svc.store.load(id).await.unwrap().unwrap();
        let jobs: Vec<Job> = self.svc.store.all(Query::new()).await.unwrap();
        panic!(
            "instance {id} never reached {state:?}: {:?}; jobs {:?}",
            vm.state,
            jobs.iter()
                .map(|j| (&j.command, &j.result))
                .collect::<Vec<_>>()
        );
    }

    async fn vm(&self, id: i64) -> Vm {
        self.svc.store.load(id).await.unwrap().unwrap()
    }

    async fn tick(&self, at: DateTime<Utc>) -> TickReport {
        self.clock.set(at);
        self.svc.scheduler_tick(at).await.unwrap()
    }

    async fn events(&self, event_type: &str) -> Vec<Event> {
        self.svc
            .store
            .all(Query::new().eq(Col::Name, event_type))
            .await
            .unwrap()
    }
}

fn lease(days: i64, action: &str) -> LeaseRequest {
    leases::request(Some(days), Some(action)).unwrap()
}

#[tokio::test]
async fn lease_rules_at_deploy_and_update() {
    let f = fixture().await;
    let plain = f.offering(None).await;
    let leasing = f.offering(Some((20, "DESTROY"))).await;
    // Feature off: no lease whatever is asked.
    let vm = f.deploy(&plain, lease(10, "STOP")).await;
    assert_eq!(vm.lease, Lease::None);
    set(&f.svc, "instance.lease.enabled", "true");
    // Asked at deploy.
    let vm = f.deploy(&plain, lease(10, "STOP")).await;
    assert_eq!(
        vm.lease,
        Lease::Active {
            days: 10,
            action: "STOP".into(),
            expires: vm.created + 10 * 86_400
        }
    );
    // Inherited from the offering, overridden, and disabled with -1.
    let inherited = f.deploy(&leasing, LeaseRequest::default()).await;
    assert!(
        matches!(&inherited.lease, Lease::Active { days: 20, action, .. } if action == "DESTROY")
    );
    let overridden = f.deploy(&leasing, lease(5, "STOP")).await;
    assert!(matches!(&overridden.lease, Lease::Active { days: 5, action, .. } if action == "STOP"));
    let none = f
        .deploy(&leasing, leases::request(Some(-1), None).unwrap())
        .await;
    assert_eq!(none.lease, Lease::None);
    // No lease is acquired later by an edit.
    let err = f
        .svc
        .update_vm(
            &f.admin,
            none.clone(),
            VmUpdate {
                lease: lease(3, "STOP"),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(crate::error::ApiError::from(err.clone()).code, 431);
    assert!(f.vm(none.id).await.lease == Lease::None);
    // Changing the offering's lease leaves existing leases alone.
    let mut changed = leasing.clone();
    changed.lease_duration = Some(1);
    let mut tx = Tx::new();
    tx.update(&mut changed);
    f.svc.store.commit(tx.ops).await.unwrap();
    assert_eq!(f.vm(inherited.id).await.lease, inherited.lease);
    // Extend, then reduce, before expiry; then disable, never to come back.
    let v = f
        .svc
        .update_vm(
            &f.admin,
            f.vm(overridden.id).await,
            VmUpdate {
                lease: lease(30, "DESTROY"),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(
        matches!(&v.lease, Lease::Active { days: 30, expires, .. } if *expires == v.created + 30 * 86_400)
    );
    let v = f
        .svc
        .update_vm(
            &f.admin,
            v,
            VmUpdate {
                lease: lease(2, "STOP"),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(matches!(&v.lease, Lease::Active { days: 2, .. }));
    // A duration alone keeps the action.
    let v = f
        .svc
        .update_vm(
            &f.admin,
            v,
            VmUpdate {
                lease: leases::request(Some(4), None).unwrap(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(matches!(&v.lease, Lease::Active { days: 4, action, .. } if action == "STOP"));
    let v = f
        .svc
        .update_vm(
            &f.admin,
            v,
            VmUpdate {
                lease: leases::request(Some(-1), None).unwrap(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(v.lease, Lease::Disabled);
    assert_eq!(f.events("VM.LEASE.DISABLED").await.len(), 1);
    let err = f
        .svc
        .update_vm(
            &f.admin,
            v.clone(),
            VmUpdate {
                lease: lease(9, "STOP"),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(crate::error::ApiError::from(err.clone()).code, 431);
    assert!(err.text().contains("leaseduration"), "{}", err.text());
    assert_eq!(f.vm(v.id).await.lease, Lease::Disabled);
}

#[tokio::test]
async fn lease_stop_runs_once_at_expiry_and_annuls_the_lease() {
    let f = fixture().await;
    set(&f.svc, "instance.lease.enabled", "true");
    set(&f.svc, "instance.lease.scheduler.interval", "60");
    let o = f.offering(None).await;
    let vm = f.deploy(&o, lease(1, "STOP")).await;
    let expires = vm.lease.expires().unwrap();
    let r = f.tick(leases::ts(expires - 120)).await;
    assert_eq!(r.leases_checked, 0);
    assert_eq!(f.vm(vm.id).await.state, VmState::Running);
    let r = f.tick(leases::ts(expires + 30)).await;
    assert_eq!(r.leases_checked, 1);
    let v = f.settle(vm.id, VmState::Stopped).await;
    assert_eq!(v.lease, Lease::Expired);
    assert_eq!(f.events("VM.LEASE.EXPIRED").await.len(), 1);
    // Started again by the user, it stays up: the lease is gone.
    f.svc
        .queue_vm_job(
            &f.admin,
            &v,
            "startVirtualMachine",
            jobs::Work::Start {
                vm_id: v.id,
                pin: Default::default(),
            },
        )
        .await
        .unwrap();
    f.settle(vm.id, VmState::Running).await;
    f.tick(leases::ts(expires + 3600)).await;
    f.tick(leases::ts(expires + 7200)).await;
    assert_eq!(f.vm(vm.id).await.state, VmState::Running);
    assert_eq!(f.events("VM.LEASE.EXPIRED").await.len(), 1);
    // Nor does a restart bring it back.
    let svc2 = service_on(&f.dir, f.clock.clone()).await;
    svc2.scheduler_tick(leases::ts(expires + 9000))
        .await
        .unwrap();
    assert_eq!(f.events("VM.LEASE.EXPIRED").await.len(), 1);
}

#[tokio::test]
async fn lease_destroy_waits_for_delete_protection_to_go() {
    let f = fixture().await;
    set(&f.svc, "instance.lease.enabled", "true");
    set(&f.svc, "instance.lease.scheduler.interval", "60");
    let o = f.offering(None).await;
    let vm = f.deploy(&o, lease(1, "DESTROY")).await;
    let expires = vm.lease.expires().unwrap();
    let vm = f
        .svc
        .update_vm(
            &f.admin,
            vm,
            VmUpdate {
                delete_protection: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    f.tick(leases::ts(expires + 10)).await;
    let v = f.vm(vm.id).await;
    assert_eq!(v.state, VmState::Running);
    assert!(matches!(v.lease, Lease::Active { .. }));
    f.svc
        .update_vm(
            &f.admin,
            v,
            VmUpdate {
                delete_protection: Some(false),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    f.tick(leases::ts(expires + 100)).await;
    let v = f.settle(vm.id, VmState::Destroyed).await;
    assert_eq!(v.lease, Lease::Expired);
}

/// A guest that powers itself off while a job that leaves power alone (a
/// live scale) works on it: the event is left to the job, which does not
/// look at power, and taken once the job ends, so the record does not stay
/// Running until the host next reconnects.
#[tokio::test]
async fn a_power_off_during_a_scale_is_taken_once_the_job_ends() {
    let f = fixture_with(|s| s, std::time::Duration::from_millis(300)).await;
    let o = f.offering(None).await;
    let vm = f.deploy(&o, LeaseRequest::default()).await;
    let host = vm.host_id.unwrap();
    let size = reshape::NewSize {
        offering_id: o.id,
        cpu: 1,
        speed: 100,
        memory: 64,
        customized: false,
    };
    f.svc
        .queue_vm_job(
            &f.admin,
            &vm,
            "scaleVirtualMachine",
            jobs::Work::Scale { vm_id: vm.id, size },
        )
        .await
        .unwrap();
    until("the scale job runs", || f.svc.is_busy(&vm.uuid)).await;
    // The guest powers itself off; its host says so.
    f.svc
        .agents
        .stop(host, &vm.instance_name, true)
        .await
        .unwrap();
    let seen = hosts::DomainSeen {
        name: vm.instance_name.clone(),
        instance_uuid: Some(vm.uuid.clone()),
        power: agent::PowerState::Off,
    };
    f.svc.domain_event(host, &seen).await.unwrap();
    assert!(f.svc.is_busy(&vm.uuid), "the job outlived the event");
    assert_eq!(f.vm(vm.id).await.state, VmState::Running, "left to the job");
    let stopped = f.settle(vm.id, VmState::Stopped).await;
    assert_eq!(stopped.last_host_id, Some(host));
    assert!(f.svc.power_rechecks.lock().is_empty());
}

#[tokio::test]
async fn disabling_the_feature_cancels_leases_for_good() {
    let f = fixture().await;
    set(&f.svc, "instance.lease.enabled", "true");
    let o = f.offering(None).await;
    let a = f.deploy(&o, lease(3, "STOP")).await;
    let b = f.deploy(&o, lease(4, "DESTROY")).await;
    set(&f.svc, "instance.lease.enabled", "false");
    assert_eq!(f.svc.cancel_all_leases().await.unwrap(), 2);
    set(&f.svc, "instance.lease.enabled", "true");
    for id in [a.id, b.id] {
        assert_eq!(f.vm(id).await.lease, Lease::Cancelled);
    }
    assert_eq!(f.events("VM.LEASE.CANCELLED").await.len(), 2);
    // Their expiry passes without any action.
    f.tick(leases::ts(b.created + 5 * 86_400)).await;
    assert_eq!(f.vm(a.id).await.state, VmState::Running);
    assert_eq!(f.vm(b.id).await.state, VmState::Running);
}

#[tokio::test]
async fn expiring_events_come_days_before() {
    let f = fixture().await;
    set(&f.svc, "instance.lease.enabled", "true");
    let o = f.offering(None).await;
    f.deploy(&o, lease(10, "STOP")).await;
    f.deploy(&o, lease(3, "STOP")).await;
    let r = f.tick(t0() + TimeDelta::hours(1)).await;
    assert_eq!(r.expiring_events, 1, "only the lease within 7 days");
    assert_eq!(f.events("VM.LEASE.EXPIRING").await.len(), 1);
}

async fn schedule(f: &Fixture, vm: &Vm, action: &str, cron: &str, tz: &str) -> VmSchedule {
    f.svc
        .schedules
        .create_schedule(
            &f.admin,
            vm,
            &CreateRequest {
                schedule: cron,
                timezone: tz,
                action,
                start_date: None,
                end_date: None,
                description: None,
                enabled: None,
            },
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn a_schedule_fires_once_per_occurrence() {
    let f = fixture().await;
    let o = f.offering(None).await;
    let vm = f.deploy(&o, LeaseRequest::default()).await;
    let s = schedule(&f, &vm, "STOP", "*/5 * * * *", "UTC").await;
    // Starts one minute from now; 09:00 is excluded, 09:05 is the first.
    assert_eq!(s.next_due, Some((t0() + TimeDelta::minutes(5)).timestamp()));
    assert!(s.description.starts_with("STOP"), "{}", s.description);
    assert!(f.tick(t0() + TimeDelta::minutes(4)).await.fired.is_empty());
    let r = f.tick(t0() + TimeDelta::minutes(5)).await;
    assert_eq!(r.fired, vec![s.id]);
    f.settle(vm.id, VmState::Stopped).await;
    // The same minute again fires nothing.
    let r = f
        .tick(t0() + TimeDelta::minutes(5) + TimeDelta::seconds(30))
        .await;
    assert!(r.fired.is_empty());
    let stored: VmSchedule = f.svc.store.load(s.id).await.unwrap().unwrap();
    assert_eq!(
        stored.next_due,
        Some((t0() + TimeDelta::minutes(10)).timestamp())
    );
    // A STOP on a stopped instance is recorded as not run.
    f.tick(t0() + TimeDelta::minutes(10)).await;
    assert_eq!(f.events("VMSCHEDULE.SKIPPED").await.len(), 1);
}

/// A coordinator on the PostgreSQL database `url`, on `clock`.
async fn pg_service(url: &str, clock: Arc<ManualClock>) -> (Arc<Service>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::postgres::PgStore::open(url).await.unwrap();
    store.migrate().await.unwrap();
    let svc = Service::new(
        Arc::new(store),
        Arc::new(agent::Simulator::new(std::time::Duration::ZERO)),
        dir.path().to_path_buf(),
    )
    .await
    .unwrap();
    svc.set_clock(clock);
    (svc, dir)
}

async fn until(what: &str, ok: impl Fn() -> bool) {
    for _ in 0..500 {
        if ok() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("{what} within 10 s");
}

/// Two coordinators on one PostgreSQL database (ORRERY_TEST_PG) and one
/// simulated clock, each ticking its scheduler only while it leads (as
/// `start_scheduler` does). The leader is dropped (its connections close,
/// as a killed process's do) and the survivor takes over after an
/// occurrence came due: every occurrence fires exactly once, that one
/// included. Then two tick at once whatever the lock says (a split brain):
/// still once each, the store's version check refusing the second.
#[tokio::test]
async fn a_schedule_fires_once_per_occurrence_across_a_leader_failover() {
    let Some(url) = crate::store::engine_tests::fresh_pg_database().await else {
        return;
    };
    let clock = Arc::new(ManualClock::new(t0()));
    let (a, _a_dir) = pg_service(&url, clock.clone()).await;
    a.initialise(None).await.unwrap();
    a.ensure_simulated_hosts(2, 0).await.unwrap();
    until("the first coordinator leads", || a.leads()).await;
    let (b, b_dir) = pg_service(&url, clock.clone()).await;
    assert!(!b.leads());
    let tdir = b_dir.path().join("secondary/template/tmpl/1");
    std::fs::create_dir_all(&tdir).unwrap();
    std::fs::write(tdir.join("t.qcow2"), vec![0u8; 4096]).unwrap();
    let f = Fixture {
        dir: b_dir.path().to_path_buf(),
        admin: b.identity.caller_for_user(2).await.unwrap(),
        svc: b.clone(),
        clock: clock.clone(),
    };
    let o = f.offering(None).await;
    let vm = f.deploy(&o, LeaseRequest::default()).await;
    let s = schedule(&f, &vm, "REBOOT", "* * * * *", "UTC").await;
    let first = DateTime::from_timestamp(s.next_due.unwrap(), 0).unwrap();

    // Fired per occurrence, by whoever fired it.
    let mut fired: Vec<(i64, &str)> = Vec::new();
    async fn tick_as_leader(svc: &Arc<Service>, at: DateTime<Utc>) -> bool {
        svc.leads() && !svc.scheduler_tick(at).await.unwrap().fired.is_empty()
    }
    for k in 0..3 {
        let at = first + TimeDelta::minutes(k) + TimeDelta::seconds(5);
        clock.set(at);
        for (name, svc) in [("a", &a), ("b", &b)] {
            if tick_as_leader(svc, at).await {
                fired.push((k, name));
            }
        }
        until("the reboot job ends", || a.busy.lock().is_empty()).await;
    }

    // Killed: nothing of it is left but its rows.
    until("the leader's jobs let go of it", || {
        Arc::strong_count(&a) == 1
    })
    .await;
    drop(a);
    until("the survivor takes over", || b.leads()).await;
    // The survivor's first tick comes 40 s after occurrence 3 was due.
    for k in 3..6 {
        let at = first + TimeDelta::minutes(k) + TimeDelta::seconds(40);
        clock.set(at);
        if tick_as_leader(&b, at).await {
            fired.push((k, "b"));
        }
        f.settle(vm.id, VmState::Running).await;
    }

    // Split brain: a third coordinator ticking at once with the leader.
    let (c, _c_dir) = pg_service(&url, clock.clone()).await;
    for k in 6..9 {
        let at = first + TimeDelta::minutes(k) + TimeDelta::seconds(5);
        clock.set(at);
        let (rb, rc) = tokio::join!(b.scheduler_tick(at), c.scheduler_tick(at));
        let by_b = rb.map(|r| !r.fired.is_empty()).unwrap_or(false);
        let by_c = rc.map(|r| !r.fired.is_empty()).unwrap_or(false);
        for (did, name) in [(by_b, "b"), (by_c, "c")] {
            if did {
                fired.push((k, name));
            }
        }
        until("the reboot jobs end", || {
            b.busy.lock().is_empty() && c.busy.lock().is_empty()
        })
        .await;
    }
    let per: Vec<i64> = fired.iter().map(|(k, _)| *k).collect();
    assert_eq!(per, (0..9).collect::<Vec<_>>(), "fired: {fired:?}");
    assert!(fired[..3].iter().all(|(_, by)| *by == "a"), "{fired:?}");
    assert!(fired[3..6].iter().all(|(_, by)| *by == "b"), "{fired:?}");
    let jobs: Vec<Job> = b.store.all(Query::new()).await.unwrap();
    let reboots = jobs
        .iter()
        .filter(|j| j.command.to_lowercase().contains("reboot"))
        .count();
    assert_eq!(reboots, 9, "one reboot job per occurrence");
    let stored: VmSchedule = b.store.load(s.id).await.unwrap().unwrap();
    assert_eq!(
        stored.next_due,
        Some((first + TimeDelta::minutes(9)).timestamp())
    );
}

#[tokio::test]
async fn colliding_schedules_run_only_the_first_created() {
    let f = fixture().await;
    let o = f.offering(None).await;
    let vm = f.deploy(&o, LeaseRequest::default()).await;
    let first = schedule(&f, &vm, "STOP", "0 10 * * *", "UTC").await;
    let second = schedule(&f, &vm, "REBOOT", "0 10 * * *", "UTC").await;
    let r = f.tick(t0() + TimeDelta::hours(1)).await;
    assert_eq!(r.fired, vec![first.id]);
    assert_eq!(r.skipped, vec![second.id]);
    f.settle(vm.id, VmState::Stopped).await;
    let ev = f.events("VMSCHEDULE.SKIPPED").await;
    assert!(
        ev[0].description.contains("created first"),
        "{}",
        ev[0].description
    );
}

#[tokio::test]
async fn daylight_saving_moves_the_utc_time_of_a_local_schedule() {
    let f = fixture().await;
    let o = f.offering(None).await;
    let vm = f.deploy(&o, LeaseRequest::default()).await;
    f.clock
        .set(Utc.with_ymd_and_hms(2026, 3, 28, 12, 0, 0).unwrap());
    // 02:30 Berlin does not exist on 2026-03-29 (clocks jump 02:00 -> 03:00).
    let s = schedule(&f, &vm, "REBOOT", "30 2 * * *", "Europe/Berlin").await;
    assert_eq!(
        s.next_due,
        Some(
            Utc.with_ymd_and_hms(2026, 3, 30, 0, 30, 0)
                .unwrap()
                .timestamp()
        ),
        "the skipped local time is not run; the next day is 02:30 CEST = 00:30 UTC"
    );
    let r = f
        .tick(Utc.with_ymd_and_hms(2026, 3, 30, 0, 30, 0).unwrap())
        .await;
    assert_eq!(r.fired, vec![s.id]);
    let stored: VmSchedule = f.svc.store.load(s.id).await.unwrap().unwrap();
    assert_eq!(
        stored.next_due,
        Some(
            Utc.with_ymd_and_hms(2026, 3, 31, 0, 30, 0)
                .unwrap()
                .timestamp()
        )
    );
}

#[tokio::test]
async fn after_downtime_a_missed_time_runs_at_most_once() {
    let f = fixture().await;
    let o = f.offering(None).await;
    let vm = f.deploy(&o, LeaseRequest::default()).await;
    let s = schedule(&f, &vm, "STOP", "* * * * *", "UTC").await;
    let due = s.next_due.unwrap();
    // "Restart": a new service on the same store, three minutes late (three
    // occurrences missed, the latest within the grace window).
    let svc2 = service_on(&f.dir, f.clock.clone()).await;
    let r = svc2.scheduler_tick(leases::ts(due + 150)).await.unwrap();
    assert_eq!(r.fired, vec![s.id]);
    f.settle(vm.id, VmState::Stopped).await;
    let stored: VmSchedule = svc2.store.load(s.id).await.unwrap().unwrap();
    assert_eq!(stored.next_due, Some(due + 180));
    // A daily time missed by half an hour (outside the five-minute window)
    // is skipped after a restart, with an event, and waits for tomorrow.
    let daily = schedule(&f, &vm, "START", "0 10 * * *", "UTC").await;
    let ten = t0() + TimeDelta::hours(1);
    assert_eq!(daily.next_due, Some(ten.timestamp()));
    let svc3 = service_on(&f.dir, f.clock.clone()).await;
    let r = svc3
        .scheduler_tick(ten + TimeDelta::minutes(30))
        .await
        .unwrap();
    assert!(!r.fired.contains(&daily.id));
    assert_eq!(r.skipped, vec![daily.id]);
    let stored: VmSchedule = svc3.store.load(daily.id).await.unwrap().unwrap();
    assert_eq!(
        stored.next_due,
        Some((ten + TimeDelta::days(1)).timestamp())
    );
    assert!(f.events("VMSCHEDULE.SKIPPED").await[0]
        .description
        .contains("while the coordinator was down"));
}

#[tokio::test]
async fn schedule_input_errors_name_the_parameter() {
    let f = fixture().await;
    let o = f.offering(None).await;
    let vm = f.deploy(&o, LeaseRequest::default()).await;
    let cases = [
        ("STOP", "61 * * * *", "UTC", None, None, "schedule"),
        ("STOP", "* * * * *", "Mars/Olympus", None, None, "timezone"),
        ("EXPLODE", "* * * * *", "UTC", None, None, "action"),
        (
            "STOP",
            "* * * * *",
            "UTC",
            Some("2020-01-01 00:00:00"),
            None,
            "startdate",
        ),
        (
            "STOP",
            "* * * * *",
            "UTC",
            None,
            Some("yesterday"),
            "enddate",
        ),
    ];
    for (action, cron, tz, start, end, param) in cases {
        let err = f
            .svc
            .schedules
            .create_schedule(
                &f.admin,
                &vm,
                &CreateRequest {
                    schedule: cron,
                    timezone: tz,
                    action,
                    start_date: start,
                    end_date: end,
                    description: None,
                    enabled: None,
                },
            )
            .await
            .unwrap_err();
        assert_eq!(
            crate::error::ApiError::from(err.clone()).code,
            431,
            "{param}: {}",
            err.text()
        );
        assert!(err.text().contains(param), "{param}: {}", err.text());
    }
    let s = f
        .svc
        .schedules
        .create_schedule(
            &f.admin,
            &vm,
            &CreateRequest {
                schedule: "0 0 * * *",
                timezone: "UTC",
                action: "START",
                start_date: None,
                end_date: Some("2026-12-31 00:00:00"),
                description: Some("nightly"),
                enabled: None,
            },
        )
        .await
        .unwrap();
    // The action cannot change and the end date cannot be removed.
    for (req, param) in [
        (
            UpdateRequest {
                action: Some("STOP"),
                ..Default::default()
            },
            "action",
        ),
        (
            UpdateRequest {
                end_date: Some(""),
                ..Default::default()
            },
            "enddate",
        ),
    ] {
        let err = f
            .svc
            .schedules
            .update_schedule(&f.admin, s.clone(), &req)
            .await
            .unwrap_err();
        assert_eq!(crate::error::ApiError::from(err.clone()).code, 431);
        assert!(err.text().contains(param), "{}", err.text());
    }
    let all: Vec<VmSchedule> = f.svc.store.all(Query::new()).await.unwrap();
    assert_eq!(all.len(), 1, "failed requests stored nothing");
}

/// A store whose commits fail while `full` is set, as SQLite's do when the
/// data disk is full; reads keep working.
struct FullDisk {
    inner: crate::store::DynStore,
    full: std::sync::atomic::AtomicBool,
    refused: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl crate::store::Store for FullDisk {
    async fn migrate(&self) -> Result<(), crate::store::StoreError> {
        self.inner.migrate().await
    }
    async fn is_initialised(&self) -> Result<bool, crate::store::StoreError> {
        self.inner.is_initialised().await
    }
    async fn get(
        &self,
        kind: crate::store::Kind,
        id: i64,
    ) -> Result<Option<crate::store::Row>, crate::store::StoreError> {
        self.inner.get(kind, id).await
    }
    async fn get_by_uuid(
        &self,
        kind: crate::store::Kind,
        uuid: &str,
    ) -> Result<Option<crate::store::Row>, crate::store::StoreError> {
        self.inner.get_by_uuid(kind, uuid).await
    }
    async fn find(
        &self,
        kind: crate::store::Kind,
        q: &Query,
    ) -> Result<(Vec<crate::store::Row>, u64), crate::store::StoreError> {
        self.inner.find(kind, q).await
    }
    async fn count(
        &self,
        kind: crate::store::Kind,
        q: &Query,
    ) -> Result<u64, crate::store::StoreError> {
        self.inner.count(kind, q).await
    }
    async fn allocate_ids(
        &self,
        kind: crate::store::Kind,
        n: i64,
    ) -> Result<i64, crate::store::StoreError> {
        self.inner.allocate_ids(kind, n).await
    }
    async fn commit(&self, ops: Vec<crate::store::Op>) -> Result<(), crate::store::StoreError> {
        if self.full.load(std::sync::atomic::Ordering::SeqCst) {
            self.refused
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            return Err(crate::store::StoreError::Db(
                "database or disk is full".into(),
            ));
        }
        self.inner.commit(ops).await
    }
    async fn size_bytes(&self) -> Result<u64, crate::store::StoreError> {
        self.inner.size_bytes().await
    }
    fn generation(&self, kind: crate::store::Kind) -> u64 {
        self.inner.generation(kind)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_leaves_no_job_pending_once_space_is_back() {
    use std::sync::atomic::Ordering;
    let disk: Arc<std::sync::OnceLock<Arc<FullDisk>>> = Arc::default();
    let slot = disk.clone();
    let f = fixture_with(
        move |inner| {
            let d = Arc::new(FullDisk {
                inner,
                full: false.into(),
                refused: 0.into(),
            });
            let _ = slot.set(d.clone());
            d
        },
        // Slow hosts, so the disk fills while the starts are on their way.
        std::time::Duration::from_millis(400),
    )
    .await;
    let disk = disk.get().unwrap().clone();
    let offering = f.offering(None).await;
    let mut vms = Vec::new();
    for _ in 0..6 {
        vms.push(f.deploy_nowait(&offering, LeaseRequest::default()).await);
    }
    disk.full.store(true, Ordering::SeqCst);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(
        disk.refused.load(Ordering::SeqCst) > 0,
        "nothing was refused"
    );
    disk.full.store(false, Ordering::SeqCst);
    // Once space is back every job completes and every instance settles:
    // Running where the host runs it, nothing Starting or Creating.
    let mut left = Vec::new();
    for _ in 0..400 {
        let jobs: Vec<Job> = f
            .svc
            .store
            .all(Query::new().eq(Col::State, JOB_PENDING.to_string()))
            .await
            .unwrap();
        left.clear();
        for v in &vms {
            let vm = f.vm(v.id).await;
            if vm.state.is_transitional() {
                left.push(vm.state);
            }
        }
        if jobs.is_empty() && left.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(left.is_empty(), "instances still transitional: {left:?}");
    let pending: Vec<Job> = f
        .svc
        .store
        .all(Query::new().eq(Col::State, JOB_PENDING.to_string()))
        .await
        .unwrap();
    assert!(pending.is_empty(), "{} jobs still pending", pending.len());
    // Capacity is held only by instances that hold a host.
    for v in &vms {
        let vm = f.vm(v.id).await;
        assert!(
            matches!(vm.state, VmState::Running | VmState::Stopped),
            "{:?}",
            vm.state
        );
        assert_eq!(vm.state == VmState::Running, vm.host_id.is_some());
    }
}

/// Waits until every job has finished.
async fn jobs_done(f: &Fixture) {
    for _ in 0..400 {
        let pending: Vec<Job> = f
            .svc
            .store
            .all(Query::new().eq(Col::State, JOB_PENDING.to_string()))
            .await
            .unwrap();
        if pending.is_empty() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("jobs never finished");
}

async fn live_snapshots(f: &Fixture, volume_id: i64) -> Vec<Snapshot> {
    let mut v: Vec<Snapshot> = f
        .svc
        .store
        .all(Query::new().eq(Col::Parent, volume_id))
        .await
        .unwrap();
    v.retain(|s| s.removed.is_none());
    v.sort_by_key(|s| s.id);
    v
}

/// An hourly policy on simulated time: it fires at its minute each hour,
/// never twice for one time, once after downtime however much was missed,
/// keeps only `maxsnaps` of its own and never touches a manual snapshot.
#[tokio::test]
async fn a_snapshot_policy_fires_on_schedule_and_keeps_maxsnaps() {
    let f = fixture().await;
    let offering = f.offering(None).await;
    let vm = f.deploy(&offering, LeaseRequest::default()).await;
    let vol: Volume = f
        .svc
        .store
        .all(Query::new().eq(Col::Parent, vm.id))
        .await
        .unwrap()
        .into_iter()
        .next()
        .unwrap();
    assert_eq!(vol.state, "Ready");
    // A manual one first: never counted by the policy.
    let (_, manual) = f
        .svc
        .create_snapshot(&f.admin, &vol, snapshots::NewSnapshot::default())
        .await
        .unwrap();
    jobs_done(&f).await;
    let policy = f
        .svc
        .create_snapshot_policy(
            &f.admin,
            &vol,
            snapshot_policies::NewPolicy {
                interval_type: "HOURLY".into(),
                schedule: "15".into(),
                timezone: "Europe/Berlin".into(),
                max_snaps: 3,
                for_display: true,
            },
        )
        .await
        .unwrap();
    // t0 is 09:00 UTC: the first time is 09:15.
    assert_eq!(
        policy.next_due,
        Some((t0() + TimeDelta::minutes(15)).timestamp())
    );
    assert_eq!(
        f.tick(t0() + TimeDelta::minutes(14))
            .await
            .snapshots_started,
        0
    );
    for hour in 0..5 {
        let at = t0() + TimeDelta::minutes(15) + TimeDelta::hours(hour);
        assert_eq!(f.tick(at).await.snapshots_started, 1, "hour {hour}");
        // The same instant again: nothing more.
        assert_eq!(f.tick(at).await.snapshots_started, 0);
        jobs_done(&f).await;
    }
    let snaps = live_snapshots(&f, vol.id).await;
    let hourly: Vec<&Snapshot> = snaps
        .iter()
        .filter(|s| s.snapshot_type == "HOURLY")
        .collect();
    assert_eq!(hourly.len(), 3, "{snaps:?}");
    assert!(hourly.iter().all(|s| s.state == "BackedUp"));
    // The newest three stayed.
    assert!(hourly.windows(2).all(|w| w[0].created <= w[1].created));
    assert!(
        snaps.iter().any(|s| s.id == manual.id),
        "the manual snapshot stays"
    );
    assert_eq!(f.events("SNAPSHOT.DELETE").await.len(), 2);

    // Down for a day and a half, back 30 minutes after a time: skipped
    // with an event, then the schedule goes on from there.
    let back = t0() + TimeDelta::hours(36) + TimeDelta::minutes(45);
    assert_eq!(f.tick(back).await.snapshots_started, 0);
    assert!(f
        .events("SNAPSHOT.CREATE")
        .await
        .iter()
        .any(|e| e.description.starts_with("Skipped the recurring snapshot")));
    let p: SnapshotPolicy = f.svc.store.load(policy.id).await.unwrap().unwrap();
    assert_eq!(
        p.next_due,
        Some((t0() + TimeDelta::hours(37) + TimeDelta::minutes(15)).timestamp())
    );
    // Down again, back 2 minutes after a time (several missed): once.
    let back = t0() + TimeDelta::hours(40) + TimeDelta::minutes(17);
    assert_eq!(f.tick(back).await.snapshots_started, 1);
    jobs_done(&f).await;
    let p: SnapshotPolicy = f.svc.store.load(policy.id).await.unwrap().unwrap();
    assert_eq!(
        p.next_due,
        Some((t0() + TimeDelta::hours(41) + TimeDelta::minutes(15)).timestamp())
    );
    assert_eq!(
        live_snapshots(&f, vol.id)
            .await
            .iter()
            .filter(|s| s.snapshot_type == "HOURLY")
            .count(),
        3
    );

    // A second HOURLY policy of the volume is the same policy, updated.
    let again = f
        .svc
        .create_snapshot_policy(
            &f.admin,
            &vol,
            snapshot_policies::NewPolicy {
                interval_type: "hourly".into(),
                schedule: "45".into(),
                timezone: "UTC".into(),
                max_snaps: 2,
                for_display: true,
            },
        )
        .await
        .unwrap();
    assert_eq!(again.id, policy.id);
    assert_eq!(again.schedule, "45");
}

/// A coordinator killed mid-snapshot: at the next start the snapshots left
/// mid-task are settled, so the instance is not refused further snapshot
/// tasks as concurrent for ever.
#[tokio::test]
async fn snapshots_left_mid_task_are_settled_at_start() {
    let f = fixture().await;
    let offering = f.offering(None).await;
    let vm = f.deploy(&offering, LeaseRequest::default()).await;
    let mut tx = Tx::new();
    for (i, state) in ["Creating", "Reverting"].iter().enumerate() {
        tx.insert(&VmSnapshot {
            id: f.svc.store.new_id::<VmSnapshot>().await.unwrap(),
            uuid: new_uuid(),
            name: format!("s{i}"),
            vm_id: vm.id,
            account_id: vm.account_id,
            domain_id: vm.domain_id,
            state: state.to_string(),
            ..Default::default()
        });
    }
    let vol: Volume = f
        .svc
        .store
        .all(Query::new().eq(Col::Parent, vm.id))
        .await
        .unwrap()
        .remove(0);
    tx.insert(&Snapshot {
        id: f.svc.store.new_id::<Snapshot>().await.unwrap(),
        uuid: new_uuid(),
        volume_id: vol.id,
        account_id: vm.account_id,
        domain_id: vm.domain_id,
        snapshot_type: "MANUAL".into(),
        state: "Creating".into(),
        ..Default::default()
    });
    f.svc.store.commit(tx.ops).await.unwrap();
    let refused = f
        .svc
        .create_vm_snapshot(&f.admin, &vm, &vmsnapshots::NewVmSnapshot::default())
        .await;
    assert!(refused.is_err());
    f.svc.recover_after_restart().await.unwrap();
    let mut states: Vec<String> = f
        .svc
        .vm_snapshots_of(vm.id)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.state)
        .collect();
    states.sort();
    assert_eq!(states, vec!["Error", "Ready"]);
    let snaps: Vec<Snapshot> = f
        .svc
        .store
        .all(Query::new().eq(Col::Parent, vol.id))
        .await
        .unwrap();
    assert_eq!(snaps[0].state, "Error");
    f.svc
        .create_vm_snapshot(&f.admin, &vm, &vmsnapshots::NewVmSnapshot::default())
        .await
        .unwrap();
    jobs_done(&f).await;
}
