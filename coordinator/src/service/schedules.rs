//! Cron-scheduled lifecycle actions on instances (the specification's
//! "Scheduling operations on an Instance") and the scheduler that also
//! drives lease expiry.
//!
//! Due work is found through two in-memory due-indexes (min-heaps keyed by
//! due time), filled from the store at the first tick: one tick costs
//! O(k log n) for k due items, never a scan of all schedules or leases.
//!
//! Restart safety: each schedule's next due time is persisted. When it fires,
//! the new next due time, the event and the action's job are committed in one
//! transaction, so a firing is never repeated. After downtime the catch-up
//! rule (`orrery_schedule::plan::catch_up`) applies to whatever fell due
//! meanwhile: a missed time within the grace window (five minutes) runs once,
//! several missed times run only once, and older ones are skipped with an
//! event; either way the schedule then waits for its next future time.

use super::jobs::Work;
use super::leases::ts;
use super::*;
use chrono::{DateTime, TimeDelta, Utc};
use orrery_model::Transition;
use orrery_schedule::due::{DueIndex, DueKey};
use orrery_schedule::plan::{
    self as sp, catch_up, default_catch_up_grace, resolve_collisions, Action, CatchUp, Firing,
};

/// The scheduler's in-memory state.
#[derive(Default)]
pub struct SchedState {
    loaded: bool,
    /// With a shared store: the schedule and instance generations and the
    /// time (s) the indexes were last loaded, to reload them after other
    /// coordinators' changes.
    loaded_gens: (u64, u64),
    loaded_at: i64,
    schedules: DueIndex,
    leases: DueIndex,
    next_lease_run: i64,
    next_event_run: i64,
}

impl SchedState {
    pub(crate) fn track_lease(&mut self, vm_id: i64, at: i64) {
        self.leases.upsert(DueKey::Lease(vm_id as u64), ts(at));
    }
    pub(crate) fn untrack_lease(&mut self, vm_id: i64) {
        self.leases.remove(DueKey::Lease(vm_id as u64));
    }
    pub(crate) fn forget_leases(&mut self) {
        self.leases.clear();
    }
    fn track_schedule(&mut self, id: i64, at: Option<i64>) {
        match at {
            Some(t) => self.schedules.upsert(DueKey::Schedule(id as u64), ts(t)),
            None => {
                self.schedules.remove(DueKey::Schedule(id as u64));
            }
        }
    }
}

/// What one tick did, for tests and logs.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TickReport {
    pub fired: Vec<i64>,
    pub skipped: Vec<i64>,
    pub leases_checked: usize,
    pub expiring_events: usize,
    /// Recurring volume snapshots started (snapshot policies).
    pub snapshots_started: usize,
}

/// A stored schedule as the rules see it.
pub fn plan_of(s: &VmSchedule) -> SResult<sp::Schedule> {
    let bad = |what: &str| ServiceError::internal(format!("stored schedule {} has {what}", s.uuid));
    Ok(sp::Schedule {
        id: s.id as u64,
        vm_id: s.vm_id as u64,
        action: Action::parse(&s.action).map_err(|_| bad("a bad action"))?,
        cron: s
            .schedule
            .parse()
            .map_err(|_| bad("a bad cron expression"))?,
        tz: sp::parse_timezone(&s.timezone).map_err(|_| bad("a bad time zone"))?,
        start: ts(s.start_date),
        end: s.end_date.map(ts),
        enabled: s.enabled,
        description: s.description.clone(),
    })
}

/// A schedule rule broken by a request: 431 naming the parameter.
pub fn plan_error(e: &sp::PlanError) -> ServiceError {
    ServiceError::invalid(format!(
        "Invalid value for parameter {}: {e}",
        e.parameter()
    ))
}

