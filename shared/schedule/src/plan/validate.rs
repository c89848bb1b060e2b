//! Validation of `createVMSchedule` and `updateVMSchedule` input.
//!
//! Rules, as in CloudStack's `VMScheduleManagerImpl`:
//! * `startdate` and `enddate` are wall-clock times in the schedule's `timezone`
//!   (CloudStack re-reads the parsed date's fields in that zone).
//! * `startdate` defaults to now + 1 minute and may not be before now; `enddate`
//!   may be neither before now nor before the start.
//! * On update, a start date that has already passed counts as now + 1 minute for
//!   the checks (and is kept as stored unless a new one is given); an end date can
//!   be changed but not removed; the action cannot change.
//! * Without a description, it is `"<ACTION> - <human readable schedule>"`.
//!
//! Two deliberate differences: an unknown time zone is an error (Java's
//! `TimeZone.getTimeZone` silently falls back to GMT), and the time zone must be an
//! IANA name (no `GMT+05:30` custom ids).

use chrono::{DateTime, LocalResult, NaiveDate, NaiveDateTime, Offset, TimeDelta, TimeZone, Utc};
use chrono_tz::{GapInfo, Tz};

use super::{Action, PlanError, Schedule};
use crate::cron::CronExpr;

/// The date format of `startdate` and `enddate` (Java `yyyy-MM-dd HH:mm:ss`).
pub const DATE_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// Parameters of `createVMSchedule`, as given.
#[derive(Clone, Copy, Debug, Default)]
pub struct CreateRequest<'a> {
    pub schedule: &'a str,
    pub timezone: &'a str,
    pub action: &'a str,
    pub start_date: Option<&'a str>,
    pub end_date: Option<&'a str>,
    pub description: Option<&'a str>,
    pub enabled: Option<bool>,
}

/// Parameters of `updateVMSchedule`; `None` leaves a field as it is.
#[derive(Clone, Copy, Debug, Default)]
pub struct UpdateRequest<'a> {
    pub schedule: Option<&'a str>,
    pub timezone: Option<&'a str>,
    /// Accepted only when equal to the current action.
    pub action: Option<&'a str>,
    pub start_date: Option<&'a str>,
    /// An empty value asks to remove the end date, which is refused.
    pub end_date: Option<&'a str>,
    /// A blank value regenerates the default description.
    pub description: Option<&'a str>,
    pub enabled: Option<bool>,
}

/// A validated new schedule, waiting for its ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleSpec {
    pub action: Action,
    pub cron: CronExpr,
    pub tz: Tz,
    pub start: DateTime<Utc>,
    pub end: Option<DateTime<Utc>>,
    pub enabled: bool,
    pub description: String,
}

impl ScheduleSpec {
    pub fn into_schedule(self, id: u64, vm_id: u64) -> Schedule {
        Schedule {
            id,
            vm_id,
            action: self.action,
            cron: self.cron,
            tz: self.tz,
            start: self.start,
            end: self.end,
            enabled: self.enabled,
            description: self.description,
        }
    }
}

/// An IANA zone name, exactly as in the tz database (case matters, as in Java).
pub fn parse_timezone(name: &str) -> Result<Tz, PlanError> {
    name.trim()
        .parse::<Tz>()
        .map_err(|_| PlanError::Timezone(name.to_string()))
}

/// `"<ACTION> - <description of the cron expression>"`, CloudStack's default.
pub fn default_description(action: Action, cron: &CronExpr) -> String {
    format!("{} - {}", action, cron.describe())
}

/// Reads `yyyy-MM-dd HH:mm:ss` (or a bare `yyyy-MM-dd`, meaning midnight) as a
/// wall-clock time in `tz`. A time in a spring-forward gap moves forward by the
/// gap's length and an ambiguous fall-back time takes the earlier instant, which
/// is what Java's `ZonedDateTime` does with the same fields. `param` names the
/// parameter in the error.
pub fn parse_date(value: &str, tz: Tz, param: &'static str) -> Result<DateTime<Utc>, PlanError> {
    let text = value.trim();
    let bad = || PlanError::Date {
        param,
        value: value.to_string(),
    };
    let naive = NaiveDateTime::parse_from_str(text, DATE_FORMAT)
        .or_else(|_| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default())
        })
        .map_err(|_| bad())?;
    local_to_utc(naive, tz).ok_or_else(bad)
}

