//! Instance lease rules.
//!
//! A lease stops or destroys an instance a number of days after deployment. The
//! rules, from the CloudStack documentation and `VMLeaseManagerImpl`:
//!
//! * `leaseduration` is 1..=36500 days, or -1 to disable; `leaseexpiryaction` is
//!   STOP or DESTROY; a duration needs an action.
//! * A lease is assigned only at deployment (when `instance.lease.enabled`), from
//!   the deploy parameters or else the compute offering's defaults; -1 at deploy
//!   means no lease. An instance without a lease can never acquire one.
//! * Before expiry the duration can be extended or reduced; the duration is the
//!   *total* lease, counted from deployment. -1 disables the lease for good.
//! * At expiry the action runs at most once and the lease is then over; DESTROY is
//!   skipped (the lease stays pending) while the instance has delete protection.
//! * Switching the feature off cancels every active lease; switching it back on
//!   does not restore them.
//!
//! [`LeaseState`] makes the one-way rules structural: every transition method
//! leaves a final state (`Disabled`, `Expired`, `Cancelled`, `None`) where it is,
//! and only deployment produces an `Active` lease.

use chrono::{DateTime, TimeDelta, Utc};
use thiserror::Error;

/// The largest `leaseduration`, 100 years.
pub const MAX_LEASE_DAYS: i64 = 36_500;
/// The `leaseduration` that disables a lease.
pub const DISABLE_LEASE: i64 = -1;

/// What happens at expiry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LeaseAction {
    Stop,
    Destroy,
}

impl LeaseAction {
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseAction::Stop => "STOP",
            LeaseAction::Destroy => "DESTROY",
        }
    }

    /// Case-insensitive, as CloudStack's `EnumUtils.getEnumIgnoreCase`.
    pub fn parse(text: &str) -> Result<LeaseAction, LeaseError> {
        [LeaseAction::Stop, LeaseAction::Destroy]
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(text.trim()))
            .ok_or_else(|| LeaseError::InvalidAction(text.to_string()))
    }
}

impl std::fmt::Display for LeaseAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A lease rule was broken. [`parameter`](LeaseError::parameter) names the API
/// parameter at fault.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum LeaseError {
    #[error("invalid value for leaseduration: {0} (a natural number of days from 1 to 36500, or -1 to disable the lease)")]
    InvalidDuration(i64),
    #[error("invalid value for leaseduration: it is required when leaseexpiryaction is given")]
    MissingDuration,
    #[error("invalid value for leaseexpiryaction: '{0}' (expected STOP or DESTROY)")]
    InvalidAction(String),
    #[error("provide values for both leaseduration and leaseexpiryaction")]
    MissingAction,
    #[error("invalid value for leaseduration: the instance has no lease, and a lease can only be assigned at deployment")]
    NoLease,
    #[error("invalid value for leaseduration: the instance's lease is {0} and cannot be changed")]
    NotActive(&'static str),
    #[error(
        "invalid value for leaseduration: the lease expired at {expires} and cannot be changed"
    )]
    AlreadyExpired { expires: DateTime<Utc> },
    #[error("invalid value for leaseduration: {days} days from deployment ended at {expires}, which has already passed")]
    ExpiryInPast { days: u32, expires: DateTime<Utc> },
}

impl LeaseError {
    pub fn parameter(&self) -> &'static str {
        match self {
            LeaseError::InvalidAction(_) | LeaseError::MissingAction => "leaseexpiryaction",
            _ => "leaseduration",
        }
    }
}

/// A validated `leaseduration`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseDuration {
    /// 1..=36500 days.
    Days(u32),
    /// -1: no lease (at deploy) or disable the lease (on update).
    Disable,
}

impl LeaseDuration {
    pub fn parse(value: i64) -> Result<LeaseDuration, LeaseError> {
        match value {
            DISABLE_LEASE => Ok(LeaseDuration::Disable),
            1..=MAX_LEASE_DAYS => Ok(LeaseDuration::Days(value as u32)),
            _ => Err(LeaseError::InvalidDuration(value)),
        }
    }
}

