//! Snapshot policy schedules as CloudStack writes them: an interval type and
//! a short `MM[:HH[:DD]]` string, evaluated in the policy's time zone.
//!
//! | interval | schedule   | fires                                          |
//! |----------|------------|------------------------------------------------|
//! | HOURLY   | `MM`       | every hour at minute MM                        |
//! | DAILY    | `MM:HH`    | every day at HH:MM                             |
//! | WEEKLY   | `MM:HH:D`  | every week on day D (1 Sunday .. 7 Saturday)   |
//! | MONTHLY  | `MM:HH:DD` | every month on day DD (1-28, so every month has it) |
//!
//! Out-of-range fields are refused (CloudStack's calendar would roll them
//! over silently). A local time that a daylight-saving change skips fires
//! at the first instant after the gap; one that occurs twice fires once, at
//! the first.

use chrono::{
    DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc, Weekday,
};
use chrono_tz::Tz;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IntervalType {
    Hourly,
    Daily,
    Weekly,
    Monthly,
}

impl IntervalType {
    pub fn parse(s: &str) -> Option<IntervalType> {
        match s.trim().to_ascii_uppercase().as_str() {
            "HOURLY" => Some(IntervalType::Hourly),
            "DAILY" => Some(IntervalType::Daily),
            "WEEKLY" => Some(IntervalType::Weekly),
            "MONTHLY" => Some(IntervalType::Monthly),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            IntervalType::Hourly => "HOURLY",
            IntervalType::Daily => "DAILY",
            IntervalType::Weekly => "WEEKLY",
            IntervalType::Monthly => "MONTHLY",
        }
    }

    /// CloudStack's number for it in responses (0 HOURLY .. 3 MONTHLY).
    pub fn ordinal(self) -> i64 {
        match self {
            IntervalType::Hourly => 0,
            IntervalType::Daily => 1,
            IntervalType::Weekly => 2,
            IntervalType::Monthly => 3,
        }
    }
}

/// A parsed policy schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntervalSchedule {
    pub interval: IntervalType,
    pub minute: u32,
    pub hour: u32,
    /// Day of week (1 Sunday .. 7 Saturday) or of month (1-28).
    pub day: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct IntervalError(pub String);

fn field(parts: &[&str], i: usize, name: &str, max: u32, min: u32) -> Result<u32, IntervalError> {
    let raw = parts
        .get(i)
        .ok_or_else(|| IntervalError(format!("the {name} is missing")))?;
    let v: u32 = raw
        .trim()
        .parse()
        .map_err(|_| IntervalError(format!("the {name} {raw:?} is not a number")))?;
    if v < min || v > max {
        return Err(IntervalError(format!(
            "the {name} {v} is outside {min}-{max}"
        )));
    }
    Ok(v)
}

impl IntervalSchedule {
    pub fn parse(
        interval: IntervalType,
        schedule: &str,
    ) -> Result<IntervalSchedule, IntervalError> {
        let parts: Vec<&str> = schedule.split(':').collect();
        let want = match interval {
            IntervalType::Hourly => 1,
            IntervalType::Daily => 2,
            IntervalType::Weekly | IntervalType::Monthly => 3,
        };
        if parts.len() != want {
            return Err(IntervalError(format!(
                "{} takes {} field(s) separated by ':', got {}",
                interval.as_str(),
                want,
                parts.len()
            )));
        }
        let minute = field(&parts, 0, "minute", 59, 0)?;
        let hour = if want >= 2 {
            field(&parts, 1, "hour", 23, 0)?
        } else {
            0
        };
        let day = match interval {
            IntervalType::Weekly => field(&parts, 2, "day of the week", 7, 1)?,
            IntervalType::Monthly => field(&parts, 2, "day of the month", 28, 1)?,
            _ => 0,
        };
        Ok(IntervalSchedule {
            interval,
            minute,
            hour,
            day,
        })
    }

