//! Scheduling rules for instances: cron-driven lifecycle schedules and leases.
//!
//! * [`cron`]: five-field cron expressions with CloudStack's (Spring's) semantics,
//!   evaluated in an IANA time zone with daylight saving handled explicitly.
//! * [`clock`]: the `Clock` trait, the system clock and a manual clock for tests.
//! * [`plan`]: schedules (`createVMSchedule` / `updateVMSchedule` validation, next
//!   firing within start and end dates), the collision rule and the restart
//!   catch-up rule.
//! * [`due`]: a due-index over schedules and leases, so a scheduler tick costs
//!   O(k log n) for k due items.
//! * [`lease`]: instance lease rules (deploy, update, expiry, feature disable).
//! * [`interval`]: snapshot policy schedules (HOURLY `MM` .. MONTHLY `MM:HH:DD`).
//!
//! Pure: no I/O, no async runtime; every function that needs the time takes it.

pub mod clock;
pub mod cron;
pub mod due;
pub mod interval;
pub mod lease;
pub mod plan;

pub use chrono_tz::Tz;
pub use clock::{Clock, ManualClock, SystemClock};
pub use cron::{CronError, CronExpr, CronField};
pub use due::{DueIndex, DueItem, DueKey};
pub use lease::{LeaseAction, LeaseError, LeaseState};
pub use plan::{Action, PlanError, Schedule};
