//! The order eligible hosts are tried in. CloudStack builds it in layers, each
//! a stable re-sort of the previous one:
//!
//! 1. the allocation policy's order ([`Allocator`]);
//! 2. OS-category preference: hosts whose `guest.os.category.id` is the
//!    template's category first, hosts without a preference next, hosts that
//!    prefer another category last (still eligible);
//! 3. GPU hosts moved to the end when the offering asks for no GPU, keeping
//!    them free for instances that need them;
//! 4. the last host first, on start, while it still passes every check and
//!    does not prefer another OS category;
//! 5. the non-strict affinity priority, highest first (ties keep the order
//!    above).
//!
//! CloudStack tries the last host before running the planner at all; here it
//! ranks under the priority instead, so that a restart also honours the
//! non-strict groups, which the seed says apply "when deploy or start".
//!
//! A single composite key with the layers from most to least significant
//! gives the same order, and lets `plan` find the best host in one pass
//! without sorting.

use super::allocator::{AllocContext, Allocator, HostCandidate};
use super::request::Cx;
use super::snapshot::Id;

/// Most significant first: -priority, last host, GPU, OS category, policy key,
/// host id.
pub(crate) type OrderKey = (i64, u8, u8, u8, i64, i64, Id);

/// OS-category rank: 0 the host prefers the template's category, 1 it has no
/// preference, 2 it prefers another one.
pub(crate) fn os_rank(cx: &Cx<'_>, hi: usize) -> u8 {
    match (
        cx.snap.hosts()[hi].preferred_os_category,
        cx.req.os_category,
    ) {
        (None, _) => 1,
        (Some(h), Some(r)) if h == r => 0,
        (Some(_), _) => 2,
    }
}

/// 1 for a GPU host when the offering wants no GPU.
pub(crate) fn gpu_rank(cx: &Cx<'_>, hi: usize) -> u8 {
    u8::from(cx.req.gpu_count == 0 && cx.snap.hosts()[hi].gpu_devices > 0)
}

/// 0 for the instance's last host (when its OS preference does not exclude
/// it, as CloudStack checks before reusing it), 1 otherwise.
pub(crate) fn last_rank(cx: &Cx<'_>, hi: usize, os: u8) -> u8 {
    let is_last = cx.req.last_host_id == Some(cx.snap.hosts()[hi].id) && os != 2;
    u8::from(!is_last)
}

/// Builds the candidate view of an eligible host.
pub(crate) fn candidate<'a>(cx: &Cx<'a>, hi: usize) -> HostCandidate<'a> {
    let (free_cpu_mhz, free_mem_mb) = cx.free_on(hi);
    HostCandidate {
        host: &cx.snap.hosts()[hi],
        free_cpu_mhz,
        free_mem_mb,
        index: hi,
    }
}

/// The full order key of an eligible host, and its non-strict priority.
pub(crate) fn order_key(
    cx: &Cx<'_>,
    acx: &AllocContext<'_>,
    allocator: &dyn Allocator,
    hi: usize,
) -> (OrderKey, i64) {
    let priority = cx.priority(hi);
    let os = os_rank(cx, hi);
    let cand = candidate(cx, hi);
    let (a, b) = allocator.key(acx, &cand);
    (
        (
            -priority,
            last_rank(cx, hi, os),
            gpu_rank(cx, hi),
            os,
            a,
            b,
            cand.host.id,
        ),
        priority,
    )
}
