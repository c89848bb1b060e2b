use chrono::{DateTime, NaiveDate, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

use super::*;

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
}

fn tz(name: &str) -> Tz {
    name.parse().unwrap()
}

fn cron(s: &str) -> CronExpr {
    CronExpr::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// The next `n` firings after `from`.
fn firings(expr: &str, zone: &str, from: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
    let c = cron(expr);
    let z = tz(zone);
    let mut out = Vec::new();
    let mut t = from;
    for _ in 0..n {
        t = c.next_after(t, z).expect("fires");
        out.push(t);
    }
    out
}

#[test]
fn parses_the_supported_syntax() {
    let c = cron("*/15 9-17 1,15 JAN-mar mon-FRI");
    assert!(c.matches_minute(45) && !c.matches_minute(50));
    assert!(c.matches_hour(9) && c.matches_hour(17) && !c.matches_hour(18));
    assert!(c.matches_day_of_month(15) && !c.matches_day_of_month(2));
    assert!(c.matches_month(3) && !c.matches_month(4));
    assert!(c.matches_day_of_week(1) && c.matches_day_of_week(5) && !c.matches_day_of_week(0));
    assert_eq!(c.as_str(), "*/15 9-17 1,15 JAN-mar mon-FRI");

    // 0 and 7 are both Sunday; SUN opening a range is 0; FRI-SUN runs to 7.
    assert!(cron("0 0 * * 7").matches_day_of_week(0));
    assert!(cron("0 0 * * 0").matches_day_of_week(0));
    let sun_fri = cron("0 0 * * SUN-FRI");
    assert!((0..=5).all(|d| sun_fri.matches_day_of_week(d)) && !sun_fri.matches_day_of_week(6));
    let fri_sun = cron("0 0 * * FRI-SUN");
    assert!([5, 6, 0].iter().all(|&d| fri_sun.matches_day_of_week(d)));
    // Spring's `*` for weekdays is MON..SUN, so */2 is MON, WED, FRI, SUN.
    let every_other = cron("0 0 * * */2");
    let picked: Vec<u32> = (0..7)
        .filter(|&d| every_other.matches_day_of_week(d))
        .collect();
    assert_eq!(picked, vec![0, 1, 3, 5]);
    // `a/n` is a..max.
    let from_ten = cron("10/20 * * * *");
    let picked: Vec<u32> = (0..60).filter(|&m| from_ten.matches_minute(m)).collect();
    assert_eq!(picked, vec![10, 30, 50]);
    let stepped = cron("5-20/5 * * * *");
    let picked: Vec<u32> = (0..60).filter(|&m| stepped.matches_minute(m)).collect();
    assert_eq!(picked, vec![5, 10, 15, 20]);
    // `?` is `*` in the day fields; extra white space is tolerated and normalised.
    let q = cron(" 0  12 ? *  ? ");
    assert_eq!(q.as_str(), "0 12 ? * ?");
    assert!(q.matches_day_of_month(31) && q.matches_day_of_week(6));
}

#[test]
fn errors_name_what_is_wrong() {
    let err = |s: &str| CronExpr::parse(s).unwrap_err();
    assert_eq!(err("* * * *"), CronError::FieldCount { found: 4 });
    assert_eq!(err("0 0 * * * *"), CronError::FieldCount { found: 6 });
    assert_eq!(
        err("60 * * * *"),
        CronError::OutOfRange {
            field: CronField::Minute,
            value: 60,
            min: 0,
            max: 59
        }
    );
    assert_eq!(
        err("0 24 * * *").to_string(),
        "24 is out of range 0-23 in the hour field"
    );
    assert_eq!(
        err("0 0 0 * *"),
        CronError::OutOfRange {
            field: CronField::DayOfMonth,
            value: 0,
            min: 1,
            max: 31
        }
    );
    assert!(matches!(
        err("0 0 * 13 *"),
        CronError::OutOfRange {
            field: CronField::Month,
            ..
        }
    ));
    assert!(matches!(
        err("0 0 * * 8"),
        CronError::OutOfRange {
            field: CronField::DayOfWeek,
            ..
        }
    ));
    assert!(matches!(
        err("0 0 * FOO *"),
        CronError::InvalidValue {
            field: CronField::Month,
            ..
        }
    ));
    assert!(matches!(
        err("0 0 * * MON-"),
        CronError::InvalidValue { .. }
    ));
    assert!(matches!(
        err("5-1 * * * *"),
        CronError::ReversedRange {
            field: CronField::Minute,
            ..
        }
    ));
    assert!(matches!(err("*/0 * * * *"), CronError::InvalidStep { .. }));
    assert!(matches!(err("*/x * * * *"), CronError::InvalidStep { .. }));
    assert!(matches!(
        err("0 ? * * *"),
        CronError::QuestionMark {
            field: CronField::Hour
        }
    ));
    assert!(matches!(err("0 0 1,? * *"), CronError::QuestionMark { .. }));
    assert!(matches!(err("0 0 1,,2 * *"), CronError::EmptyItem { .. }));
    assert!(matches!(
        err("0 0 L * *"),
        CronError::Unsupported {
            field: CronField::DayOfMonth,
            ..
        }
    ));
    assert!(matches!(err("0 0 15W * *"), CronError::Unsupported { .. }));
    assert!(matches!(
        err("0 0 * * 5#2"),
        CronError::Unsupported {
            field: CronField::DayOfWeek,
            ..
        }
    ));
    assert!(matches!(err("0 0 * * FRIL"), CronError::Unsupported { .. }));
    assert!(matches!(
        err("0 0 * * WEDX"),
        CronError::InvalidValue { .. }
    ));
    assert!(cron("0 0 * * WED").matches_day_of_week(3));
    assert_eq!(err("0 0 30 2 *"), CronError::NeverFires);
    assert_eq!(err("0 0 31 4,6,9,11 *"), CronError::NeverFires);
    // Feb 29 exists (in leap years).
    assert!(CronExpr::parse("0 0 29 2 *").is_ok());
    assert!(err("-1 * * * *").to_string().contains("minute"));
}

#[test]
fn next_after_is_strict_and_minute_aligned() {
    let c = cron("* * * * *");
    let t = utc(2026, 5, 1, 10, 0);
    assert_eq!(c.next_after(t, Tz::UTC), Some(utc(2026, 5, 1, 10, 1)));
    let mid = t + TimeDelta::seconds(30);
    assert_eq!(c.next_after(mid, Tz::UTC), Some(utc(2026, 5, 1, 10, 1)));
    let just_before = t - TimeDelta::nanoseconds(1);
    assert_eq!(c.next_after(just_before, Tz::UTC), Some(t));
}

#[test]
fn utc_field_skipping() {
    let from = utc(2026, 1, 1, 0, 0);
    // Weekdays at 09:30: Jan 1 2026 is a Thursday.
    assert_eq!(
        firings("30 9 * * MON-FRI", "UTC", from, 3),
        vec![
            utc(2026, 1, 1, 9, 30),
            utc(2026, 1, 2, 9, 30),
            utc(2026, 1, 5, 9, 30)
        ]
    );
    // Friday the 13th only (day-of-month AND day-of-week, as Spring).
    assert_eq!(
        firings("0 0 13 * FRI", "UTC", from, 2),
        vec![utc(2026, 2, 13, 0, 0), utc(2026, 3, 13, 0, 0)]
    );
    // Leap day.
    assert_eq!(
        firings("0 12 29 2 *", "UTC", from, 2),
        vec![utc(2028, 2, 29, 12, 0), utc(2032, 2, 29, 12, 0)]
    );
    // Leap day on a Monday: 2016 was, the next is 2044.
    assert_eq!(
        firings("0 0 29 2 MON", "UTC", from, 1),
        vec![utc(2044, 2, 29, 0, 0)]
    );
    // Day 31 only in long months.
    assert_eq!(
        firings("0 0 31 * *", "UTC", from, 3),
        vec![
            utc(2026, 1, 31, 0, 0),
            utc(2026, 3, 31, 0, 0),
            utc(2026, 5, 31, 0, 0)
        ]
    );
    // Year rollover.
    assert_eq!(
        firings("59 23 31 DEC *", "UTC", utc(2026, 12, 31, 23, 59), 1),
        vec![utc(2027, 12, 31, 23, 59)]
    );
    // Hour rollover inside a day.
    assert_eq!(
        firings("15,45 8,20 * * *", "UTC", utc(2026, 6, 1, 8, 45), 3),
        vec![
            utc(2026, 6, 1, 20, 15),
            utc(2026, 6, 1, 20, 45),
            utc(2026, 6, 2, 8, 15)
        ]
    );
}

#[test]
fn evaluates_in_the_schedule_time_zone() {
    // 09:00 in Kolkata (+05:30) is 03:30 UTC.
    assert_eq!(
        firings("0 9 * * *", "Asia/Kolkata", utc(2026, 1, 1, 0, 0), 1),
        vec![utc(2026, 1, 1, 3, 30)]
    );
    // Weekday evaluated locally: Monday 08:00 in Sydney is Sunday 21:00 UTC (AEDT +11).
    assert_eq!(
        firings("0 8 * * MON", "Australia/Sydney", utc(2026, 1, 1, 0, 0), 1),
        vec![utc(2026, 1, 4, 21, 0)]
    );
}

// Europe/Berlin 2026: clocks go 02:00 CET -> 03:00 CEST on 29 March (01:00 UTC) and
// 03:00 CEST -> 02:00 CET on 25 October (01:00 UTC).

#[test]
fn berlin_spring_forward_skips_the_missing_time() {
    // 02:30 does not exist on 29 March: next is 02:30 CEST on the 30th (00:30 UTC).
    assert_eq!(
        firings("30 2 * * *", "Europe/Berlin", utc(2026, 3, 28, 12, 0), 2),
        vec![utc(2026, 3, 29 + 1, 0, 30), utc(2026, 3, 31, 0, 30)]
    );
    // Times either side are unaffected: 01:30 CET and 03:30 CEST on the 29th.
    assert_eq!(
        firings("30 1,3 * * *", "Europe/Berlin", utc(2026, 3, 28, 23, 0), 2),
        vec![utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 1, 30)]
    );
    // Hourly: 01:00 CET then 03:00 CEST, one real hour apart.
    assert_eq!(
        firings("0 * * * *", "Europe/Berlin", utc(2026, 3, 28, 23, 30), 3),
        vec![
            utc(2026, 3, 29, 0, 0),
            utc(2026, 3, 29, 1, 0),
            utc(2026, 3, 29, 2, 0)
        ]
    );
    // Every 15 minutes carries straight on through the jump.
    assert_eq!(
        firings("*/15 * * * *", "Europe/Berlin", utc(2026, 3, 29, 0, 40), 3),
        vec![
            utc(2026, 3, 29, 0, 45),
            utc(2026, 3, 29, 1, 0),
            utc(2026, 3, 29, 1, 15)
        ]
    );
    // A daily time crossing the switch keeps its wall-clock time.
    assert_eq!(
        firings("0 9 * * *", "Europe/Berlin", utc(2026, 3, 28, 12, 0), 1),
        vec![utc(2026, 3, 29, 7, 0)]
    );
}