/// Validated lease parameters of `deployVirtualMachine` or `updateVirtualMachine`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeaseRequest {
    pub duration: Option<LeaseDuration>,
    pub action: Option<LeaseAction>,
}

/// Checks `leaseduration` / `leaseexpiryaction` as CloudStack does: both absent is
/// fine, -1 is fine alone, otherwise a valid duration needs a valid action.
pub fn validate_lease_params(
    duration: Option<i64>,
    action: Option<&str>,
) -> Result<LeaseRequest, LeaseError> {
    let action = action
        .filter(|a| !a.trim().is_empty())
        .map(LeaseAction::parse)
        .transpose()?;
    let duration = duration.map(LeaseDuration::parse).transpose()?;
    match (duration, action) {
        (None, Some(_)) => Err(LeaseError::MissingDuration),
        (Some(LeaseDuration::Days(_)), None) => Err(LeaseError::MissingAction),
        _ => Ok(LeaseRequest { duration, action }),
    }
}

/// A compute offering's lease defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OfferingLease {
    pub days: u32,
    pub action: LeaseAction,
}

/// A lease that has not run out yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActiveLease {
    expires: DateTime<Utc>,
    action: LeaseAction,
}

impl ActiveLease {
    /// Rebuilds a lease read back from storage. Not a way to grant a lease: the only
    /// rule-abiding source of an active lease is [`LeaseState::at_deploy`].
    pub fn restore(expires: DateTime<Utc>, action: LeaseAction) -> ActiveLease {
        ActiveLease { expires, action }
    }

    pub fn expires(&self) -> DateTime<Utc> {
        self.expires
    }

    pub fn action(&self) -> LeaseAction {
        self.action
    }
}

/// An instance's lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseState {
    /// Deployed without a lease (or with -1): can never acquire one.
    None,
    Active(ActiveLease),
    /// Disabled by the user with -1; final.
    Disabled,
    /// The expiry action ran; final ("annulled").
    Expired,
    /// Cancelled because the feature was switched off; final.
    Cancelled,
}

/// An event to record, with CloudStack's event type names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseEvent {
    Disabled,
    Cancelled,
    Expired {
        action: LeaseAction,
    },
    Expiring {
        expires: DateTime<Utc>,
        action: LeaseAction,
    },
}

impl LeaseEvent {
    pub fn event_type(&self) -> &'static str {
        match self {
            LeaseEvent::Disabled => "VM.LEASE.DISABLED",
            LeaseEvent::Cancelled => "VM.LEASE.CANCELLED",
            LeaseEvent::Expired { .. } => "VM.LEASE.EXPIRED",
            LeaseEvent::Expiring { .. } => "VM.LEASE.EXPIRING",
        }
    }
}

/// A new state and the event the change produces, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTransition {
    pub state: LeaseState,
    pub event: Option<LeaseEvent>,
}

/// What the expiry check decides for one instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpiryDecision {
    /// No active lease.
    NoLease,
    /// Not yet; look again at `expires`.
    NotDue { expires: DateTime<Utc> },
    /// Run the action (record `VM.LEASE.EXPIRED`), then call
    /// [`LeaseState::executed`] once it succeeded; on failure the lease stays
    /// active and is retried at the next check.
    Execute(LeaseAction),
    /// DESTROY with delete protection on: nothing happens and the lease stays
    /// active, so it runs if protection is removed later.
    SkipDeleteProtected,
}

fn days(n: u32) -> TimeDelta {
    TimeDelta::days(i64::from(n))
}

