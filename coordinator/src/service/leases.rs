//! Instance leases, as the specification's "Instance Lease" section says: a
//! lease is assigned only at deployment (from the deploy parameters or the
//! service offering), can be changed or disabled before it expires, runs its
//! action at most once, and is cancelled for good when the feature is
//! switched off. The rules themselves are pure (`orrery_schedule::lease`);
//! this module maps them onto records, events and jobs.
//!
//! At most once: the lease is marked expired in the same transaction that
//! queues the action's job, so a crash either does both or neither, and a
//! restart never finds an expired lease still active.

use super::jobs::Work;
use super::*;
use chrono::{DateTime, Utc};
use orrery_model::Transition;
use orrery_schedule::lease::{
    self as ls, ActiveLease, ExpiryDecision, LeaseAction, LeaseDuration, LeaseRequest, LeaseState,
    OfferingLease,
};

/// A lease rule broken by a request: 431 naming the parameter.
pub fn lease_error(e: &ls::LeaseError) -> ServiceError {
    ServiceError::invalid(format!(
        "Invalid value for parameter {}: {e}",
        e.parameter()
    ))
}

pub(crate) fn ts(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap_or_default()
}

fn action_of(s: &str) -> LeaseAction {
    LeaseAction::parse(s).unwrap_or(LeaseAction::Stop)
}

/// The stored lease as the rules see it.
pub fn state_of(l: &Lease) -> LeaseState {
    match l {
        Lease::None => LeaseState::None,
        Lease::Active {
            action, expires, ..
        } => LeaseState::Active(ActiveLease::restore(ts(*expires), action_of(action))),
        Lease::Disabled => LeaseState::Disabled,
        Lease::Expired => LeaseState::Expired,
        Lease::Cancelled => LeaseState::Cancelled,
    }
}

/// The rules' state as stored; `days` is the duration the user asked for.
fn stored(st: LeaseState, days: i64) -> Lease {
    match st {
        LeaseState::None => Lease::None,
        LeaseState::Active(a) => Lease::Active {
            days,
            action: a.action().as_str().to_string(),
            expires: a.expires().timestamp(),
        },
        LeaseState::Disabled => Lease::Disabled,
        LeaseState::Expired => Lease::Expired,
        LeaseState::Cancelled => Lease::Cancelled,
    }
}

/// `leaseduration` / `leaseexpiryaction` of a request, validated. A duration
/// may come without an action: the offering's (at deploy) or the lease's own
/// (on update) applies, and where there is none the deploy or update says so.
pub fn request(duration: Option<i64>, action: Option<&str>) -> SResult<LeaseRequest> {
    match ls::validate_lease_params(duration, action) {
        Err(ls::LeaseError::MissingAction) => Ok(LeaseRequest {
            duration: duration
                .map(LeaseDuration::parse)
                .transpose()
                .map_err(|e| lease_error(&e))?,
            action: None,
        }),
        other => other.map_err(|e| lease_error(&e)),
    }
}

fn missing_action() -> ServiceError {
    lease_error(&ls::LeaseError::MissingAction)
}

impl Service {
    pub(crate) fn leases_enabled(&self) -> bool {
        self.setting_bool("instance.lease.enabled")
    }

    /// The lease a new instance gets.
    pub(crate) fn lease_at_deploy(
        &self,
        offering: &ServiceOffering,
        req: LeaseRequest,
        now: i64,
    ) -> SResult<Lease> {
        let from_offering = match (offering.lease_duration, &offering.lease_expiry_action) {
            (Some(d), Some(a)) if d > 0 => Some(OfferingLease {
                days: d as u32,
                action: action_of(a),
            }),
            _ => None,
        };
        let days = match req.duration {
            Some(LeaseDuration::Days(d)) => i64::from(d),
            _ => from_offering.map(|o| i64::from(o.days)).unwrap_or(0),
        };
        let asked_days = matches!(req.duration, Some(LeaseDuration::Days(_)));
        if self.leases_enabled()
            && asked_days
            && req.action.or(from_offering.map(|o| o.action)).is_none()
        {
            return Err(missing_action());
        }
        let st = LeaseState::at_deploy(self.leases_enabled(), from_offering, req, ts(now));
        Ok(stored(st, days))
    }

