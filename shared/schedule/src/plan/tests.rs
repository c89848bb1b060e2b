use chrono::{DateTime, TimeDelta, TimeZone, Utc};

use super::*;
use crate::clock::{Clock, ManualClock};
use crate::due::{DueIndex, DueKey};

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
}

fn now() -> DateTime<Utc> {
    utc(2026, 5, 4, 10, 0) + TimeDelta::seconds(17)
}

fn create(req: CreateRequest<'_>) -> Result<ScheduleSpec, PlanError> {
    validate_create(&req, now())
}

fn base() -> CreateRequest<'static> {
    CreateRequest {
        schedule: "0 8 * * MON-FRI",
        timezone: "Europe/Berlin",
        action: "start",
        ..Default::default()
    }
}

fn schedule(id: u64, vm: u64, action: Action, cron: &str, zone: &str) -> Schedule {
    Schedule {
        id,
        vm_id: vm,
        action,
        cron: CronExpr::parse(cron).unwrap(),
        tz: zone.parse().unwrap(),
        start: utc(2026, 1, 1, 0, 0),
        end: None,
        enabled: true,
        description: String::new(),
    }
}

#[test]
fn actions_parse_case_insensitively() {
    assert_eq!(Action::parse("force_reboot").unwrap(), Action::ForceReboot);
    assert_eq!("Stop".parse::<Action>().unwrap(), Action::Stop);
    let err = Action::parse("restart").unwrap_err();
    assert_eq!(err.parameter(), "action");
    assert!(err.to_string().contains("restart"));
}

#[test]
fn create_fills_defaults() {
    let spec = create(base()).unwrap();
    assert_eq!(spec.action, Action::Start);
    assert_eq!(spec.start, now() + TimeDelta::minutes(1));
    assert_eq!(spec.end, None);
    assert!(spec.enabled);
    assert_eq!(
        spec.description,
        "START - at 08:00 on Monday through Friday"
    );
    assert_eq!(spec.tz, chrono_tz::Europe::Berlin);
    let s = spec.into_schedule(7, 42);
    assert_eq!((s.id, s.vm_id), (7, 42));
    // 2026-05-04 is a Monday; 08:00 CEST already passed, so Tuesday 06:00 UTC.
    assert_eq!(s.next_fire(now()), Some(utc(2026, 5, 5, 6, 0)));
}

#[test]
fn create_reads_dates_in_the_schedule_zone() {
    let spec = create(CreateRequest {
        start_date: Some("2026-06-01 09:00:00"),
        end_date: Some("2026-06-30"),
        description: Some("office hours"),
        enabled: Some(false),
        ..base()
    })
    .unwrap();
    assert_eq!(spec.start, utc(2026, 6, 1, 7, 0));
    assert_eq!(spec.end, Some(utc(2026, 6, 29, 22, 0)));
    assert_eq!(spec.description, "office hours");
    assert!(!spec.enabled);
}

#[test]
fn create_errors_name_the_parameter() {
    let param = |req: CreateRequest<'_>| create(req).unwrap_err().parameter();
    assert_eq!(
        param(CreateRequest {
            action: "restart",
            ..base()
        }),
        "action"
    );
    assert_eq!(
        param(CreateRequest {
            timezone: "Mars/Olympus",
            ..base()
        }),
        "timezone"
    );
    assert_eq!(
        param(CreateRequest {
            timezone: "europe/berlin",
            ..base()
        }),
        "timezone"
    );
    assert_eq!(
        param(CreateRequest {
            schedule: "0 25 * * *",
            ..base()
        }),
        "schedule"
    );
    assert_eq!(
        param(CreateRequest {
            schedule: "0 8 * *",
            ..base()
        }),
        "schedule"
    );
    assert_eq!(
        param(CreateRequest {
            start_date: Some("01/06/2026 09:00"),
            ..base()
        }),
        "startdate"
    );
    assert_eq!(
        param(CreateRequest {
            end_date: Some("2026-13-01 00:00:00"),
            ..base()
        }),
        "enddate"
    );
    // Start before now (10:00:17 UTC = 12:00:17 in Berlin).
    let err = create(CreateRequest {
        start_date: Some("2026-05-04 12:00:00"),
        ..base()
    })
    .unwrap_err();
    assert!(matches!(err, PlanError::StartInPast { .. }), "{err}");
    assert_eq!(err.parameter(), "startdate");
    // One minute later is fine.
    assert!(create(CreateRequest {
        start_date: Some("2026-05-04 12:01:00"),
        ..base()
    })
    .is_ok());
    // End before start, end before now.
    let err = create(CreateRequest {
        start_date: Some("2026-06-02 00:00:00"),
        end_date: Some("2026-06-01 00:00:00"),
        ..base()
    })
    .unwrap_err();
    assert!(matches!(err, PlanError::EndBeforeStart { .. }));
    assert_eq!(err.parameter(), "enddate");
    let err = create(CreateRequest {
        end_date: Some("2026-05-01 00:00:00"),
        ..base()
    })
    .unwrap_err();
    assert!(matches!(err, PlanError::EndInPast { .. }));
    assert!(err.to_string().starts_with("invalid value for enddate"));
}