fn work_for(action: Action, vm_id: i64) -> (Transition, Work, &'static str) {
    match action {
        Action::Start => (
            Transition::BeginStart,
            Work::Start {
                vm_id,
                pin: Default::default(),
            },
            "startVirtualMachine",
        ),
        Action::Stop | Action::ForceStop => (
            Transition::BeginStop,
            Work::Stop {
                vm_id,
                forced: action == Action::ForceStop,
            },
            "stopVirtualMachine",
        ),
        Action::Reboot | Action::ForceReboot => (
            Transition::Reboot,
            Work::Reboot { vm_id },
            "rebootVirtualMachine",
        ),
    }
}

fn event_for(action: Action) -> &'static str {
    match action {
        Action::Start => "VM.START",
        Action::Stop | Action::ForceStop => "VM.STOP",
        Action::Reboot | Action::ForceReboot => "VM.REBOOT",
    }
}

impl Context {
    /// The scheduler's clock (simulated in tests).
    pub fn clock_now(&self) -> DateTime<Utc> {
        self.clock.read().now()
    }

    pub fn set_clock(&self, c: Arc<dyn orrery_schedule::clock::Clock>) {
        *self.clock.write() = c;
    }
}

/// The schedules part of the service: instances' cron schedules (create,
/// update, list, delete) and the scheduler's due-indexes of schedules and
/// leases. Firing what falls due is the service's (`scheduler_tick`): it
/// queues instance jobs.
pub struct Schedules {
    ctx: Arc<Context>,
    /// Due schedules and leases.
    pub(crate) state: tokio::sync::Mutex<SchedState>,
}

super::context::part_of_service!(Schedules);

impl Schedules {
    pub(in crate::service) fn new(ctx: Arc<Context>) -> Self {
        Schedules {
            ctx,
            state: tokio::sync::Mutex::new(SchedState::default()),
        }
    }

    /// Creates a schedule; it first falls due after its start date.
    pub async fn create_schedule(
        &self,
        caller: &Caller,
        vm: &Vm,
        req: &sp::CreateRequest<'_>,
    ) -> SResult<VmSchedule> {
        let now = self.clock_now();
        let spec = sp::validate_create(req, now).map_err(|e| plan_error(&e))?;
        let mut rec = VmSchedule {
            id: self.store.new_id::<VmSchedule>().await?,
            uuid: new_uuid(),
            version: 1,
            vm_id: vm.id,
            account_id: vm.account_id,
            domain_id: vm.domain_id,
            action: spec.action.as_str().to_string(),
            schedule: spec.cron.as_str().to_string(),
            timezone: spec.tz.name().to_string(),
            description: spec.description.clone(),
            start_date: spec.start.timestamp(),
            end_date: spec.end.map(|e| e.timestamp()),
            enabled: spec.enabled,
            next_due: None,
            last_fired: None,
            created: now.timestamp(),
        };
        let plan = spec.into_schedule(rec.id as u64, vm.id as u64);
        rec.next_due = plan.next_fire(now).map(|t| t.timestamp());
        let mut tx = Tx::new();
        tx.insert(&rec);
        self.event(
            &mut tx,
            caller,
            "VMSCHEDULE.CREATE",
            format!("Created schedule {} for instance {}", rec.uuid, vm.uuid),
            vm.account_id,
            vm.domain_id,
            Some((&vm.uuid, "VirtualMachine", &vm.name)),
        );
        self.store.commit(tx.ops).await?;
        self.state.lock().await.track_schedule(rec.id, rec.next_due);
        Ok(rec)
    }

    pub async fn update_schedule(
        &self,
        caller: &Caller,
        mut rec: VmSchedule,
        req: &sp::UpdateRequest<'_>,
    ) -> SResult<VmSchedule> {
        let now = self.clock_now();
        let plan = sp::validate_update(&plan_of(&rec)?, req, now).map_err(|e| plan_error(&e))?;
        rec.schedule = plan.cron.as_str().to_string();
        rec.timezone = plan.tz.name().to_string();
        rec.description = plan.description.clone();
        rec.start_date = plan.start.timestamp();
        rec.end_date = plan.end.map(|e| e.timestamp());
        rec.enabled = plan.enabled;
        rec.next_due = plan.next_fire(now).map(|t| t.timestamp());
        let mut tx = Tx::new();
        tx.update(&mut rec);
        self.event(
            &mut tx,
            caller,
            "VMSCHEDULE.UPDATE",
            format!("Updated schedule {}", rec.uuid),
            rec.account_id,
            rec.domain_id,
            None,
        );
        self.store.commit(tx.ops).await?;
        self.state.lock().await.track_schedule(rec.id, rec.next_due);
        Ok(rec)
    }

