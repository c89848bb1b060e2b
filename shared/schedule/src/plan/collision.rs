//! The collision rule: "if multiple schedules are configured for an instance and the
//! scheduled time coincides, only the schedule created first is executed and the
//! rest are skipped". CloudStack lists the jobs due at a minute ordered by schedule
//! id and keeps the first per instance; ids are allocated in creation order, so the
//! lowest id is the first created.

use chrono::{DateTime, Utc};

use super::Action;

/// One schedule falling due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Firing {
    pub schedule_id: u64,
    pub vm_id: u64,
    pub action: Action,
    /// The occurrence that fell due (not the time it was noticed).
    pub at: DateTime<Utc>,
}

/// A firing that lost to an earlier-created schedule of the same instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SkippedFiring {
    pub firing: Firing,
    /// The schedule that runs instead (for the event text).
    pub ran_instead: u64,
}

/// What runs and what is skipped; both in (time, schedule id) order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Collisions {
    pub run: Vec<Firing>,
    pub skipped: Vec<SkippedFiring>,
}

/// Applies the collision rule to a batch of firings (any order). Firings of one
/// instance collide when their occurrence times are equal; different times of the
/// same instance (a late tick picking up 10:00 and 10:01) both run, in time order.
pub fn resolve_collisions(firings: impl IntoIterator<Item = Firing>) -> Collisions {
    let mut all: Vec<Firing> = firings.into_iter().collect();
    all.sort_unstable_by_key(|f| (f.vm_id, f.at, f.schedule_id));
    let mut out = Collisions::default();
    let mut winner: Option<Firing> = None;
    for f in all {
        match winner {
            Some(w) if w.vm_id == f.vm_id && w.at == f.at => out.skipped.push(SkippedFiring {
                firing: f,
                ran_instead: w.schedule_id,
            }),
            _ => {
                winner = Some(f);
                out.run.push(f);
            }
        }
    }
    out.run.sort_unstable_by_key(|f| (f.at, f.schedule_id));
    out.skipped
        .sort_unstable_by_key(|s| (s.firing.at, s.firing.schedule_id));
    out
}