#[test]
fn berlin_fall_back_fires_a_fixed_time_once() {
    // 02:30 happens twice on 25 October (00:30 and 01:30 UTC): only the first fires.
    assert_eq!(
        firings("30 2 * * *", "Europe/Berlin", utc(2026, 10, 24, 12, 0), 2),
        vec![utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]
    );
    // Asked from inside the repeated hour, the repeat is still skipped.
    assert_eq!(
        firings("30 2 * * *", "Europe/Berlin", utc(2026, 10, 25, 1, 10), 1),
        vec![utc(2026, 10, 26, 1, 30)]
    );
    // Every minute of hour 2: 60 firings in the first pass, none in the second.
    let all = firings("* 2 * * *", "Europe/Berlin", utc(2026, 10, 24, 23, 0), 61);
    assert_eq!(all[0], utc(2026, 10, 25, 0, 0));
    assert_eq!(all[59], utc(2026, 10, 25, 0, 59));
    assert_eq!(all[60], utc(2026, 10, 26, 1, 0));
    // A daily time crossing the switch keeps its wall-clock time.
    assert_eq!(
        firings("0 9 * * *", "Europe/Berlin", utc(2026, 10, 24, 12, 0), 1),
        vec![utc(2026, 10, 25, 8, 0)]
    );
}

