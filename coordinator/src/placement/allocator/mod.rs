//! Allocation policies: the order in which eligible hosts are tried.
//!
//! A policy gives each eligible host a key; lower keys are tried first, ties
//! go to the lower host id. The engine then applies CloudStack's fixed
//! re-orderings on top (non-strict affinity priority, the last host, GPU hosts
//! last, OS-category preference), each a stable re-sort, so the policy decides
//! only among hosts those leave equal. A new policy is one file here and one
//! line in [`allocator_for`].
//!
//! | name | CloudStack `vm.allocation.algorithm` | order |
//! |---|---|---|
//! | `random` (default) | same | seeded shuffle |
//! | `firstfit` | same | host id |
//! | `userdispersing` | same | fewest instances of the account first |
//! | `userconcentratedpod_random` | same | pods with most of the account's instances first, shuffled within |
//! | `userconcentratedpod_firstfit` | same | as above, host id within |
//! | `firstfitleastconsumed` | same | most free capacity first |
//! | `horizontal` | alias of `firstfitleastconsumed` | spreads instances: each goes to the emptiest host, which round-robins over equal hosts |
//! | `vertical` | no CloudStack value (`firstfit` comes closest) | least free capacity first: fills a host before starting the next |

mod consumed;
mod firstfit;
mod random;
mod userconcentratedpod;
mod userdispersing;

pub use consumed::{LeastConsumed, MostConsumed};
pub use firstfit::FirstFit;
pub use random::{mix, Random};
pub use userconcentratedpod::UserConcentratedPod;
pub use userdispersing::UserDispersing;

use super::request::{Cx, Request};
use super::snapshot::{CapacityType, FxMap, Host, Id, Snapshot};

/// Sort key of one host under a policy: lower first.
pub type AllocKey = (i64, i64);

/// An ordering policy over eligible hosts.
pub trait Allocator: Send + Sync {
    /// The `vm.allocation.algorithm` value (or Orrery name) it implements.
    fn name(&self) -> &'static str;
    /// Key of one eligible host; must depend only on its arguments.
    fn key(&self, cx: &AllocContext<'_>, host: &HostCandidate<'_>) -> AllocKey;
}

/// One eligible host, with the capacity figures policies commonly need.
#[derive(Debug, Clone, Copy)]
pub struct HostCandidate<'a> {
    pub host: &'a Host,
    /// Over-provisioned CPU capacity left, MHz (the instance not yet added).
    pub free_cpu_mhz: f64,
    /// Over-provisioned memory left, MB.
    pub free_mem_mb: f64,
    pub(crate) index: usize,
}

/// What a policy may look at besides the host itself.
pub struct AllocContext<'a> {
    snapshot: &'a Snapshot,
    request: &'a Request,
    account_hosts: Option<&'a FxMap<u32, u32>>,
    account_pods: Option<&'a FxMap<Id, u32>>,
    /// Host index and pod of the instance being restarted, when it belongs to
    /// the requesting account: its own presence does not count.
    me: Option<(u32, Id)>,
}

impl<'a> AllocContext<'a> {
    pub(crate) fn new(cx: &Cx<'a>) -> Self {
        let account = cx.req.account_id;
        let me = match (cx.me, cx.me_host) {
            (Some(me), Some(hi)) if me.account_id == account => {
                Some((hi, cx.snap.hosts()[hi as usize].pod_id))
            }
            _ => None,
        };
        Self {
            snapshot: cx.snap,
            request: cx.req,
            account_hosts: cx.snap.idx.account_hosts.get(&account),
            account_pods: cx.snap.idx.account_pods.get(&account),
            me,
        }
    }

    pub fn snapshot(&self) -> &'a Snapshot {
        self.snapshot
    }

    pub fn request(&self) -> &'a Request {
        self.request
    }

    pub fn seed(&self) -> u64 {
        self.request.seed
    }

    /// `host.capacityType.to.order.clusters`.
    pub fn capacity_type(&self) -> CapacityType {
        self.snapshot.settings().capacity_type_to_order
    }

    /// Instances of the requesting account on this host.
    pub fn account_instances_on(&self, host: &HostCandidate<'_>) -> u32 {
        let n = self
            .account_hosts
            .and_then(|m| m.get(&(host.index as u32)))
            .copied()
            .unwrap_or(0);
        match self.me {
            Some((hi, _)) if hi as usize == host.index => n.saturating_sub(1),
            _ => n,
        }
    }

    /// Instances of the requesting account in a pod.
    pub fn account_instances_in_pod(&self, pod_id: Id) -> u32 {
        let n = self
            .account_pods
            .and_then(|m| m.get(&pod_id))
            .copied()
            .unwrap_or(0);
        match self.me {
            Some((_, pod)) if pod == pod_id => n.saturating_sub(1),
            _ => n,
        }
    }
}

static RANDOM: Random = Random;
static FIRST_FIT: FirstFit = FirstFit;
static USER_DISPERSING: UserDispersing = UserDispersing;
static USER_POD_RANDOM: UserConcentratedPod = UserConcentratedPod { random: true };
static USER_POD_FIRST_FIT: UserConcentratedPod = UserConcentratedPod { random: false };
static LEAST_CONSUMED: LeastConsumed = LeastConsumed;
static MOST_CONSUMED: MostConsumed = MostConsumed;

/// The policy for a `vm.allocation.algorithm` value (case-insensitive), or
/// `None` for an unknown name.
pub fn allocator_for(name: &str) -> Option<&'static dyn Allocator> {
    let a: &'static dyn Allocator = match name.trim().to_ascii_lowercase().as_str() {
        "random" => &RANDOM,
        "firstfit" => &FIRST_FIT,
        "userdispersing" => &USER_DISPERSING,
        "userconcentratedpod_random" => &USER_POD_RANDOM,
        "userconcentratedpod_firstfit" => &USER_POD_FIRST_FIT,
        "firstfitleastconsumed" | "horizontal" => &LEAST_CONSUMED,
        "vertical" => &MOST_CONSUMED,
        _ => return None,
    };
    Some(a)
}

/// Every name [`allocator_for`] accepts.
pub const ALLOCATOR_NAMES: &[&str] = &[
    "random",
    "firstfit",
    "userdispersing",
    "userconcentratedpod_random",
    "userconcentratedpod_firstfit",
    "firstfitleastconsumed",
    "horizontal",
    "vertical",
];

/// Free capacity of the kind `host.capacityType.to.order.clusters` names,
/// rounded down to a whole MHz or MB.
pub(crate) fn free_of(cx: &AllocContext<'_>, host: &HostCandidate<'_>) -> i64 {
    let free = match cx.capacity_type() {
        CapacityType::Cpu => host.free_cpu_mhz,
        CapacityType::Ram => host.free_mem_mb,
    };
    free.floor() as i64
}
