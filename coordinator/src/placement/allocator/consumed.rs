//! Capacity-driven policies, measured in the capacity
//! `host.capacityType.to.order.clusters` names (CPU by default, or RAM).

use super::{free_of, AllocContext, AllocKey, Allocator, HostCandidate};

/// `firstfitleastconsumed` (also `horizontal`): the host with the most free
/// capacity first, so load spreads evenly.
pub struct LeastConsumed;

impl Allocator for LeastConsumed {
    fn name(&self) -> &'static str {
        "firstfitleastconsumed"
    }

    fn key(&self, cx: &AllocContext<'_>, host: &HostCandidate<'_>) -> AllocKey {
        (-free_of(cx, host), host.host.id)
    }
}

/// `vertical`: the host with the least free capacity that still fits first,
/// so hosts fill up one after another and empty ones can be powered down.
pub struct MostConsumed;

impl Allocator for MostConsumed {
    fn name(&self) -> &'static str {
        "vertical"
    }

    fn key(&self, cx: &AllocContext<'_>, host: &HostCandidate<'_>) -> AllocKey {
        (free_of(cx, host), host.host.id)
    }
}
