//! `random` (CloudStack's default): a shuffle. Each host's position comes from
//! a hash of the request's seed and the host id, so the order is uniform over
//! seeds yet a pure function of the inputs, and independent of the order the
//! snapshot lists hosts in.

use super::{AllocContext, AllocKey, Allocator, HostCandidate};
use crate::placement::snapshot::Id;

pub struct Random;

impl Allocator for Random {
    fn name(&self) -> &'static str {
        "random"
    }

    fn key(&self, cx: &AllocContext<'_>, host: &HostCandidate<'_>) -> AllocKey {
        (mix(cx.seed(), host.host.id) as i64, 0)
    }
}

/// SplitMix64 of the seed combined with an id: a well-spread 64-bit value.
pub fn mix(seed: u64, id: Id) -> u64 {
    let mut z = seed ^ (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