#[test]
fn dates_in_daylight_saving_transitions() {
    let berlin = chrono_tz::Europe::Berlin;
    // 02:30 does not exist on 29 March: moved forward by the gap to 03:30 CEST.
    assert_eq!(
        parse_date("2026-03-29 02:30:00", berlin, "startdate").unwrap(),
        utc(2026, 3, 29, 1, 30)
    );
    // 02:30 exists twice on 25 October: the earlier (CEST) instant.
    assert_eq!(
        parse_date("2026-10-25 02:30:00", berlin, "startdate").unwrap(),
        utc(2026, 10, 25, 0, 30)
    );
    let err = parse_date("2026-02-30 00:00:00", berlin, "enddate").unwrap_err();
    assert_eq!(err.parameter(), "enddate");
}

#[test]
fn update_rules() {
    let current = create(CreateRequest {
        end_date: Some("2026-12-31 00:00:00"),
        ..base()
    })
    .unwrap()
    .into_schedule(1, 9);
    let later = now() + TimeDelta::days(30);

    // The action cannot change; naming the same action is fine.
    let err = validate_update(
        &current,
        &UpdateRequest {
            action: Some("STOP"),
            ..Default::default()
        },
        later,
    )
    .unwrap_err();
    assert!(matches!(
        err,
        PlanError::ActionChange {
            current: Action::Start,
            requested: Action::Stop
        }
    ));
    assert_eq!(err.parameter(), "action");
    assert!(validate_update(
        &current,
        &UpdateRequest {
            action: Some("start"),
            ..Default::default()
        },
        later
    )
    .is_ok());

    // The end date can move but not go away.
    let err = validate_update(
        &current,
        &UpdateRequest {
            end_date: Some(""),
            ..Default::default()
        },
        later,
    )
    .unwrap_err();
    assert_eq!(err, PlanError::EndDateRemoval);
    assert_eq!(err.parameter(), "enddate");
    let moved = validate_update(
        &current,
        &UpdateRequest {
            end_date: Some("2027-01-31 00:00:00"),
            ..Default::default()
        },
        later,
    )
    .unwrap();
    assert_eq!(moved.end, Some(utc(2027, 1, 30, 23, 0)));

    // The stored start has passed: it is kept, and checked as now + 1 minute.
    let same = validate_update(
        &current,
        &UpdateRequest {
            enabled: Some(false),
            ..Default::default()
        },
        later,
    )
    .unwrap();
    assert_eq!(same.start, current.start);
    assert!(!same.enabled);
    // A new start must not be in the past.
    let err = validate_update(
        &current,
        &UpdateRequest {
            start_date: Some("2026-05-05 00:00:00"),
            ..Default::default()
        },
        later,
    )
    .unwrap_err();
    assert_eq!(err.parameter(), "startdate");

    // A new zone re-reads given dates in that zone.
    let ny = validate_update(
        &current,
        &UpdateRequest {
            timezone: Some("America/New_York"),
            start_date: Some("2026-07-01 08:00:00"),
            ..Default::default()
        },
        later,
    )
    .unwrap();
    assert_eq!(ny.start, utc(2026, 7, 1, 12, 0));
    assert_eq!(ny.tz, chrono_tz::America::New_York);

    // New cron; blank description regenerates, absent keeps.
    let cron = validate_update(
        &current,
        &UpdateRequest {
            schedule: Some("30 18 * * *"),
            description: Some(" "),
            ..Default::default()
        },
        later,
    )
    .unwrap();
    assert_eq!(cron.description, "START - at 18:30 every day");
    let kept = validate_update(
        &current,
        &UpdateRequest {
            schedule: Some("30 18 * * *"),
            ..Default::default()
        },
        later,
    )
    .unwrap();
    assert_eq!(kept.description, current.description);

    let err = validate_update(
        &current,
        &UpdateRequest {
            schedule: Some("* * *"),
            ..Default::default()
        },
        later,
    )
    .unwrap_err();
    assert_eq!(err.parameter(), "schedule");
    // An end date that has passed blocks updates until a new one is given (as CloudStack).
    let past_end = now() + TimeDelta::days(400);
    let err = validate_update(&current, &UpdateRequest::default(), past_end).unwrap_err();
    assert!(matches!(err, PlanError::EndInPast { .. }));
}

