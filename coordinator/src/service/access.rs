//! The guest-access part of the service: SSH key pairs (`sshkeys`), user
//! data (`userdata`) and console endpoints (`console`), for the people who
//! use instances; the instances' metadata is built from them at start.

use super::*;

pub struct GuestAccess {
    ctx: Arc<Context>,
    /// Whose name a console session is recorded in.
    pub(in crate::service) identity: Arc<super::identity::Identity>,
    /// Where the console proxy is reached.
    pub(in crate::service) consoles: super::console::ConsoleTickets,
}

super::context::part_of_service!(GuestAccess);

impl GuestAccess {
    pub(in crate::service) fn new(
        ctx: Arc<Context>,
        identity: Arc<super::identity::Identity>,
    ) -> Self {
        GuestAccess {
            ctx,
            identity,
            consoles: super::console::ConsoleTickets::default(),
        }
    }
}