    /// An instance's schedules, filtered and paged; the caller must own
    /// the instance (or administer its owner).
    pub async fn list_schedules(
        &self,
        caller: &Caller,
        vm: &Vm,
        f: &ScheduleFilter,
    ) -> SResult<(Vec<VmSchedule>, u64)> {
        self.check_owned(caller, vm).await?;
        let mut q = Query::new().eq(Col::Parent, vm.id);
        if let Some(id) = &f.id {
            q = q.eq(Col::Uuid, id.as_str());
        }
        if let Some(a) = &f.action {
            q = q.and(Cond::EqNoCase(Col::Name, a.clone()));
        }
        if let Some(e) = f.enabled {
            q = q.eq(Col::State, if e { "Enabled" } else { "Disabled" });
        }
        if let Some(k) = &f.keyword {
            q = q.and(Cond::Contains(vec![Col::Keyword], k.clone()));
        }
        q.page = f.page;
        Ok(self.store.list::<VmSchedule>(&q).await?)
    }

    /// Deletes schedules of an instance by uuid, or all of them when none
    /// is named; an unknown uuid deletes nothing.
    pub async fn delete_schedules_of(
        &self,
        caller: &Caller,
        vm: &Vm,
        uuids: &[String],
    ) -> SResult<()> {
        self.check_owned(caller, vm).await?;
        let mut q = Query::new().eq(Col::Parent, vm.id);
        if !uuids.is_empty() {
            q = q.and(Cond::In(
                Col::Uuid,
                uuids.iter().cloned().map(Val::S).collect(),
            ));
        }
        let recs: Vec<VmSchedule> = self.store.all(q).await?;
        for u in uuids {
            if !recs.iter().any(|r| &r.uuid == u) {
                return Err(ServiceError::not_found("id", u));
            }
        }
        self.delete_schedules(caller, recs).await
    }

    pub async fn delete_schedules(&self, caller: &Caller, recs: Vec<VmSchedule>) -> SResult<()> {
        let mut tx = Tx::new();
        for r in &recs {
            tx.delete::<VmSchedule>(r.id);
            self.event(
                &mut tx,
                caller,
                "VMSCHEDULE.DELETE",
                format!("Deleted schedule {}", r.uuid),
                r.account_id,
                r.domain_id,
                None,
            );
        }
        self.store.commit(tx.ops).await?;
        let mut st = self.state.lock().await;
        for r in &recs {
            st.track_schedule(r.id, None);
        }
        Ok(())
    }

    /// Fills the due-indexes from the store.
    async fn load(&self, st: &mut SchedState) -> SResult<()> {
        let scheds: Vec<VmSchedule> = self
            .store
            .all(Query::new().eq(Col::State, "Enabled"))
            .await?;
        for s in &scheds {
            st.track_schedule(s.id, s.next_due);
        }
        let leased: Vec<Vm> = self
            .store
            .all(Query::new().and(Cond::NotNull(Col::LeaseExpiry)))
            .await?;
        for v in &leased {
            if let Some(t) = v.lease.expires() {
                st.track_lease(v.id, t);
            }
        }
        st.loaded = true;
        Ok(())
    }
}

