//! Five-field cron expressions, evaluated in an IANA time zone.
//!
//! CloudStack's `createVMSchedule` takes `minute hour day-of-month month day-of-week`
//! and hands it to Spring's `CronExpression` after prefixing `"0 "` (seconds), then
//! evaluates it in the schedule's time zone. This module reproduces that contract:
//!
//! * Syntax: `*`, numbers, `a-b`, lists `a,b`, steps `*/n`, `a/n` (= `a-max/n`) and
//!   `a-b/n`; month names `JAN`-`DEC`, weekday names `SUN`-`SAT`, case-insensitive;
//!   `0` and `7` are both Sunday; `?` (= `*`) as the whole day-of-month or day-of-week
//!   field, the only places Spring accepts it. Quartz extensions that Spring also
//!   knows (`L`, `W`, `#`) are rejected by name rather than half-supported.
//! * Day-of-month and day-of-week are **both** required to match (Spring ANDs every
//!   field; Vixie cron would OR them when both are restricted), so `0 0 13 * FRI`
//!   fires on Friday the 13th only.
//! * As in Spring, `*` in the day-of-week field means Monday..Sunday, so `*/2` there
//!   is Monday, Wednesday, Friday, Sunday.
//! * Every firing is at second 0 of a local minute.
//!
//! Daylight saving (see [`CronExpr::next_after`]):
//! * A local time that does not exist (spring-forward gap) is skipped, exactly as
//!   Spring's `CronExpression` does (`0 10 2 * * *` on the Amsterdam switch day goes
//!   to 02:10 the following day; Spring's own test asserts this). It is not moved
//!   to 03:10.
//! * A local time that occurs twice (fall-back) fires once, at its first
//!   occurrence, when the hour field is restricted: a daily 02:30 STOP must not run
//!   twice. When the hour field is unrestricted (`*`, `0-23`, `*/1`) the expression
//!   is an "every hour" rule and follows elapsed time, so the repeated hour fires
//!   again, as Vixie cron does for wildcard jobs. (Spring's field arithmetic on
//!   `ZonedDateTime`, as we read it, would fire a fixed 02:30 in both passes; not
//!   doing so is the one deliberate difference.)

mod describe;
mod next;
mod parse;
#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// One of the five fields, used to say where a parse error is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CronField {
    Minute,
    Hour,
    DayOfMonth,
    Month,
    DayOfWeek,
}

impl CronField {
    /// The field's name as an error message uses it.
    pub fn name(self) -> &'static str {
        match self {
            CronField::Minute => "minute",
            CronField::Hour => "hour",
            CronField::DayOfMonth => "day-of-month",
            CronField::Month => "month",
            CronField::DayOfWeek => "day-of-week",
        }
    }

    /// Inclusive numeric range accepted in the field (day-of-week admits 7 = Sunday).
    pub fn bounds(self) -> (u32, u32) {
        match self {
            CronField::Minute => (0, 59),
            CronField::Hour => (0, 23),
            CronField::DayOfMonth => (1, 31),
            CronField::Month => (1, 12),
            CronField::DayOfWeek => (0, 7),
        }
    }
}

impl fmt::Display for CronField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why an expression was rejected. Each variant names the field and the offending text
/// so the API error can be shown to the user as is.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum CronError {
    #[error("a cron expression has 5 fields (minute hour day-of-month month day-of-week), found {found}")]
    FieldCount { found: usize },
    #[error("empty list item in the {field} field")]
    EmptyItem { field: CronField },
    #[error("'{value}' is not a valid value in the {field} field")]
    InvalidValue { field: CronField, value: String },
    #[error("{value} is out of range {min}-{max} in the {field} field")]
    OutOfRange {
        field: CronField,
        value: u32,
        min: u32,
        max: u32,
    },
    #[error("range '{text}' in the {field} field runs backwards")]
    ReversedRange { field: CronField, text: String },
    #[error("step '{text}' in the {field} field must be a whole number of 1 or more")]
    InvalidStep { field: CronField, text: String },
    #[error("'?' is only allowed as the whole day-of-month or day-of-week field, not in the {field} field")]
    QuestionMark { field: CronField },
    #[error(
        "'{text}' in the {field} field uses a Quartz extension (L, W or #) that is not supported"
    )]
    Unsupported { field: CronField, text: String },
    #[error(
        "the expression never fires: none of the selected months has any of the selected days"
    )]
    NeverFires,
}

/// A parsed five-field expression: one bit set per field, so matching is a shift and
/// a mask, and the search for the next firing skips whole months, days and hours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CronExpr {
    source: String,
    minutes: u64,
    hours: u32,
    /// Bits 1..=31.
    days_of_month: u32,
    /// Bits 1..=12.
    months: u16,
    /// Bits 0..=6, Sunday = 0.
    days_of_week: u8,
}

pub(crate) const ALL_MINUTES: u64 = (1 << 60) - 1;
pub(crate) const ALL_HOURS: u32 = (1 << 24) - 1;
pub(crate) const ALL_DAYS_OF_MONTH: u32 = ((1u64 << 32) - 2) as u32;
pub(crate) const ALL_MONTHS: u16 = ((1 << 13) - 2) as u16;
pub(crate) const ALL_DAYS_OF_WEEK: u8 = (1 << 7) - 1;

impl CronExpr {
    /// Parses a five-field expression (see the module documentation for the syntax).
    pub fn parse(text: &str) -> Result<Self, CronError> {
        parse::parse(text)
    }

    /// The expression as given, with runs of white space collapsed to one space; what
    /// the API stores and echoes back as `schedule`.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether minute `m` (0..=59) is selected.
    pub fn matches_minute(&self, m: u32) -> bool {
        m < 60 && self.minutes >> m & 1 == 1
    }

    /// Whether hour `h` (0..=23) is selected.
    pub fn matches_hour(&self, h: u32) -> bool {
        h < 24 && self.hours >> h & 1 == 1
    }

    /// Whether day of month `d` (1..=31) is selected.
    pub fn matches_day_of_month(&self, d: u32) -> bool {
        d < 32 && self.days_of_month >> d & 1 == 1
    }

    /// Whether month `m` (1..=12) is selected.
    pub fn matches_month(&self, m: u32) -> bool {
        m < 13 && self.months >> m & 1 == 1
    }

    /// Whether weekday `w` (0 = Sunday ..= 6 = Saturday) is selected.
    pub fn matches_day_of_week(&self, w: u32) -> bool {
        w < 7 && self.days_of_week >> w & 1 == 1
    }

    /// Whether a local wall-clock time matches every field (seconds are ignored).
    pub fn matches_local(&self, local: &chrono::NaiveDateTime) -> bool {
        use chrono::{Datelike, Timelike};
        self.matches_minute(local.minute())
            && self.matches_hour(local.hour())
            && self.matches_day_of_month(local.day())
            && self.matches_month(local.month())
            && self.matches_day_of_week(local.weekday().num_days_from_sunday())
    }

    /// True when every hour is selected; such an expression follows elapsed time
    /// through a repeated (fall-back) hour instead of firing once per wall-clock time.
    pub fn every_hour(&self) -> bool {
        self.hours == ALL_HOURS
    }

    /// A short English description, e.g. "at 09:30 on Monday through Friday"; used
    /// for the default schedule description `"<ACTION> - <description>"`.
    pub fn describe(&self) -> String {
        describe::describe(self)
    }
}

impl fmt::Display for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl FromStr for CronExpr {
    type Err = CronError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CronExpr::parse(s)
    }
}