    /// Applies `updateVirtualMachine`'s lease parameters to `vm`; the event
    /// to record, if any. Nothing changes while the feature is off.
    pub(crate) fn lease_update(
        &self,
        vm: &mut Vm,
        req: LeaseRequest,
        now: i64,
    ) -> SResult<Option<&'static str>> {
        if req.duration.is_none() || !self.leases_enabled() {
            return Ok(None);
        }
        // A new duration alone keeps the lease's action.
        let mut req = req;
        if req.action.is_none() {
            match &vm.lease {
                Lease::Active { action, .. } => req.action = Some(action_of(action)),
                _ if matches!(req.duration, Some(LeaseDuration::Days(_)))
                    && vm.lease == Lease::None =>
                {
                    return Err(lease_error(&ls::LeaseError::NoLease))
                }
                _ => {}
            }
        }
        let t = state_of(&vm.lease)
            .update(req, ts(vm.created), ts(now))
            .map_err(|e| lease_error(&e))?;
        let days = match req.duration {
            Some(LeaseDuration::Days(d)) => i64::from(d),
            _ => 0,
        };
        vm.lease = stored(t.state, days);
        Ok(t.event.map(|e| e.event_type()))
    }

    /// Runs the expiry actions of leases due at `now`.
    pub(crate) async fn expire_leases(self: &Arc<Self>, vm_ids: Vec<i64>, now: i64) -> SResult<()> {
        let caller = self.identity.system_caller().await?;
        for id in vm_ids {
            let Some(vm) = self.store.load::<Vm>(id).await? else {
                continue;
            };
            if vm.removed.is_some() {
                continue;
            }
            match state_of(&vm.lease).expiry(ts(now), vm.delete_protection) {
                ExpiryDecision::NoLease => {}
                ExpiryDecision::NotDue { expires } => {
                    self.schedules
                        .state
                        .lock()
                        .await
                        .track_lease(id, expires.timestamp());
                }
                ExpiryDecision::SkipDeleteProtected => {
                    // Stays active: it runs once protection is removed.
                    tracing::info!(vm = %vm.uuid, "lease DESTROY skipped: delete protection is on");
                }
                ExpiryDecision::Execute(action) => {
                    if let Err(e) = self.execute_lease(&caller, vm, action).await {
                        tracing::warn!(vm = id, error = %e.text(), "lease expiry action failed");
                    }
                }
            }
        }
        Ok(())
    }

    async fn execute_lease(
        self: &Arc<Self>,
        caller: &Caller,
        mut vm: Vm,
        action: LeaseAction,
    ) -> SResult<()> {
        let mut tx = Tx::new();
        let (t, work, command) = match action {
            LeaseAction::Stop => (
                Transition::BeginStop,
                Work::Stop {
                    vm_id: vm.id,
                    forced: false,
                },
                "stopVirtualMachine",
            ),
            LeaseAction::Destroy => (
                Transition::Destroy,
                Work::Destroy {
                    vm_id: vm.id,
                    expunge: false,
                    volume_ids: Vec::new(),
                },
                "destroyVirtualMachine",
            ),
        };
        vm.lease = Lease::Expired;
        self.event(
            &mut tx,
            caller,
            "VM.LEASE.EXPIRED",
            format!(
                "Lease of instance {} expired; action {}",
                vm.uuid,
                action.as_str()
            ),
            vm.account_id,
            vm.domain_id,
            Some((&vm.uuid, "VirtualMachine", &vm.name)),
        );
        // An instance already where the action would take it (a stopped one
        // for STOP) just loses its lease.
        let job = Service::check_transition(&vm, t)
            .is_ok()
            .then(|| self.vm_job(caller, &vm, command, work));
        if let Some(j) = &job {
            tx.insert(j);
        }
        tx.update(&mut vm);
        self.store.commit(tx.ops).await?;
        if let Some(j) = job {
            self.spawn_job(j.uuid);
        }
        Ok(())
    }

    /// The feature was switched off: every active lease is cancelled, for good.
    pub(crate) async fn cancel_all_leases(&self) -> SResult<usize> {
        let caller = self.identity.system_caller().await?;
        let mut n = 0;
        loop {
            let mut q = Query::new().and(Cond::NotNull(Col::LeaseExpiry));
            q.page = Some((0, 500));
            q.skip_count = true;
            let (vms, _) = self.store.list::<Vm>(&q).await?;
            if vms.is_empty() {
                break;
            }
            let mut tx = Tx::new();
            for mut vm in vms {
                let t = state_of(&vm.lease).cancel();
                vm.lease = stored(t.state, 0);
                if let Some(e) = t.event {
                    self.event(
                        &mut tx,
                        &caller,
                        e.event_type(),
                        format!(
                            "Lease of instance {} cancelled: the lease feature is disabled",
                            vm.uuid
                        ),
                        vm.account_id,
                        vm.domain_id,
                        Some((&vm.uuid, "VirtualMachine", &vm.name)),
                    );
                }
                tx.update(&mut vm);
                n += 1;
            }
            self.store.commit(tx.ops).await?;
        }
        self.schedules.state.lock().await.forget_leases();
        Ok(n)
    }

    /// `VM.LEASE.EXPIRING` for each lease ending within
    /// `instance.lease.expiryevent.daysbefore` days.
    pub(crate) async fn lease_expiring_events(&self, now: i64) -> SResult<usize> {
        let days = self
            .setting_i64("instance.lease.expiryevent.daysbefore")
            .clamp(0, 36500) as u32;
        let horizon = now + i64::from(days) * 86_400;
        let vms: Vec<Vm> = self
            .store
            .all(
                Query::new()
                    .and(Cond::NotNull(Col::LeaseExpiry))
                    .and(Cond::Le(Col::LeaseExpiry, Val::S(format!("{horizon:012}")))),
            )
            .await?;
        let caller = self.identity.system_caller().await?;
        let mut tx = Tx::new();
        let mut n = 0;
        for vm in &vms {
            if let Some(e) = state_of(&vm.lease).expiring_within(ts(now), days) {
                self.event(
                    &mut tx,
                    &caller,
                    e.event_type(),
                    format!(
                        "Lease of instance {} expires at {}",
                        vm.uuid,
                        crate::api::render::date(vm.lease.expires().unwrap_or(now))
                    ),
                    vm.account_id,
                    vm.domain_id,
                    Some((&vm.uuid, "VirtualMachine", &vm.name)),
                );
                n += 1;
            }
        }
        self.store.commit(tx.ops).await?;
        Ok(n)
    }
}
