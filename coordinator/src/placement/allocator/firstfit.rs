//! `firstfit`: hosts in id order, so the same host keeps being chosen until it
//! is full.

use super::{AllocContext, AllocKey, Allocator, HostCandidate};

pub struct FirstFit;

impl Allocator for FirstFit {
    fn name(&self) -> &'static str {
        "firstfit"
    }

    fn key(&self, _: &AllocContext<'_>, host: &HostCandidate<'_>) -> AllocKey {
        (host.host.id, 0)
    }
}