fn local_to_utc(naive: NaiveDateTime, tz: Tz) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(a, b) => Some(a.with_timezone(&Utc).min(b.with_timezone(&Utc))),
        LocalResult::None => {
            // Shift by the gap: read the wall time with the offset in force before it.
            let gap = GapInfo::new(&naive, &tz)?;
            match gap.begin {
                Some((_, before)) => {
                    let secs = i64::from(before.fix().local_minus_utc());
                    Some((naive - TimeDelta::seconds(secs)).and_utc())
                }
                None => gap.end.map(|t| t.with_timezone(&Utc)),
            }
        }
    }
}

fn given(value: Option<&str>) -> Option<&str> {
    value.filter(|v| !v.trim().is_empty())
}

fn check_dates(
    start: DateTime<Utc>,
    end: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<(), PlanError> {
    if start < now {
        return Err(PlanError::StartInPast { start, now });
    }
    if let Some(end) = end {
        if end < now {
            return Err(PlanError::EndInPast { end, now });
        }
        if end < start {
            return Err(PlanError::EndBeforeStart { start, end });
        }
    }
    Ok(())
}

/// Validates `createVMSchedule` input at `now`.
pub fn validate_create(
    req: &CreateRequest<'_>,
    now: DateTime<Utc>,
) -> Result<ScheduleSpec, PlanError> {
    let action = Action::parse(req.action)?;
    let tz = parse_timezone(req.timezone)?;
    let cron = CronExpr::parse(req.schedule).map_err(PlanError::Schedule)?;
    let start = match given(req.start_date) {
        Some(s) => parse_date(s, tz, "startdate")?,
        None => now + TimeDelta::minutes(1),
    };
    let end = given(req.end_date)
        .map(|s| parse_date(s, tz, "enddate"))
        .transpose()?;
    check_dates(start, end, now)?;
    let description = match given(req.description) {
        Some(d) => d.to_string(),
        None => default_description(action, &cron),
    };
    Ok(ScheduleSpec {
        action,
        cron,
        tz,
        start,
        end,
        enabled: req.enabled.unwrap_or(true),
        description,
    })
}

/// Validates `updateVMSchedule` input against the stored schedule at `now` and
/// returns the schedule as it would be stored.
pub fn validate_update(
    current: &Schedule,
    req: &UpdateRequest<'_>,
    now: DateTime<Utc>,
) -> Result<Schedule, PlanError> {
    if let Some(a) = req.action {
        let requested = Action::parse(a)?;
        if requested != current.action {
            return Err(PlanError::ActionChange {
                current: current.action,
                requested,
            });
        }
    }
    let tz = match req.timezone {
        Some(name) => parse_timezone(name)?,
        None => current.tz,
    };
    let cron = match req.schedule {
        Some(s) => CronExpr::parse(s).map_err(PlanError::Schedule)?,
        None => current.cron.clone(),
    };
    let new_start = given(req.start_date)
        .map(|s| parse_date(s, tz, "startdate"))
        .transpose()?;
    let end = match req.end_date {
        Some(s) if s.trim().is_empty() => {
            if current.end.is_some() {
                return Err(PlanError::EndDateRemoval);
            }
            None
        }
        Some(s) => Some(parse_date(s, tz, "enddate")?),
        None => current.end,
    };
    // A stored start that has passed is checked as "now + 1 minute" (CloudStack).
    let soon = now + TimeDelta::minutes(1);
    let start_for_check = new_start.unwrap_or(current.start.max(soon));
    check_dates(start_for_check, end, now)?;

    let description = match req.description {
        Some(d) if d.trim().is_empty() => default_description(current.action, &cron),
        Some(d) => d.to_string(),
        None => current.description.clone(),
    };
    Ok(Schedule {
        id: current.id,
        vm_id: current.vm_id,
        action: current.action,
        cron,
        tz,
        start: new_start.unwrap_or(current.start),
        end,
        enabled: req.enabled.unwrap_or(current.enabled),
        description,
    })
}
