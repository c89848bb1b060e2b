//! VM schedules: what `createVMSchedule` / `updateVMSchedule` accept, when a
//! schedule fires next, what happens when several fire together, and what happens
//! to firings missed while the coordinator was down.

mod catchup;
mod collision;
#[cfg(test)]
mod tests;
mod validate;

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use thiserror::Error;

use crate::cron::{CronError, CronExpr};

pub use catchup::{catch_up, default_catch_up_grace, CatchUp, DEFAULT_CATCH_UP_GRACE_MINUTES};
pub use collision::{resolve_collisions, Collisions, Firing, SkippedFiring};
pub use validate::{
    default_description, parse_date, parse_timezone, validate_create, validate_update,
    CreateRequest, ScheduleSpec, UpdateRequest, DATE_FORMAT,
};

/// The operations a schedule can run (CloudStack's `VMSchedule.Action`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Start,
    Stop,
    Reboot,
    ForceStop,
    ForceReboot,
}

impl Action {
    pub const ALL: [Action; 5] = [
        Action::Start,
        Action::Stop,
        Action::Reboot,
        Action::ForceStop,
        Action::ForceReboot,
    ];

    /// The wire name: `START`, `STOP`, `REBOOT`, `FORCE_STOP`, `FORCE_REBOOT`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Start => "START",
            Action::Stop => "STOP",
            Action::Reboot => "REBOOT",
            Action::ForceStop => "FORCE_STOP",
            Action::ForceReboot => "FORCE_REBOOT",
        }
    }

    /// Case-insensitive, as CloudStack upper-cases the parameter before matching.
    pub fn parse(text: &str) -> Result<Action, PlanError> {
        Action::ALL
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(text.trim()))
            .ok_or_else(|| PlanError::Action(text.to_string()))
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Action {
    type Err = PlanError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Action::parse(s)
    }
}

/// A validation failure. Each names the API parameter at fault
/// ([`parameter`](PlanError::parameter)) so the API layer can answer 431 with it.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum PlanError {
    #[error("invalid value for schedule: {0}")]
    Schedule(#[source] CronError),
    #[error("invalid value for timezone: '{0}' is not a known time zone (use an IANA name such as Europe/Berlin)")]
    Timezone(String),
    #[error("invalid value for action: '{0}' (expected START, STOP, REBOOT, FORCE_STOP or FORCE_REBOOT)")]
    Action(String),
    #[error("action cannot be changed once the schedule exists (it is {current}, {requested} was given)")]
    ActionChange { current: Action, requested: Action },
    #[error(
        "invalid value for {param}: '{value}' is not a date in the format yyyy-MM-dd HH:mm:ss"
    )]
    Date { param: &'static str, value: String },
    #[error("invalid value for startdate: start date {start} is before the current time {now}")]
    StartInPast {
        start: DateTime<Utc>,
        now: DateTime<Utc>,
    },
    #[error("invalid value for enddate: end date {end} is before the current time {now}")]
    EndInPast {
        end: DateTime<Utc>,
        now: DateTime<Utc>,
    },
    #[error("invalid value for enddate: end date {end} is before the start date {start}")]
    EndBeforeStart {
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    },
    #[error("invalid value for enddate: an end date cannot be removed once it is set")]
    EndDateRemoval,
}

impl PlanError {
    /// The CloudStack parameter the error is about.
    pub fn parameter(&self) -> &'static str {
        match self {
            PlanError::Schedule(_) => "schedule",
            PlanError::Timezone(_) => "timezone",
            PlanError::Action(_) | PlanError::ActionChange { .. } => "action",
            PlanError::Date { param, .. } => param,
            PlanError::StartInPast { .. } => "startdate",
            PlanError::EndInPast { .. }
            | PlanError::EndBeforeStart { .. }
            | PlanError::EndDateRemoval => "enddate",
        }
    }
}

/// A stored schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// Allocated in creation order; the collision rule relies on that.
    pub id: u64,
    pub vm_id: u64,
    pub action: Action,
    pub cron: CronExpr,
    pub tz: Tz,
    /// The schedule fires only strictly after this instant (CloudStack asks Spring
    /// for `next(start)`, which is exclusive).
    pub start: DateTime<Utc>,
    /// No firing later than this instant; `None` runs for ever.
    pub end: Option<DateTime<Utc>>,
    pub enabled: bool,
    pub description: String,
}

impl Schedule {
    /// The first firing strictly after `after` that respects the start and end
    /// dates; `None` when disabled or finished. CloudStack computes
    /// `cron.next(max(start, now))` the same way; unlike CloudStack it also refuses
    /// a firing past the end date instead of queueing it.
    pub fn next_fire(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if !self.enabled {
            return None;
        }
        self.next_occurrence(after)
    }

    /// As [`next_fire`](Self::next_fire) but ignoring `enabled`.
    pub fn next_occurrence(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let next = self.cron.next_after(after.max(self.start), self.tz)?;
        match self.end {
            Some(end) if next > end => None,
            _ => Some(next),
        }
    }

    /// True once no occurrence can follow `now` (end date passed): CloudStack
    /// disables the schedule at that point.
    pub fn finished(&self, now: DateTime<Utc>) -> bool {
        self.next_occurrence(now).is_none()
    }
}
