//! `userdispersing`: hosts running fewer of the account's instances first,
//! spreading one account's instances over the cloud; ties by host id.

use super::{AllocContext, AllocKey, Allocator, HostCandidate};

pub struct UserDispersing;

impl Allocator for UserDispersing {
    fn name(&self) -> &'static str {
        "userdispersing"
    }

    fn key(&self, cx: &AllocContext<'_>, host: &HostCandidate<'_>) -> AllocKey {
        (i64::from(cx.account_instances_on(host)), host.host.id)
    }
}