    /// The first firing strictly after `after`.
    pub fn next_after(&self, tz: Tz, after: DateTime<Utc>) -> DateTime<Utc> {
        let local = after.with_timezone(&tz).naive_local();
        // The candidate in the period containing `after`, then the next
        // periods until one lies after it (at most a few steps; a skipped
        // local time moves a candidate forward, never back).
        let mut c = self.candidate(local);
        for _ in 0..400 {
            let at = resolve(tz, c);
            if at > after {
                return at;
            }
            c = self.step(c);
        }
        // Unreachable for valid schedules; a day later is a safe answer.
        after + Duration::days(1)
    }

    fn candidate(&self, local: NaiveDateTime) -> NaiveDateTime {
        let d = local.date();
        let date = match self.interval {
            IntervalType::Hourly => {
                return d.and_hms_opt(local.hour(), self.minute, 0).expect("valid")
            }
            IntervalType::Daily => d,
            IntervalType::Weekly => {
                let want = weekday(self.day);
                let back =
                    (d.weekday().num_days_from_sunday() + 7 - want.num_days_from_sunday()) % 7;
                d - Duration::days(back as i64)
            }
            IntervalType::Monthly => {
                NaiveDate::from_ymd_opt(d.year(), d.month(), self.day).expect("day <= 28")
            }
        };
        date.and_hms_opt(self.hour, self.minute, 0).expect("valid")
    }

    fn step(&self, c: NaiveDateTime) -> NaiveDateTime {
        match self.interval {
            IntervalType::Hourly => c + Duration::hours(1),
            IntervalType::Daily => c + Duration::days(1),
            IntervalType::Weekly => c + Duration::days(7),
            IntervalType::Monthly => {
                let (y, m) = if c.month() == 12 {
                    (c.year() + 1, 1)
                } else {
                    (c.year(), c.month() + 1)
                };
                NaiveDate::from_ymd_opt(y, m, self.day)
                    .expect("day <= 28")
                    .and_time(c.time())
            }
        }
    }
}

/// What a policy does at a tick, given the due time it was waiting for:
/// the same rule as instance schedules (`plan::catch_up`). The latest time
/// that fell due (however many were missed) runs once when it is within
/// `grace` of now, and is skipped otherwise; either way the policy then
/// waits for its next future time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyTick {
    /// Not due yet.
    Pending,
    /// Take a snapshot now (for `due`); next at `next`.
    Fire {
        due: DateTime<Utc>,
        next: DateTime<Utc>,
    },
    /// Too late for `due`: skipped; next at `next`.
    Skip {
        due: DateTime<Utc>,
        next: DateTime<Utc>,
    },
}

impl IntervalSchedule {
    pub fn tick(
        &self,
        tz: Tz,
        waiting_for: DateTime<Utc>,
        now: DateTime<Utc>,
        grace: Duration,
    ) -> PolicyTick {
        if waiting_for > now {
            return PolicyTick::Pending;
        }
        let mut due = waiting_for;
        let mut next = self.next_after(tz, due);
        while next <= now {
            due = next;
            next = self.next_after(tz, due);
        }
        if now - due <= grace {
            PolicyTick::Fire { due, next }
        } else {
            PolicyTick::Skip { due, next }
        }
    }
}

fn weekday(day: u32) -> Weekday {
    match day {
        1 => Weekday::Sun,
        2 => Weekday::Mon,
        3 => Weekday::Tue,
        4 => Weekday::Wed,
        5 => Weekday::Thu,
        6 => Weekday::Fri,
        _ => Weekday::Sat,
    }
}

