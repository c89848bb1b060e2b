//! The instance state machine of the specification: Created, Running, Stopped,
//! Destroyed, Expunged, with Creating, Starting, Stopping and Expunging in between
//! (plus Migrating and Error, which CloudStack clients also know).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum VmState {
    /// A record not yet past its creating transaction.
    #[default]
    Creating,
    Created,
    Starting,
    Running,
    Stopping,
    Stopped,
    Migrating,
    Destroyed,
    Expunging,
    Expunged,
    Error,
}

impl VmState {
    pub const ALL: [VmState; 11] = [
        VmState::Creating,
        VmState::Created,
        VmState::Starting,
        VmState::Running,
        VmState::Stopping,
        VmState::Stopped,
        VmState::Migrating,
        VmState::Destroyed,
        VmState::Expunging,
        VmState::Expunged,
        VmState::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Creating => "Creating",
            VmState::Created => "Created",
            VmState::Starting => "Starting",
            VmState::Running => "Running",
            VmState::Stopping => "Stopping",
            VmState::Stopped => "Stopped",
            VmState::Migrating => "Migrating",
            VmState::Destroyed => "Destroyed",
            VmState::Expunging => "Expunging",
            VmState::Expunged => "Expunged",
            VmState::Error => "Error",
        }
    }

    /// "Present" in CloudStack's list filter: everything that is neither destroyed
    /// nor on its way out.
    pub fn is_present(self) -> bool {
        !matches!(
            self,
            VmState::Destroyed | VmState::Expunging | VmState::Expunged
        )
    }

    /// States an operation is still running in; the coordinator must not start a
    /// second operation on top of one of these.
    pub fn is_transitional(self) -> bool {
        matches!(
            self,
            VmState::Creating
                | VmState::Starting
                | VmState::Stopping
                | VmState::Migrating
                | VmState::Expunging
        )
    }
}

impl fmt::Display for VmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown instance state '{0}'")]
pub struct UnknownState(pub String);

impl FromStr for VmState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        VmState::ALL
            .iter()
            .copied()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownState(s.to_string()))
    }
}

/// Every state change an operation may request. Each has one set of allowed
/// source states; nothing else moves an instance between states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Record created but not started (`startvm=false`).
    CreateStopped,
    BeginStart,
    StartSucceeded,
    StartFailed,
    BeginStop,
    StopSucceeded,
    /// A reboot keeps the instance Running throughout.
    Reboot,
    Destroy,
    Recover,
    BeginExpunge,
    ExpungeDone,
    /// The host reported the instance powered off while nobody asked.
    PoweredOffOutOfBand,
    /// The host reported the instance running while the record said otherwise.
    PoweredOnOutOfBand,
    /// A running instance grows in place (more vCPUs or memory).
    Rescale,
    /// A running instance starts moving to another host.
    BeginMigrate,
    /// It runs on the destination now, or (failed) still on the source:
    /// either way it is running.
    MigrateDone,
    /// A stopped instance's volumes start moving between storage pools.
    BeginStorageMove,
    /// They have moved (or not): the instance is stopped as before.
    StorageMoveDone,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("instance is in state {from}, {action} is not allowed")]
pub struct TransitionError {
    pub from: VmState,
    pub action: &'static str,
}