#[test]
fn berlin_fall_back_every_hour_follows_elapsed_time() {
    // Hourly at :30 fires in both passes of the repeated hour.
    assert_eq!(
        firings("30 * * * *", "Europe/Berlin", utc(2026, 10, 25, 0, 0), 3),
        vec![
            utc(2026, 10, 25, 0, 30),
            utc(2026, 10, 25, 1, 30),
            utc(2026, 10, 25, 2, 30)
        ]
    );
    // From late in the first pass, the second pass comes next.
    assert_eq!(
        firings("10 * * * *", "Europe/Berlin", utc(2026, 10, 25, 0, 50), 2),
        vec![utc(2026, 10, 25, 1, 10), utc(2026, 10, 25, 2, 10)]
    );
    assert_eq!(
        firings("*/20 * * * *", "Europe/Berlin", utc(2026, 10, 25, 0, 30), 6),
        vec![
            utc(2026, 10, 25, 0, 40),
            utc(2026, 10, 25, 1, 0),
            utc(2026, 10, 25, 1, 20),
            utc(2026, 10, 25, 1, 40),
            utc(2026, 10, 25, 2, 0),
            utc(2026, 10, 25, 2, 20)
        ]
    );
}

// America/New_York 2026: 02:00 EST -> 03:00 EDT on 8 March (07:00 UTC);
// 02:00 EDT -> 01:00 EST on 1 November (06:00 UTC).