/// A local time as an instant: the first of two, or the first instant after
/// a gap.
fn resolve(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    let mut l = local;
    for _ in 0..48 {
        if let Some(t) = tz.from_local_datetime(&l).earliest() {
            return t.with_timezone(&Utc);
        }
        l += Duration::minutes(30);
    }
    Utc.from_utc_datetime(&local)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn sched(i: IntervalType, s: &str) -> IntervalSchedule {
        IntervalSchedule::parse(i, s).unwrap()
    }

    #[test]
    fn parsing_refuses_what_does_not_fit() {
        assert!(IntervalSchedule::parse(IntervalType::Hourly, "60").is_err());
        assert!(IntervalSchedule::parse(IntervalType::Hourly, "5:1").is_err());
        assert!(IntervalSchedule::parse(IntervalType::Daily, "5:24").is_err());
        assert!(IntervalSchedule::parse(IntervalType::Weekly, "0:1:0").is_err());
        assert!(IntervalSchedule::parse(IntervalType::Weekly, "0:1:8").is_err());
        assert!(IntervalSchedule::parse(IntervalType::Monthly, "0:1:29").is_err());
        assert!(IntervalSchedule::parse(IntervalType::Daily, "x:1").is_err());
        assert_eq!(IntervalType::parse("weekly"), Some(IntervalType::Weekly));
        assert_eq!(IntervalType::parse("yearly"), None);
    }

    #[test]
    fn each_interval_fires_when_its_fields_say() {
        let utc: Tz = "UTC".parse().unwrap();
        let now = at("2026-12-07T09:30:00Z"); // a Monday
        assert_eq!(
            sched(IntervalType::Hourly, "15").next_after(utc, now),
            at("2026-12-07T10:15:00Z")
        );
        assert_eq!(
            sched(IntervalType::Hourly, "45").next_after(utc, now),
            at("2026-12-07T09:45:00Z")
        );
        assert_eq!(
            sched(IntervalType::Daily, "0:9").next_after(utc, now),
            at("2026-12-08T09:00:00Z")
        );
        // 1 is Sunday.
        assert_eq!(
            sched(IntervalType::Weekly, "0:3:1").next_after(utc, now),
            at("2026-12-13T03:00:00Z")
        );
        assert_eq!(
            sched(IntervalType::Weekly, "45:9:2").next_after(utc, now),
            at("2026-12-07T09:45:00Z")
        );
        assert_eq!(
            sched(IntervalType::Monthly, "0:0:1").next_after(utc, now),
            at("2027-01-01T00:00:00Z")
        );
        // Exactly at a firing: the next one.
        assert_eq!(
            sched(IntervalType::Daily, "30:9").next_after(utc, now),
            at("2026-12-08T09:30:00Z")
        );
    }

    #[test]
    fn missed_times_run_once_within_the_grace_and_are_skipped_after_it() {
        let utc: Tz = "UTC".parse().unwrap();
        let s = sched(IntervalType::Hourly, "0");
        let grace = Duration::minutes(5);
        let at = at("2026-12-07T09:00:00Z");
        assert_eq!(
            s.tick(utc, at, at - Duration::seconds(1), grace),
            PolicyTick::Pending
        );
        assert_eq!(
            s.tick(utc, at, at + Duration::minutes(3), grace),
            PolicyTick::Fire {
                due: at,
                next: at + Duration::hours(1)
            }
        );
        // Down for 5 hours and 2 minutes: the 14:00 time is within the
        // grace and runs, once.
        assert_eq!(
            s.tick(utc, at, at + Duration::minutes(302), grace),
            PolicyTick::Fire {
                due: at + Duration::hours(5),
                next: at + Duration::hours(6)
            }
        );
        // 30 minutes past the last time: skipped.
        assert_eq!(
            s.tick(utc, at, at + Duration::minutes(330), grace),
            PolicyTick::Skip {
                due: at + Duration::hours(5),
                next: at + Duration::hours(6)
            }
        );
    }

    #[test]
    fn the_time_zone_decides_the_local_hour() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        assert_eq!(
            sched(IntervalType::Daily, "0:2").next_after(berlin, at("2026-12-07T09:30:00Z")),
            at("2026-12-08T01:00:00Z")
        );
        // 02:30 does not exist on 29 March 2026 in Berlin: the first
        // instant after the gap.
        let t = sched(IntervalType::Daily, "30:2").next_after(berlin, at("2026-03-28T12:00:00Z"));
        assert_eq!(t, at("2026-03-29T01:00:00Z"));
    }
}