impl Service {
    /// One pass of the scheduler at `now`: due schedules fire (or are skipped
    /// by the collision or catch-up rules), and, at their own intervals,
    /// expired leases run their action and expiry events are raised.
    pub async fn scheduler_tick(self: &Arc<Self>, now: DateTime<Utc>) -> SResult<TickReport> {
        let mut report = TickReport::default();
        let mut st = self.schedules.state.lock().await;
        if self.store.shared() && st.loaded {
            // Schedules (and leases, at most every 10 s) set through other
            // coordinators reach the indexes by reloading them.
            let gens = (
                self.store.generation(crate::store::Kind::VmSchedule),
                self.store.generation(crate::store::Kind::Vm),
            );
            if gens.0 != st.loaded_gens.0
                || (gens.1 != st.loaded_gens.1 && now.timestamp() - st.loaded_at >= 10)
            {
                st.loaded = false;
            }
        }
        if !st.loaded {
            st.schedules = DueIndex::default();
            st.leases.clear();
            st.loaded_gens = (
                self.store.generation(crate::store::Kind::VmSchedule),
                self.store.generation(crate::store::Kind::Vm),
            );
            st.loaded_at = now.timestamp();
            self.schedules.load(&mut st).await?;
        }
        let due = st.schedules.pop_due(now);
        let lease_due = if now.timestamp() >= st.next_lease_run {
            st.next_lease_run =
                now.timestamp() + self.setting_i64("instance.lease.scheduler.interval").max(1);
            Some(st.leases.pop_due(now))
        } else {
            None
        };
        let events_due = now.timestamp() >= st.next_event_run;
        if events_due {
            st.next_event_run = now.timestamp()
                + self
                    .setting_i64("instance.lease.eventscheduler.interval")
                    .max(1);
        }
        drop(st);

        if !due.is_empty() {
            self.fire_schedules(due.into_iter().map(|d| d.key), now, &mut report)
                .await?;
        }
        if let Some(items) = lease_due {
            if self.leases_enabled() {
                let ids: Vec<i64> = items
                    .iter()
                    .filter_map(|d| match d.key {
                        DueKey::Lease(id) => Some(id as i64),
                        _ => None,
                    })
                    .collect();
                report.leases_checked = ids.len();
                self.expire_leases(ids, now.timestamp()).await?;
            } else {
                // Off: whatever is still active (set while running, or from
                // before a restart) is cancelled.
                self.cancel_all_leases().await?;
            }
        }
        if events_due && self.leases_enabled() {
            report.expiring_events = self.lease_expiring_events(now.timestamp()).await?;
        }
        report.snapshots_started = self.snapshot_policy_tick(now).await?;
        Ok(report)
    }

    async fn fire_schedules(
        self: &Arc<Self>,
        keys: impl Iterator<Item = DueKey>,
        now: DateTime<Utc>,
        report: &mut TickReport,
    ) -> SResult<()> {
        let mut recs = HashMap::new();
        let mut firings = Vec::new();
        for key in keys {
            let DueKey::Schedule(id) = key else { continue };
            let Some(rec) = self.store.load::<VmSchedule>(id as i64).await? else {
                continue;
            };
            let (Some(at), true) = (rec.next_due, rec.enabled) else {
                continue;
            };
            let plan = plan_of(&rec)?;
            match catch_up(&plan, ts(at), now, default_catch_up_grace()) {
                CatchUp::Pending { next } => {
                    self.schedules
                        .state
                        .lock()
                        .await
                        .track_schedule(rec.id, Some(next.timestamp()));
                }
                CatchUp::RunOnce { missed, .. } => {
                    firings.push(Firing {
                        schedule_id: rec.id as u64,
                        vm_id: rec.vm_id as u64,
                        action: plan.action,
                        at: missed,
                    });
                    recs.insert(rec.id, (rec, plan));
                }
                CatchUp::Skip { missed, next } => {
                    let note = format!(
                        "Schedule {} missed its time {} while the coordinator was down; skipped",
                        rec.uuid,
                        crate::api::render::date(missed.timestamp())
                    );
                    self.advance_schedule(rec, next, None, note).await?;
                    report.skipped.push(id as i64);
                }
            }
        }
        let c = resolve_collisions(firings);
        for f in c.run {
            let Some((rec, plan)) = recs.remove(&(f.schedule_id as i64)) else {
                continue;
            };
            let next = plan.next_fire(now);
            let id = rec.id;
            self.advance_schedule(rec, next, Some((plan.action, f.at)), String::new())
                .await?;
            report.fired.push(id);
        }
        for s in c.skipped {
            let Some((rec, plan)) = recs.remove(&(s.firing.schedule_id as i64)) else {
                continue;
            };
            let note = format!(
                "Schedule {} skipped: schedule {} of the same instance falls due at the same time and was created first",
                rec.uuid, s.ran_instead
            );
            let id = rec.id;
            self.advance_schedule(rec, plan.next_fire(now), None, note)
                .await?;
            report.skipped.push(id);
        }
        Ok(())
    }

