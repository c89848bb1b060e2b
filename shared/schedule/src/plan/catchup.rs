//! What to do, after downtime, with a schedule whose persisted next-due time passed.
//!
//! CloudStack matches jobs to the poll minute exactly, so anything missed while the
//! management server was down is silently dropped. Dropping an 08:00 START because
//! the coordinator restarted at 08:00:30 is worse than running it late, but running
//! a whole night of missed STOP/START pairs on the way up is worse still. The rule:
//!
//! * An occurrence that fell within the last `grace` (inclusive) runs **once**,
//!   late. If several did, only the first of them runs.
//! * Older misses are skipped (reported, so the caller can emit an event).
//! * Either way the schedule then waits for its first occurrence after now.
//!
//! [`DEFAULT_CATCH_UP_GRACE_MINUTES`] is 5: long enough for a restart or a deploy,
//! short enough that an action never lands far from its intended time.

use chrono::{DateTime, TimeDelta, Utc};

use super::Schedule;

pub const DEFAULT_CATCH_UP_GRACE_MINUTES: i64 = 5;

pub fn default_catch_up_grace() -> TimeDelta {
    TimeDelta::minutes(DEFAULT_CATCH_UP_GRACE_MINUTES)
}

/// The catch-up decision for one schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CatchUp {
    /// The persisted time is still ahead: keep it.
    Pending { next: DateTime<Utc> },
    /// Run once now for occurrence `missed` (feed it through the collision rule),
    /// then wait for `next`.
    RunOnce {
        missed: DateTime<Utc>,
        next: Option<DateTime<Utc>>,
    },
    /// Too late: do not run `missed`; wait for `next`.
    Skip {
        missed: DateTime<Utc>,
        next: Option<DateTime<Utc>>,
    },
}

impl CatchUp {
    /// The time to put back in the due-index, if any.
    pub fn next(&self) -> Option<DateTime<Utc>> {
        match *self {
            CatchUp::Pending { next } => Some(next),
            CatchUp::RunOnce { next, .. } | CatchUp::Skip { next, .. } => next,
        }
    }
}

/// Applies the catch-up rule (module documentation) to `schedule`, whose next
/// firing was persisted as `persisted_next_due`, at `now`.
pub fn catch_up(
    schedule: &Schedule,
    persisted_next_due: DateTime<Utc>,
    now: DateTime<Utc>,
    grace: TimeDelta,
) -> CatchUp {
    if persisted_next_due > now {
        return CatchUp::Pending {
            next: persisted_next_due,
        };
    }
    let next = schedule.next_fire(now);
    if !schedule.enabled {
        return CatchUp::Skip {
            missed: persisted_next_due,
            next,
        };
    }
    let window_start = now - grace.max(TimeDelta::zero());
    let in_window = if persisted_next_due >= window_start {
        Some(persisted_next_due)
    } else {
        // The first occurrence at or after the window start (next_fire is strict,
        // hence the nanosecond).
        schedule
            .next_fire(window_start - TimeDelta::nanoseconds(1))
            .filter(|&t| t <= now)
    };
    match in_window {
        Some(missed) => CatchUp::RunOnce { missed, next },
        None => CatchUp::Skip {
            missed: persisted_next_due,
            next,
        },
    }
}