#[test]
fn next_fire_respects_start_end_and_enabled() {
    let mut s = schedule(1, 1, Action::Stop, "0 18 * * *", "UTC");
    s.start = utc(2026, 3, 10, 18, 0);
    // Start is exclusive (Spring's next(start)).
    assert_eq!(
        s.next_fire(utc(2026, 3, 1, 0, 0)),
        Some(utc(2026, 3, 11, 18, 0))
    );
    s.end = Some(utc(2026, 3, 12, 18, 0));
    assert_eq!(
        s.next_fire(utc(2026, 3, 11, 18, 0)),
        Some(utc(2026, 3, 12, 18, 0))
    );
    assert_eq!(s.next_fire(utc(2026, 3, 12, 18, 0)), None);
    assert!(s.finished(utc(2026, 3, 12, 18, 0)));
    s.end = None;
    s.enabled = false;
    assert_eq!(s.next_fire(utc(2026, 3, 11, 0, 0)), None);
    assert!(!s.finished(utc(2026, 3, 11, 0, 0)));
}

#[test]
fn first_created_schedule_wins_a_collision() {
    let at = utc(2026, 5, 4, 8, 0);
    let f = |id, vm, action, at| Firing {
        schedule_id: id,
        vm_id: vm,
        action,
        at,
    };
    let out = resolve_collisions([
        f(12, 1, Action::Stop, at),
        f(3, 1, Action::Start, at),
        f(7, 1, Action::Reboot, at),
        f(5, 2, Action::Stop, at),
        f(9, 1, Action::ForceStop, at + TimeDelta::minutes(1)),
    ]);
    assert_eq!(
        out.run,
        vec![
            f(3, 1, Action::Start, at),
            f(5, 2, Action::Stop, at),
            f(9, 1, Action::ForceStop, at + TimeDelta::minutes(1)),
        ]
    );
    assert_eq!(
        out.skipped,
        vec![
            SkippedFiring {
                firing: f(7, 1, Action::Reboot, at),
                ran_instead: 3
            },
            SkippedFiring {
                firing: f(12, 1, Action::Stop, at),
                ran_instead: 3
            },
        ]
    );
    assert_eq!(resolve_collisions([]), Collisions::default());
}