    /// Persists a schedule's next due time together with its firing (event
    /// and job) or the note saying why it did not fire.
    async fn advance_schedule(
        self: &Arc<Self>,
        mut rec: VmSchedule,
        next: Option<DateTime<Utc>>,
        fire: Option<(Action, DateTime<Utc>)>,
        skip_note: String,
    ) -> SResult<()> {
        let caller = self.identity.system_caller().await?;
        let vm: Option<Vm> = self.store.load(rec.vm_id).await?;
        let mut tx = Tx::new();
        rec.next_due = next.map(|t| t.timestamp());
        let mut job = None;
        match (&vm, fire) {
            (Some(vm), Some((action, at))) if vm.removed.is_none() => {
                rec.last_fired = Some(at.timestamp());
                let (t, work, command) = work_for(action, vm.id);
                match Service::check_transition(vm, t) {
                    Ok(()) => {
                        let j = self.vm_job(&caller, vm, command, work);
                        tx.insert(&j);
                        job = Some(j);
                        self.event(
                            &mut tx,
                            &caller,
                            event_for(action),
                            format!(
                                "Scheduled {} of instance {} by schedule {}",
                                action.as_str(),
                                vm.uuid,
                                rec.uuid
                            ),
                            vm.account_id,
                            vm.domain_id,
                            Some((&vm.uuid, "VirtualMachine", &vm.name)),
                        );
                    }
                    Err(e) => self.event(
                        &mut tx,
                        &caller,
                        "VMSCHEDULE.SKIPPED",
                        format!("Schedule {} did not run: {}", rec.uuid, e.text()),
                        vm.account_id,
                        vm.domain_id,
                        Some((&vm.uuid, "VirtualMachine", &vm.name)),
                    ),
                }
            }
            (Some(vm), None) => self.event(
                &mut tx,
                &caller,
                "VMSCHEDULE.SKIPPED",
                skip_note,
                vm.account_id,
                vm.domain_id,
                Some((&vm.uuid, "VirtualMachine", &vm.name)),
            ),
            _ => {}
        }
        tx.update(&mut rec);
        self.store.commit(tx.ops).await?;
        if let Some(j) = job {
            self.spawn_job(j.uuid);
        }
        self.schedules
            .state
            .lock()
            .await
            .track_schedule(rec.id, rec.next_due);
        Ok(())
    }

    /// Runs the scheduler every second for as long as the process lives.
    pub fn start_scheduler(self: &Arc<Self>) {
        let svc = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                every.tick().await;
                if !svc.leads() {
                    // Another coordinator fires; on taking over, this one
                    // starts from what the store says then.
                    svc.schedules.state.lock().await.loaded = false;
                    continue;
                }
                if let Err(e) = svc.scheduler_tick(svc.clock_now()).await {
                    tracing::warn!(error = %e.text(), "scheduler tick failed");
                }
            }
        });
    }
}

/// A schedule's next time as seen from `now`, for display.
/// Filters of listVMSchedule.
#[derive(Debug, Clone, Default)]
pub struct ScheduleFilter {
    pub id: Option<String>,
    pub action: Option<String>,
    pub enabled: Option<bool>,
    pub keyword: Option<String>,
    pub page: Option<(u64, u64)>,
}

pub fn next_from(rec: &VmSchedule, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    plan_of(rec).ok()?.next_fire(now - TimeDelta::seconds(1))
}
