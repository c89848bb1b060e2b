//! Property tests: `next_after` returns a strictly later time whose wall-clock
//! fields match, and no matching time was skipped (checked against a minute-by-
//! minute scan with the documented daylight-saving rules).

use chrono::{DateTime, LocalResult, TimeDelta, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use orrery_schedule::CronExpr;
use proptest::prelude::*;

const ZONES: [&str; 8] = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "America/Santiago",
    "Pacific/Chatham",
    "Europe/London",
];

fn field(min: u32, max: u32) -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just("*".to_string()),
        3 => (min..=max).prop_map(|v| v.to_string()),
        2 => (min..=max, min..=max).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
        2 => proptest::collection::vec(min..=max, 2..4)
            .prop_map(|v| v.iter().map(u32::to_string).collect::<Vec<_>>().join(",")),
        2 => (1..=(max - min + 1).min(12)).prop_map(|n| format!("*/{n}")),
        1 => (min..=max, min..=max, 1u32..5)
            .prop_map(|(a, b, n)| format!("{}-{}/{n}", a.min(b), a.max(b))),
    ]
}

fn expr() -> impl Strategy<Value = String> {
    (
        field(0, 59),
        field(0, 23),
        prop_oneof![4 => Just("*".to_string()), 1 => field(1, 31)],
        prop_oneof![4 => Just("*".to_string()), 1 => field(1, 12)],
        prop_oneof![2 => Just("*".to_string()), 1 => field(0, 7)],
    )
        .prop_map(|(a, b, c, d, e)| format!("{a} {b} {c} {d} {e}"))
}

fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    // 2020-01-01 .. 2031-01-01, any second and nanosecond.
    (1_577_836_800i64..1_924_992_000, 0u32..1_000_000_000)
        .prop_map(|(s, ns)| DateTime::from_timestamp(s, ns).unwrap())
}

fn local(tz: Tz, t: DateTime<Utc>) -> chrono::NaiveDateTime {
    t.with_timezone(&tz).naive_local()
}

/// The documented rule, one minute at a time: a minute fires when its wall-clock
/// time matches, except the second occurrence of a repeated wall-clock time when
/// the hour field is restricted.
fn fires(c: &CronExpr, tz: Tz, t: DateTime<Utc>) -> bool {
    let l = local(tz, t);
    if l.second() != 0 || !c.matches_local(&l) {
        return false;
    }
    if c.every_hour() {
        return true;
    }
    match tz.from_local_datetime(&l) {
        LocalResult::Ambiguous(a, b) => t == a.with_timezone(&Utc).min(b.with_timezone(&Utc)),
        _ => true,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn next_after_is_later_and_matches(text in expr(), zone in 0..ZONES.len(), after in instant()) {
        let Ok(c) = CronExpr::parse(&text) else { return Ok(()); };
        let tz: Tz = ZONES[zone].parse().unwrap();
        let next = c.next_after(after, tz).expect("a satisfiable expression fires again");
        prop_assert!(next > after);
        let l = local(tz, next);
        prop_assert_eq!(l.second(), 0);
        prop_assert_eq!(next.nanosecond(), 0);
        prop_assert!(c.matches_local(&l), "{} at {} ({})", text, next, l);
        prop_assert!(fires(&c, tz, next), "{} at {}: a repeated time fired twice", text, next);
        // The result is itself a firing: asking from just before gives it back.
        prop_assert_eq!(c.next_after(next - TimeDelta::nanoseconds(1), tz), Some(next));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn nothing_is_skipped(text in expr(), zone in 0..ZONES.len(), after in instant()) {
        let Ok(c) = CronExpr::parse(&text) else { return Ok(()); };
        let tz: Tz = ZONES[zone].parse().unwrap();
        let next = c.next_after(after, tz).unwrap();
        // Scan at most 40 days, minute by minute (all these zones have whole-minute
        // offsets, so wall-clock minutes are UTC minutes).
        let limit = next.min(after + TimeDelta::days(40));
        let mut t = DateTime::from_timestamp(after.timestamp() - after.timestamp().rem_euclid(60) + 60, 0).unwrap();
        while t < limit {
            prop_assert!(!fires(&c, tz, t), "{} in {}: {} was skipped (got {})", text, ZONES[zone], t, next);
            t += TimeDelta::minutes(1);
        }
    }

    /// Same check concentrated on transition days, where the bugs would be.
    #[test]
    fn nothing_is_skipped_around_transitions(
        text in expr(),
        zone in 1..4usize,
        day in prop_oneof![Just((2026, 3, 29)), Just((2026, 10, 25)), Just((2026, 3, 8)), Just((2026, 11, 1)), Just((2026, 4, 5)), Just((2026, 10, 4))],
        minute in 0i64..(36 * 60),
    ) {
        let Ok(c) = CronExpr::parse(&text) else { return Ok(()); };
        let tz: Tz = ZONES[zone].parse().unwrap();
        let after = Utc.with_ymd_and_hms(day.0, day.1, day.2, 0, 0, 0).unwrap()
            - TimeDelta::hours(18) + TimeDelta::minutes(minute) + TimeDelta::seconds(7);
        let next = c.next_after(after, tz).unwrap();
        prop_assert!(fires(&c, tz, next), "{} at {}", text, next);
        let limit = next.min(after + TimeDelta::days(3));
        let mut t = DateTime::from_timestamp(after.timestamp() - after.timestamp().rem_euclid(60) + 60, 0).unwrap();
        while t < limit {
            prop_assert!(!fires(&c, tz, t), "{} in {}: {} was skipped (got {})", text, ZONES[zone], t, next);
            t += TimeDelta::minutes(1);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Whatever a client sends as a schedule, time zone or date is answered
    /// with a value or an error, never a panic.
    #[test]
    fn arbitrary_input_never_panics(
        soup in "[0-9*/,?A-Za-z# -]{0,40}",
        any_text in "\\PC{0,40}",
        date in "[0-9: -]{0,25}",
    ) {
        for text in [&soup, &any_text] {
            if let Ok(c) = CronExpr::parse(text) {
                let tz: Tz = "Europe/Berlin".parse().unwrap();
                let _ = c.next_after(chrono::Utc::now(), tz);
                let _ = c.describe();
            }
            let _ = orrery_schedule::plan::parse_timezone(text);
        }
        let tz: Tz = "America/New_York".parse().unwrap();
        let _ = orrery_schedule::plan::parse_date(&date, tz, "startdate");
        let _ = orrery_schedule::plan::parse_date(&any_text, tz, "enddate");
    }
}
