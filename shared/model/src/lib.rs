//! Pure domain types shared by the coordinator and the agents: instance states and
//! their transitions, naming rules, and validation errors. No I/O, no async runtime.

pub mod naming;
pub mod state;

pub use naming::{validate_hostname, NameError};
pub use state::{Transition, TransitionError, VmState};
