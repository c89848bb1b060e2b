//! Finding the next firing time.
//!
//! Two layers. [`CronExpr::next_local`] walks wall-clock fields (month, day, hour,
//! minute), jumping straight to the next selected value of the first field that
//! does not match, so a yearly expression costs a handful of steps rather than half
//! a million minutes. [`CronExpr::next_after`] maps those wall-clock candidates onto
//! the UTC time line of a zone, which is where daylight saving enters: a candidate
//! is converted with the offset in force at the search position, and if the offset
//! in force at the result differs, a transition lies in between and the search
//! restarts from the transition instant with the new offset.

use chrono::{
    DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, Offset, TimeDelta, TimeZone,
    Timelike, Utc,
};
use chrono_tz::Tz;

use super::CronExpr;

/// The Gregorian calendar repeats every 400 years, so any (month, day, weekday)
/// combination that exists at all occurs within that span.
const YEAR_HORIZON: i32 = 401;
/// Each round of the zone-aware search either returns, crosses an offset
/// transition or leaves a repeated hour, so a handful is enough; the cap only
/// guards against a zone table the reasoning did not foresee.
const MAX_ROUNDS: usize = 64;

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => 31,
    }
}

/// 0 = Sunday. Sakamoto's method: no `NaiveDate` needed in the inner loop.
fn weekday(year: i32, month: u32, day: u32) -> u32 {
    const T: [i32; 12] = [0, 3, 2, 5, 0, 3, 5, 1, 4, 6, 2, 4];
    let y = if month < 3 { year - 1 } else { year };
    (y + y.div_euclid(4) - y.div_euclid(100)
        + y.div_euclid(400)
        + T[month as usize - 1]
        + day as i32)
        .rem_euclid(7) as u32
}

/// Lowest set bit at or above `from`, if any.
fn next_bit(bits: u64, from: u32) -> Option<u32> {
    if from >= 64 {
        return None;
    }
    let rest = bits >> from;
    (rest != 0).then(|| from + rest.trailing_zeros())
}

fn offset_secs(tz: &Tz, utc: &NaiveDateTime) -> i64 {
    i64::from(tz.offset_from_utc_datetime(utc).fix().local_minus_utc())
}

/// `t` rounded up to a whole minute.
fn ceil_minute(t: NaiveDateTime) -> NaiveDateTime {
    let floor = t
        .with_second(0)
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(t);
    if floor == t {
        t
    } else {
        floor + TimeDelta::minutes(1)
    }
}

/// The first whole second in `(lo, hi]` whose UTC offset differs from `lo_offset`
/// (the offset at `lo`); `hi` must have a different offset. Binary search over
/// seconds: chrono-tz exposes offsets, not its transition table.
fn offset_change(tz: &Tz, lo: NaiveDateTime, hi: NaiveDateTime, lo_offset: i64) -> NaiveDateTime {
    let mut lo_s = lo.and_utc().timestamp();
    let mut hi_s = hi.and_utc().timestamp();
    if hi.and_utc().timestamp_subsec_nanos() > 0 {
        hi_s += 1;
    }
    while hi_s - lo_s > 1 {
        let mid = lo_s + (hi_s - lo_s) / 2;
        let at = DateTime::from_timestamp(mid, 0).map(|d| d.naive_utc());
        match at {
            Some(at) if offset_secs(tz, &at) == lo_offset => lo_s = mid,
            _ => hi_s = mid,
        }
    }
    DateTime::from_timestamp(hi_s, 0).map_or(hi, |d| d.naive_utc())
}