impl LeaseState {
    /// The lease an instance gets at deployment: the deploy parameters, else the
    /// offering's defaults; nothing when the feature is off, the duration is -1, or
    /// no action is known. Expiry is deployment time + duration.
    pub fn at_deploy(
        feature_enabled: bool,
        offering: Option<OfferingLease>,
        request: LeaseRequest,
        deployed_at: DateTime<Utc>,
    ) -> LeaseState {
        if !feature_enabled {
            return LeaseState::None;
        }
        let duration = request
            .duration
            .or(offering.map(|o| LeaseDuration::Days(o.days)));
        let action = request.action.or(offering.map(|o| o.action));
        match (duration, action) {
            (Some(LeaseDuration::Days(n)), Some(action)) => LeaseState::Active(ActiveLease {
                expires: deployed_at + days(n),
                action,
            }),
            _ => LeaseState::None,
        }
    }

    /// The state's name for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            LeaseState::None => "absent",
            LeaseState::Active(_) => "active",
            LeaseState::Disabled => "disabled",
            LeaseState::Expired => "expired",
            LeaseState::Cancelled => "cancelled",
        }
    }

    /// When the due-index should look at this lease.
    pub fn due_at(&self) -> Option<DateTime<Utc>> {
        match self {
            LeaseState::Active(a) => Some(a.expires),
            _ => None,
        }
    }

    /// Applies `updateVirtualMachine`'s lease parameters (already validated; the
    /// caller skips this while the feature is off, as CloudStack does). The new
    /// duration counts from `deployed_at`.
    pub fn update(
        &self,
        request: LeaseRequest,
        deployed_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<LeaseTransition, LeaseError> {
        let Some(duration) = request.duration else {
            return Ok(LeaseTransition {
                state: *self,
                event: None,
            });
        };
        let active = match self {
            LeaseState::Active(a) => a,
            LeaseState::None => return Err(LeaseError::NoLease),
            other => return Err(LeaseError::NotActive(other.kind())),
        };
        if now >= active.expires {
            return Err(LeaseError::AlreadyExpired {
                expires: active.expires,
            });
        }
        match duration {
            LeaseDuration::Disable => Ok(LeaseTransition {
                state: LeaseState::Disabled,
                event: Some(LeaseEvent::Disabled),
            }),
            LeaseDuration::Days(n) => {
                let expires = deployed_at + days(n);
                if expires <= now {
                    // A reduction that ends the lease in the past would stop or destroy
                    // the instance on the next check; refuse rather than surprise.
                    return Err(LeaseError::ExpiryInPast { days: n, expires });
                }
                let action = request.action.ok_or(LeaseError::MissingAction)?;
                Ok(LeaseTransition {
                    state: LeaseState::Active(ActiveLease { expires, action }),
                    event: None,
                })
            }
        }
    }

    /// The expiry check at `now`.
    pub fn expiry(&self, now: DateTime<Utc>, delete_protection: bool) -> ExpiryDecision {
        match self {
            LeaseState::Active(a) if now < a.expires => {
                ExpiryDecision::NotDue { expires: a.expires }
            }
            LeaseState::Active(a) => match a.action {
                LeaseAction::Destroy if delete_protection => ExpiryDecision::SkipDeleteProtected,
                action => ExpiryDecision::Execute(action),
            },
            _ => ExpiryDecision::NoLease,
        }
    }

    /// The expiry action succeeded: the lease is over.
    pub fn executed(&self) -> Result<LeaseTransition, LeaseError> {
        match self {
            LeaseState::Active(a) => Ok(LeaseTransition {
                state: LeaseState::Expired,
                event: Some(LeaseEvent::Expired { action: a.action }),
            }),
            LeaseState::None => Err(LeaseError::NoLease),
            other => Err(LeaseError::NotActive(other.kind())),
        }
    }

    /// The `VM.LEASE.EXPIRING` notice when the lease ends within `days` days of
    /// `now` (`instance.lease.expiryevent.daysbefore`) and has not ended yet.
    pub fn expiring_within(&self, now: DateTime<Utc>, days_before: u32) -> Option<LeaseEvent> {
        match self {
            LeaseState::Active(a) if now < a.expires && a.expires <= now + days(days_before) => {
                Some(LeaseEvent::Expiring {
                    expires: a.expires,
                    action: a.action,
                })
            }
            _ => None,
        }
    }

    /// The feature was switched off: an active lease is cancelled for good.
    pub fn cancel(&self) -> LeaseTransition {
        match self {
            LeaseState::Active(_) => LeaseTransition {
                state: LeaseState::Cancelled,
                event: Some(LeaseEvent::Cancelled),
            },
            other => LeaseTransition {
                state: *other,
                event: None,
            },
        }
    }
}

