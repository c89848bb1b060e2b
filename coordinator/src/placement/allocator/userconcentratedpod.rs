//! `userconcentratedpod_random` / `userconcentratedpod_firstfit`: pods that
//! already hold more of the account's instances first (keeping an account's
//! instances close together), pods without any after them; within a pod the
//! hosts are shuffled or taken in id order. Pods with equal counts go in pod
//! id order.

use super::random::mix;
use super::{AllocContext, AllocKey, Allocator, HostCandidate};

pub struct UserConcentratedPod {
    /// Shuffle within a pod (`_random`) rather than host id order (`_firstfit`).
    pub random: bool,
}

impl Allocator for UserConcentratedPod {
    fn name(&self) -> &'static str {
        if self.random {
            "userconcentratedpod_random"
        } else {
            "userconcentratedpod_firstfit"
        }
    }

    fn key(&self, cx: &AllocContext<'_>, host: &HostCandidate<'_>) -> AllocKey {
        let pod = host.host.pod_id;
        let count = i64::from(cx.account_instances_in_pod(pod));
        // Pack the pod id under the count so equal-count pods stay together;
        // pod ids above 2^31 would only blur the tie order, not correctness.
        let pod_rank = -count * (1 << 32) + (pod & 0xFFFF_FFFF);
        let within = if self.random {
            mix(cx.seed(), host.host.id) as i64
        } else {
            host.host.id
        };
        (pod_rank, within)
    }
}