impl CronExpr {
    /// The first wall-clock minute at or after `from` (taken as minute-aligned) that
    /// matches every field, ignoring time zones; `None` past the 400-year horizon.
    pub fn next_local(&self, from: NaiveDateTime) -> Option<NaiveDateTime> {
        let (mut y, mut mo, mut d) = (from.year(), from.month(), from.day());
        let (mut h, mut mi) = (from.hour(), from.minute());
        let limit = y.checked_add(YEAR_HORIZON)?;
        loop {
            if y > limit {
                return None;
            }
            if !self.matches_month(mo) {
                match next_bit(u64::from(self.months), mo + 1) {
                    Some(m) if m <= 12 => mo = m,
                    _ => {
                        y += 1;
                        mo = next_bit(u64::from(self.months), 1)?;
                    }
                }
                (d, h, mi) = (1, 0, 0);
                continue;
            }
            let dim = days_in_month(y, mo);
            let next_day = if d > dim {
                None
            } else if !self.matches_day_of_month(d) {
                next_bit(u64::from(self.days_of_month), d + 1).filter(|&nd| nd <= dim)
            } else {
                Some(d)
            };
            match next_day {
                None => {
                    // Nothing left in this month.
                    mo += 1;
                    if mo > 12 {
                        mo = 1;
                        y += 1;
                    }
                    (d, h, mi) = (1, 0, 0);
                    continue;
                }
                Some(nd) if nd != d => {
                    (d, h, mi) = (nd, 0, 0);
                    continue;
                }
                Some(_) => {}
            }
            if !self.matches_day_of_week(weekday(y, mo, d)) {
                (d, h, mi) = (d + 1, 0, 0);
                continue;
            }
            if !self.matches_hour(h) {
                match next_bit(u64::from(self.hours), h + 1).filter(|&nh| nh < 24) {
                    Some(nh) => (h, mi) = (nh, 0),
                    None => (d, h, mi) = (d + 1, 0, 0),
                }
                continue;
            }
            if !self.matches_minute(mi) {
                match next_bit(self.minutes, mi + 1).filter(|&nm| nm < 60) {
                    Some(nm) => mi = nm,
                    None if h < 23 => (h, mi) = (h + 1, 0),
                    None => (d, h, mi) = (d + 1, 0, 0),
                }
                continue;
            }
            return NaiveDate::from_ymd_opt(y, mo, d)?.and_hms_opt(h, mi, 0);
        }
    }

    /// The first firing strictly after `after`, with the fields read as wall-clock
    /// time in `tz`. `None` only when the expression cannot fire again within the
    /// supported date range.
    ///
    /// Daylight saving: a wall-clock time inside a spring-forward gap does not exist
    /// and is skipped (Spring's behaviour; the next matching time that exists is
    /// returned). A wall-clock time that occurs twice fires at its first occurrence;
    /// the second occurrence fires too only when every hour is selected (see the
    /// module documentation).
    pub fn next_after(&self, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let every_hour = self.every_hour();
        // Strictly after: the search starts one nanosecond later.
        let mut t = after
            .naive_utc()
            .checked_add_signed(TimeDelta::nanoseconds(1))?;
        for _ in 0..MAX_ROUNDS {
            let off = offset_secs(&tz, &t);
            let local = t.checked_add_signed(TimeDelta::seconds(off))?;
            let m = self.next_local(ceil_minute(local))?;
            let c = m.checked_sub_signed(TimeDelta::seconds(off))?;

            // A transition between t and c: m maps to UTC with another offset (or
            // lies in a gap). Restart from the transition with its new offset.
            if offset_secs(&tz, &c) != off {
                t = offset_change(&tz, t, c, off);
                continue;
            }

            // t in the first pass of a repeated hour: the second pass revisits wall
            // times before local(t), which an every-hour expression may select.
            if every_hour {
                if let LocalResult::Ambiguous(first, second) = tz.from_local_datetime(&local) {
                    let (first, second) = (first.naive_utc(), second.naive_utc());
                    let (first, second) = (first.min(second), first.max(second));
                    if t < second && c > t {
                        let tr = offset_change(&tz, first, second, offset_secs(&tz, &first));
                        if tr <= c && tr > t {
                            t = tr;
                            continue;
                        }
                    }
                }
            }

            // m itself may occur twice; take the first occurrence not before t.
            if let LocalResult::Ambiguous(a, b) = tz.from_local_datetime(&m) {
                let (a, b) = (a.naive_utc(), b.naive_utc());
                let (first, second) = (a.min(b), a.max(b));
                if first >= t {
                    return Some(first.and_utc());
                }
                if every_hour {
                    return Some(second.and_utc());
                }
                // Fixed-hour expression: the repeat does not fire. Leave the repeated
                // stretch, which ends one offset difference after the transition.
                let tr = offset_change(&tz, first, second, offset_secs(&tz, &first));
                let repeat_end = tr + (second - first);
                if repeat_end <= t {
                    return None;
                }
                t = repeat_end;
                continue;
            }
            return Some(c.and_utc());
        }
        None
    }
}