/// Cancels every active lease (feature switched off) and returns the keys of the
/// instances whose lease was cancelled, for `VM.LEASE.CANCELLED` events.
pub fn cancel_all<'a, K: 'a>(leases: impl IntoIterator<Item = (K, &'a mut LeaseState)>) -> Vec<K> {
    let mut cancelled = Vec::new();
    for (key, state) in leases {
        let t = state.cancel();
        if t.event.is_some() {
            *state = t.state;
            cancelled.push(key);
        }
    }
    cancelled
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::due::{DueIndex, DueKey};
    use chrono::TimeZone;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
    }

    fn req(duration: Option<i64>, action: Option<&str>) -> LeaseRequest {
        validate_lease_params(duration, action).unwrap()
    }

    fn active(days_: i64, action: &str) -> LeaseState {
        LeaseState::at_deploy(true, None, req(Some(days_), Some(action)), t0())
    }

    #[test]
    fn parameter_validation() {
        assert_eq!(
            validate_lease_params(None, None),
            Ok(LeaseRequest::default())
        );
        assert_eq!(
            validate_lease_params(Some(-1), None).unwrap().duration,
            Some(LeaseDuration::Disable)
        );
        assert_eq!(
            validate_lease_params(Some(36_500), Some("destroy")).unwrap(),
            LeaseRequest {
                duration: Some(LeaseDuration::Days(36_500)),
                action: Some(LeaseAction::Destroy)
            }
        );
        for bad in [0, -2, 36_501, i64::MAX] {
            let e = validate_lease_params(Some(bad), Some("STOP")).unwrap_err();
            assert_eq!(e, LeaseError::InvalidDuration(bad));
            assert_eq!(e.parameter(), "leaseduration");
        }
        let e = validate_lease_params(Some(5), None).unwrap_err();
        assert_eq!(e.parameter(), "leaseexpiryaction");
        let e = validate_lease_params(Some(5), Some("PAUSE")).unwrap_err();
        assert_eq!(e, LeaseError::InvalidAction("PAUSE".into()));
        assert_eq!(e.parameter(), "leaseexpiryaction");
        let e = validate_lease_params(None, Some("STOP")).unwrap_err();
        assert_eq!(e.parameter(), "leaseduration");
    }

    #[test]
    fn deploy_resolution() {
        let offering = Some(OfferingLease {
            days: 30,
            action: LeaseAction::Stop,
        });
        // Feature off: nothing, whatever was asked.
        assert_eq!(
            LeaseState::at_deploy(false, offering, req(Some(5), Some("STOP")), t0()),
            LeaseState::None
        );
        // Offering defaults.
        assert_eq!(
            LeaseState::at_deploy(true, offering, LeaseRequest::default(), t0()).due_at(),
            Some(t0() + TimeDelta::days(30))
        );
        // Deploy override wins.
        let s = LeaseState::at_deploy(true, offering, req(Some(3), Some("DESTROY")), t0());
        assert_eq!(
            s,
            LeaseState::Active(ActiveLease::restore(
                t0() + TimeDelta::days(3),
                LeaseAction::Destroy
            ))
        );
        // -1 at deploy disables the offering's lease: no lease at all.
        assert_eq!(
            LeaseState::at_deploy(true, offering, req(Some(-1), None), t0()),
            LeaseState::None
        );
        // Lease on a non-lease offering.
        assert!(matches!(active(7, "STOP"), LeaseState::Active(_)));
        // Nothing asked, nothing offered.
        assert_eq!(
            LeaseState::at_deploy(true, None, LeaseRequest::default(), t0()),
            LeaseState::None
        );
    }

    #[test]
    fn update_extends_reduces_and_disables_before_expiry() {
        let lease = active(10, "STOP");
        let now = t0() + TimeDelta::days(4);
        let extended = lease
            .update(req(Some(20), Some("DESTROY")), t0(), now)
            .unwrap();
        assert_eq!(extended.event, None);
        assert_eq!(extended.state.due_at(), Some(t0() + TimeDelta::days(20)));
        let reduced = lease.update(req(Some(5), Some("STOP")), t0(), now).unwrap();
        assert_eq!(reduced.state.due_at(), Some(t0() + TimeDelta::days(5)));
        // Reducing below the time already used is refused.
        let e = lease
            .update(req(Some(3), Some("STOP")), t0(), now)
            .unwrap_err();
        assert!(matches!(e, LeaseError::ExpiryInPast { days: 3, .. }));
        // No duration given: unchanged.
        assert_eq!(
            lease
                .update(LeaseRequest::default(), t0(), now)
                .unwrap()
                .state,
            lease
        );
        // -1 disables for good.
        let disabled = lease.update(req(Some(-1), None), t0(), now).unwrap();
        assert_eq!(disabled.state, LeaseState::Disabled);
        assert_eq!(disabled.event.unwrap().event_type(), "VM.LEASE.DISABLED");
        let e = disabled
            .state
            .update(req(Some(30), Some("STOP")), t0(), now)
            .unwrap_err();
        assert_eq!(e, LeaseError::NotActive("disabled"));
    }

    #[test]
    fn no_lease_cannot_be_acquired_and_expired_cannot_be_changed() {
        let none = LeaseState::None;
        let e = none
            .update(req(Some(5), Some("STOP")), t0(), t0())
            .unwrap_err();
        assert_eq!(e, LeaseError::NoLease);
        assert_eq!(e.parameter(), "leaseduration");

        let lease = active(1, "STOP");
        let after = t0() + TimeDelta::days(2);
        let e = lease
            .update(req(Some(30), Some("STOP")), t0(), after)
            .unwrap_err();
        assert!(matches!(e, LeaseError::AlreadyExpired { .. }));
        let done = lease.executed().unwrap().state;
        assert_eq!(done, LeaseState::Expired);
        assert_eq!(
            done.update(req(Some(30), Some("STOP")), t0(), after),
            Err(LeaseError::NotActive("expired"))
        );
        assert_eq!(done.expiry(after, false), ExpiryDecision::NoLease);
        assert_eq!(done.executed(), Err(LeaseError::NotActive("expired")));
    }

    #[test]
    fn expiry_stop_and_destroy_with_delete_protection() {
        let stop = active(2, "STOP");
        let before = t0() + TimeDelta::days(1);
        let at = t0() + TimeDelta::days(2);
        assert_eq!(
            stop.expiry(before, false),
            ExpiryDecision::NotDue { expires: at }
        );
        assert_eq!(
            stop.expiry(at, false),
            ExpiryDecision::Execute(LeaseAction::Stop)
        );
        // Delete protection only guards DESTROY.
        assert_eq!(
            stop.expiry(at, true),
            ExpiryDecision::Execute(LeaseAction::Stop)
        );
        let t = stop.executed().unwrap();
        assert_eq!(t.state, LeaseState::Expired);
        assert_eq!(t.event.unwrap().event_type(), "VM.LEASE.EXPIRED");

        let destroy = active(2, "DESTROY");
        assert_eq!(
            destroy.expiry(at, true),
            ExpiryDecision::SkipDeleteProtected
        );
        // Still pending: once protection is removed, it runs.
        assert_eq!(
            destroy.expiry(at + TimeDelta::hours(5), false),
            ExpiryDecision::Execute(LeaseAction::Destroy)
        );
    }

    #[test]
    fn expiring_notice_window() {
        let lease = active(10, "DESTROY");
        let expires = t0() + TimeDelta::days(10);
        assert_eq!(lease.expiring_within(t0(), 7), None);
        assert_eq!(
            lease.expiring_within(expires - TimeDelta::days(7), 7),
            Some(LeaseEvent::Expiring {
                expires,
                action: LeaseAction::Destroy
            })
        );
        assert!(lease
            .expiring_within(expires - TimeDelta::hours(1), 7)
            .is_some());
        assert_eq!(lease.expiring_within(expires, 7), None);
        assert_eq!(LeaseState::Disabled.expiring_within(t0(), 7), None);
    }

    #[test]
    fn feature_disable_cancels_all_and_never_restores() {
        let mut leases = [
            (1u64, active(5, "STOP")),
            (2, LeaseState::None),
            (3, active(9, "DESTROY")),
            (4, LeaseState::Disabled),
        ];
        let cancelled = cancel_all(leases.iter_mut().map(|(k, s)| (*k, s)));
        assert_eq!(cancelled, vec![1, 3]);
        assert_eq!(leases[0].1, LeaseState::Cancelled);
        assert_eq!(leases[1].1, LeaseState::None);
        assert_eq!(leases[3].1, LeaseState::Disabled);
        assert_eq!(LeaseEvent::Cancelled.event_type(), "VM.LEASE.CANCELLED");
        // Cancelled is final: no update, no expiry, no second cancel event.
        let c = leases[0].1;
        assert_eq!(
            c.expiry(t0() + TimeDelta::days(100), false),
            ExpiryDecision::NoLease
        );
        assert_eq!(
            c.update(req(Some(30), Some("STOP")), t0(), t0()),
            Err(LeaseError::NotActive("cancelled"))
        );
        assert_eq!(c.cancel().event, None);
        assert!(cancel_all(leases.iter_mut().map(|(k, s)| (*k, s))).is_empty());
    }

    /// Leases through the due-index on simulated time: STOP runs at expiry, DESTROY
    /// under delete protection waits for the protection to go.
    #[test]
    fn simulated_expiry_through_the_due_index() {
        let clock = ManualClock::new(t0());
        let mut states = [active(1, "STOP"), active(1, "DESTROY"), active(3, "STOP")];
        let mut protected = [false, true, false];
        let mut idx = DueIndex::new();
        for (vm, s) in states.iter().enumerate() {
            idx.upsert(DueKey::Lease(vm as u64), s.due_at().unwrap());
        }
        let recheck = TimeDelta::hours(1); // instance.lease.scheduler.interval
        let mut executed = Vec::new();
        for _ in 0..(5 * 24) {
            let now = clock.advance(TimeDelta::hours(1));
            if now == t0() + TimeDelta::days(2) {
                protected[1] = false;
            }
            for item in idx.pop_due(now) {
                let DueKey::Lease(vm) = item.key else {
                    unreachable!()
                };
                let vm = vm as usize;
                match states[vm].expiry(now, protected[vm]) {
                    ExpiryDecision::Execute(action) => {
                        executed.push((vm, action, now));
                        states[vm] = states[vm].executed().unwrap().state;
                    }
                    ExpiryDecision::SkipDeleteProtected => idx.upsert(item.key, now + recheck),
                    ExpiryDecision::NotDue { expires } => idx.upsert(item.key, expires),
                    ExpiryDecision::NoLease => {}
                }
            }
        }
        assert_eq!(
            executed,
            vec![
                (0, LeaseAction::Stop, t0() + TimeDelta::days(1)),
                (1, LeaseAction::Destroy, t0() + TimeDelta::days(2)),
                (2, LeaseAction::Stop, t0() + TimeDelta::days(3)),
            ]
        );
        assert!(states.iter().all(|s| *s == LeaseState::Expired));
        assert!(idx.is_empty());
    }
}