#[test]
fn new_york_transitions() {
    assert_eq!(
        firings("30 2 * * *", "America/New_York", utc(2026, 3, 7, 3, 0), 2),
        vec![utc(2026, 3, 7, 7, 30), utc(2026, 3, 9, 6, 30)]
    );
    assert_eq!(
        firings(
            "30 1 * * *",
            "America/New_York",
            utc(2026, 10, 31, 12, 0),
            2
        ),
        vec![utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]
    );
    assert_eq!(
        firings("45 * * * *", "America/New_York", utc(2026, 11, 1, 4, 50), 3),
        vec![
            utc(2026, 11, 1, 5, 45),
            utc(2026, 11, 1, 6, 45),
            utc(2026, 11, 1, 7, 45)
        ]
    );
}

#[test]
fn springs_own_daylight_saving_cases() {
    // From Spring's CronExpressionTests.daylightSaving (seconds field dropped).
    let ams = "Europe/Amsterdam";
    assert_eq!(
        firings("0 9 * * *", ams, utc(2021, 3, 27, 8, 0), 1),
        vec![utc(2021, 3, 28, 7, 0)]
    );
    assert_eq!(
        firings("0 9 * * *", ams, utc(2021, 10, 30, 7, 0), 1),
        vec![utc(2021, 10, 31, 8, 0)]
    );
    // 2013-03-31T01:09+01:00 -> 2013-04-01T02:10+02:00: the gap time is skipped.
    assert_eq!(
        firings("10 2 * * *", ams, utc(2013, 3, 31, 0, 9), 1),
        vec![utc(2013, 4, 1, 0, 10)]
    );
    // 2021-03-28T01:00+01:00 -> 2021-03-29T00:05+02:00.
    assert_eq!(
        firings("5 0 * * *", ams, utc(2021, 3, 28, 0, 0), 1),
        vec![utc(2021, 3, 28, 22, 5)]
    );
}

#[test]
fn half_hour_dst_zone() {
    // Lord Howe moves by 30 minutes: 02:00 -> 02:30 on 5 April 2026 (+11 -> +10:30)
    // and 02:00 -> 02:30 forward on 4 October 2026 (+10:30 -> +11).
    let lh = "Australia/Lord_Howe";
    // In October 02:10 does not exist: skipped to the next day.
    let oct = firings("10 2 * * *", lh, utc(2026, 10, 3, 12, 0), 1);
    assert_eq!(oct, vec![utc(2026, 10, 4, 15, 10)]);
    // In April 01:45 occurs twice (before and after the 02:00 -> 01:30 step back).
    let apr = firings("45 1 * * *", lh, utc(2026, 4, 4, 12, 0), 2);
    assert_eq!(apr, vec![utc(2026, 4, 4, 14, 45), utc(2026, 4, 5, 15, 15)]);
}

#[test]
fn next_local_ignores_zones() {
    let c = cron("0 0 1 JAN *");
    let from = NaiveDate::from_ymd_opt(2026, 1, 1)
        .unwrap()
        .and_hms_opt(0, 1, 0)
        .unwrap();
    assert_eq!(
        c.next_local(from),
        NaiveDate::from_ymd_opt(2027, 1, 1)
            .unwrap()
            .and_hms_opt(0, 0, 0)
    );
}

#[test]
fn describes_in_english() {
    let d = |s: &str| cron(s).describe();
    assert_eq!(d("* * * * *"), "every minute every day");
    assert_eq!(d("30 9 * * *"), "at 09:30 every day");
    assert_eq!(d("0 8 * * MON-FRI"), "at 08:00 on Monday through Friday");
    assert_eq!(d("0 8 * * 1-5"), d("0 8 * * MON-FRI"));
    assert_eq!(d("*/5 * * * *"), "every 5 minutes every day");
    assert_eq!(
        d("0 9,18 * * SAT,SUN"),
        "at 09:00 and 18:00 on Saturday and Sunday"
    );
    assert_eq!(d("15 * * * *"), "at minute 15 past every hour every day");
    assert_eq!(
        d("*/10 9-17 * * *"),
        "every 10 minutes between 09:00 and 17:59 every day"
    );
    assert_eq!(d("0 0 1 * *"), "at 00:00 on the 1st of the month");
    assert_eq!(
        d("0 0 13 * FRI"),
        "at 00:00 on the 13th of the month if it is a Friday"
    );
    assert_eq!(
        d("0 6 * JAN-MAR *"),
        "at 06:00 every day in January through March"
    );
    assert_eq!(d("0 6 * * FRI-SUN"), "at 06:00 on Friday through Sunday");
    assert_eq!(
        d("0 */2 * * *"),
        "at minute 0 past every 2nd hour every day"
    );
}