impl Transition {
    pub fn name(self) -> &'static str {
        match self {
            Transition::CreateStopped => "create",
            Transition::BeginStart | Transition::StartSucceeded | Transition::StartFailed => {
                "start"
            }
            Transition::BeginStop | Transition::StopSucceeded => "stop",
            Transition::Reboot => "reboot",
            Transition::Destroy => "destroy",
            Transition::Recover => "recover",
            Transition::BeginExpunge | Transition::ExpungeDone => "expunge",
            Transition::PoweredOffOutOfBand => "power-off report",
            Transition::PoweredOnOutOfBand => "power-on report",
            Transition::Rescale => "scale",
            Transition::BeginMigrate | Transition::MigrateDone => "migrate",
            Transition::BeginStorageMove | Transition::StorageMoveDone => "storage migration",
        }
    }

    /// The state an instance in `from` moves to, or why it cannot.
    pub fn apply(self, from: VmState) -> Result<VmState, TransitionError> {
        use VmState::*;
        let to = match (self, from) {
            (Transition::CreateStopped, Creating) => Stopped,
            (Transition::BeginStart, Creating | Stopped | Created) => Starting,
            (Transition::StartSucceeded, Starting) => Running,
            (Transition::StartFailed, Starting) => Stopped,
            (Transition::BeginStop, Running | Error) => Stopping,
            (Transition::StopSucceeded, Stopping) => Stopped,
            (Transition::Reboot, Running) => Running,
            (Transition::Destroy, Running | Stopped | Created | Error) => Destroyed,
            (Transition::Recover, Destroyed) => Stopped,
            (Transition::BeginExpunge, Destroyed | Running | Stopped | Created | Error) => {
                Expunging
            }
            (Transition::ExpungeDone, Expunging) => Expunged,
            (Transition::PoweredOffOutOfBand, Running | Starting | Stopping | Migrating) => Stopped,
            (Transition::PoweredOnOutOfBand, Stopped | Starting | Stopping) => Running,
            (Transition::Rescale, Running) => Running,
            (Transition::BeginMigrate, Running) => Migrating,
            (Transition::MigrateDone, Migrating) => Running,
            (Transition::BeginStorageMove, Stopped) => Migrating,
            (Transition::StorageMoveDone, Migrating) => Stopped,
            _ => {
                return Err(TransitionError {
                    from,
                    action: self.name(),
                })
            }
        };
        Ok(to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_running_instances_migrate_and_they_end_running() {
        assert_eq!(
            Transition::BeginMigrate.apply(VmState::Running),
            Ok(VmState::Migrating)
        );
        assert_eq!(
            Transition::MigrateDone.apply(VmState::Migrating),
            Ok(VmState::Running)
        );
        for s in [VmState::Stopped, VmState::Starting, VmState::Migrating] {
            assert!(Transition::BeginMigrate.apply(s).is_err(), "{s}");
        }
        assert!(Transition::MigrateDone.apply(VmState::Running).is_err());
        assert_eq!(
            Transition::Rescale.apply(VmState::Running),
            Ok(VmState::Running)
        );
        assert!(Transition::Rescale.apply(VmState::Stopped).is_err());
        assert_eq!(
            Transition::BeginStorageMove.apply(VmState::Stopped),
            Ok(VmState::Migrating)
        );
        assert_eq!(
            Transition::StorageMoveDone.apply(VmState::Migrating),
            Ok(VmState::Stopped)
        );
        assert!(Transition::BeginStorageMove
            .apply(VmState::Running)
            .is_err());
        // A guest that powers off mid-move ends Stopped like any other.
        assert_eq!(
            Transition::PoweredOffOutOfBand.apply(VmState::Migrating),
            Ok(VmState::Stopped)
        );
    }

    #[test]
    fn lifecycle_path() {
        let mut s = VmState::Creating;
        for t in [
            Transition::BeginStart,
            Transition::StartSucceeded,
            Transition::Reboot,
            Transition::BeginStop,
            Transition::StopSucceeded,
            Transition::Destroy,
            Transition::Recover,
            Transition::Destroy,
            Transition::BeginExpunge,
            Transition::ExpungeDone,
        ] {
            s = t.apply(s).unwrap();
        }
        assert_eq!(s, VmState::Expunged);
    }

    #[test]
    fn wrong_sources_are_refused_with_the_state() {
        let e = Transition::BeginStart.apply(VmState::Running).unwrap_err();
        assert_eq!(e.from, VmState::Running);
        assert_eq!(
            e.to_string(),
            "instance is in state Running, start is not allowed"
        );
        assert!(Transition::Recover.apply(VmState::Stopped).is_err());
        assert!(Transition::Reboot.apply(VmState::Stopped).is_err());
        assert!(Transition::Destroy.apply(VmState::Destroyed).is_err());
        assert!(Transition::BeginStop.apply(VmState::Stopped).is_err());
    }

    #[test]
    fn parse_is_case_insensitive_and_total() {
        for s in VmState::ALL {
            assert_eq!(s.as_str().to_lowercase().parse::<VmState>().unwrap(), s);
        }
        assert!("Present".parse::<VmState>().is_err());
    }

    #[test]
    fn present_excludes_destroyed_and_expunging() {
        assert!(VmState::Running.is_present());
        assert!(VmState::Stopped.is_present());
        assert!(!VmState::Destroyed.is_present());
        assert!(!VmState::Expunging.is_present());
    }
}