#[test]
fn catch_up_runs_a_recent_miss_once_and_skips_old_ones() {
    let s = schedule(1, 1, Action::Start, "0 8 * * *", "UTC");
    let due = utc(2026, 5, 4, 8, 0);
    let grace = default_catch_up_grace();

    // Not missed.
    assert_eq!(
        catch_up(&s, due, due - TimeDelta::minutes(1), grace),
        CatchUp::Pending { next: due }
    );
    // Restarted 2 minutes late: run once, then tomorrow.
    let c = catch_up(&s, due, due + TimeDelta::minutes(2), grace);
    assert_eq!(
        c,
        CatchUp::RunOnce {
            missed: due,
            next: Some(utc(2026, 5, 5, 8, 0))
        }
    );
    // Exactly at the grace limit still runs; a second later does not.
    assert!(matches!(
        catch_up(&s, due, due + grace, grace),
        CatchUp::RunOnce { .. }
    ));
    let c = catch_up(&s, due, due + grace + TimeDelta::seconds(1), grace);
    assert_eq!(
        c,
        CatchUp::Skip {
            missed: due,
            next: Some(utc(2026, 5, 5, 8, 0))
        }
    );
    // Down for three days: skipped, and not run three times.
    let c = catch_up(
        &s,
        due,
        due + TimeDelta::days(3) - TimeDelta::hours(1),
        grace,
    );
    assert_eq!(
        c,
        CatchUp::Skip {
            missed: due,
            next: Some(utc(2026, 5, 7, 8, 0))
        }
    );
    assert_eq!(c.next(), Some(utc(2026, 5, 7, 8, 0)));
    // ... unless an occurrence falls inside the window at restart time.
    let c = catch_up(&s, due, utc(2026, 5, 7, 8, 3), grace);
    assert_eq!(
        c,
        CatchUp::RunOnce {
            missed: utc(2026, 5, 7, 8, 0),
            next: Some(utc(2026, 5, 8, 8, 0))
        }
    );

    // Every 5 minutes, down 12 minutes: the first occurrence in the window runs once.
    let every5 = schedule(2, 1, Action::Reboot, "*/5 * * * *", "UTC");
    let c = catch_up(
        &every5,
        utc(2026, 5, 4, 10, 0),
        utc(2026, 5, 4, 10, 12),
        grace,
    );
    assert_eq!(
        c,
        CatchUp::RunOnce {
            missed: utc(2026, 5, 4, 10, 10),
            next: Some(utc(2026, 5, 4, 10, 15))
        }
    );

    // Disabled or finished schedules never run late.
    let mut off = s.clone();
    off.enabled = false;
    assert_eq!(
        catch_up(&off, due, due + TimeDelta::minutes(1), grace),
        CatchUp::Skip {
            missed: due,
            next: None
        }
    );
    let mut ended = s.clone();
    ended.end = Some(due);
    assert_eq!(
        catch_up(&ended, due, due + TimeDelta::minutes(1), grace),
        CatchUp::RunOnce {
            missed: due,
            next: None
        }
    );
}

/// Two days of one-minute ticks on simulated time across Berlin's fall-back night:
/// schedules go through the due-index, collisions are applied per tick.
#[test]
fn simulated_ticks_across_fall_back() {
    let clock = ManualClock::new(utc(2026, 10, 24, 0, 0));
    let schedules = [
        schedule(1, 100, Action::Stop, "30 2 * * *", "Europe/Berlin"),
        schedule(2, 100, Action::Start, "30 2 * * *", "Europe/Berlin"),
        schedule(3, 200, Action::Reboot, "0 * * * *", "Europe/Berlin"),
    ];
    let mut idx = DueIndex::new();
    for s in &schedules {
        idx.upsert(DueKey::Schedule(s.id), s.next_fire(clock.now()).unwrap());
    }
    let (mut ran, mut skipped) = (Vec::new(), Vec::new());
    for _ in 0..(2 * 24 * 60) {
        let now = clock.advance(TimeDelta::minutes(1));
        let mut firings = Vec::new();
        for item in idx.pop_due(now) {
            let DueKey::Schedule(id) = item.key else {
                unreachable!()
            };
            let s = &schedules[id as usize - 1];
            firings.push(Firing {
                schedule_id: id,
                vm_id: s.vm_id,
                action: s.action,
                at: item.at,
            });
            if let Some(next) = s.next_fire(now) {
                idx.upsert(item.key, next);
            }
        }
        let out = resolve_collisions(firings);
        ran.extend(out.run);
        skipped.extend(out.skipped);
    }
    let stops: Vec<_> = ran
        .iter()
        .filter(|f| f.schedule_id == 1)
        .map(|f| f.at)
        .collect();
    // 24th 02:30 CEST, 25th 02:30 CEST (once, not again at 02:30 CET).
    assert_eq!(
        stops,
        vec![utc(2026, 10, 24, 0, 30), utc(2026, 10, 25, 0, 30)]
    );
    assert!(skipped
        .iter()
        .all(|s| s.firing.schedule_id == 2 && s.ran_instead == 1));
    assert_eq!(skipped.len(), 2);
    // The hourly reboot fires every elapsed hour: 48 in 48 hours, 25 of them on the
    // long local day (00:00 CEST on the 25th to 00:00 CET on the 26th).
    let reboots: Vec<_> = ran
        .iter()
        .filter(|f| f.schedule_id == 3)
        .map(|f| f.at)
        .collect();
    assert_eq!(reboots.len(), 48);
    let long_day = reboots
        .iter()
        .filter(|&&t| t >= utc(2026, 10, 24, 22, 0) && t < utc(2026, 10, 25, 23, 0))
        .count();
    assert_eq!(long_day, 25);
}
