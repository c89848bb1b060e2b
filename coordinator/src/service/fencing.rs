//! HA for lost hosts: a host is declared Down only when both its stream and
//! its storage heartbeat have been silent for longer than its lease, and only
//! then are its instances stopped in the records and the HA-enabled ones
//! started elsewhere.
//!
//! The storage side is investigated by the host's peers (agents that share
//! its primary pool and watch its lease record). The lease is the fencing
//! contract: an agent that hears neither its storage nor the coordinator
//! kills its instances two heartbeats before its lease ends (the agent's
//! watchdog), and the coordinator waits for the lease plus a margin. So the
//! old copy is gone before a new one can start, however a partition falls.
//! libvirt's lock manager on the shared pool is the second guard: a start of
//! a disk whose lease the old host's virtlockd still holds is refused.
//!
//! Budget with the defaults (heartbeat 0.5 s, lease 3 s, margin 0.5 s) for
//! the 15 s target: a killed host's stream ends at once and its lease record
//! stops; peers read records every heartbeat, so the host is declared Down
//! 3.5-4.5 s after its last renewal (lease + margin, checked every 500 ms);
//! fencing needs no wait of its own beyond that, since the agent kills its
//! instances 1 s before the lease ends; placement takes milliseconds and the
//! start on the new host a second or two, leaving the rest for the guest.

use super::agent::HeartbeatSeen;
use super::*;
use crate::store::records::*;
use orrery_model::{Transition, VmState};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How often lost hosts are looked for.
pub const CHECK_EVERY: Duration = Duration::from_millis(500);
/// The most peers asked about one silent host.
const INVESTIGATORS: usize = 3;

/// Seconds a host's recorded heartbeat (`lastpinged`) may lag its last
/// stream heartbeat: it is written only when older, so that many hosts do
/// not mean as many writes a second.
pub const PING_RECORDED_EVERY_SECS: i64 = 5;

/// `ha.heartbeat.interval`, `ha.lease.time`, `ha.restart.margin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HaTimes {
    pub heartbeat_ms: u32,
    pub lease_ms: u32,
    pub margin_ms: u32,
}

impl Default for HaTimes {
    fn default() -> Self {
        HaTimes {
            heartbeat_ms: 500,
            lease_ms: 3000,
            margin_ms: 500,
        }
    }
}

impl HaTimes {
    /// Clamped as the agents clamp them: the lease is at least three
    /// heartbeats.
    pub fn new(heartbeat_ms: i64, lease_ms: i64, margin_ms: i64) -> Self {
        let hb = heartbeat_ms.clamp(100, 60_000) as u32;
        HaTimes {
            heartbeat_ms: hb,
            lease_ms: (lease_ms.clamp(0, u32::MAX as i64) as u32).max(3 * hb),
            margin_ms: margin_ms.clamp(0, 600_000) as u32,
        }
    }

    /// Stream silence after which a host counts as unheard.
    pub fn unheard_after_ms(&self) -> u64 {
        3 * self.heartbeat_ms as u64
    }
}

/// What the signals say about one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Its agent is heard on the stream.
    Heard,
    /// Silent on the stream, but no peer can read its storage heartbeat:
    /// nothing proves it is gone, so nothing is done.
    Unknown,
    /// Silent on the stream while its lease still lives (a partition from
    /// the coordinator, or an agent restart): its instances are left alone.
    Suspect { storage_age_ms: u64 },
    /// Both signals silent past the lease and the margin: the host has
    /// fenced itself or is gone.
    Dead {
        stream_ms: u64,
        storage_ms: u64,
        lease_ms: u64,
    },
}

/// Pure: judges a host from its stream silence and its peers' view of its
/// storage heartbeat. The freshest sighting wins, and the longest lease any
/// record announced is the one waited for (an agent cut off before a change
/// of `ha.lease.time` still fences by its old lease).
pub fn judge(times: &HaTimes, stream_silence_ms: u64, seen: &[HeartbeatSeen]) -> Verdict {
    if stream_silence_ms < times.unheard_after_ms() {
        return Verdict::Heard;
    }
    let found = || seen.iter().filter(|s| s.found);
    let Some(age) = found().map(|s| s.age_ms).min() else {
        return Verdict::Unknown;
    };
    let lease = found()
        .map(|s| s.lease_ms)
        .max()
        .unwrap_or(0)
        .max(times.lease_ms) as u64;
    let dead_after = lease + times.margin_ms as u64;
    if stream_silence_ms > dead_after && age > dead_after {
        Verdict::Dead {
            stream_ms: stream_silence_ms,
            storage_ms: age,
            lease_ms: lease,
        }
    } else {
        Verdict::Suspect {
            storage_age_ms: age,
        }
    }
}

/// When this process started: a host not heard since counts as silent
/// from then.
fn started() -> Instant {
    static STARTED: OnceLock<Instant> = OnceLock::new();
    *STARTED.get_or_init(Instant::now)
}

impl Service {
    pub fn ha_times(&self) -> HaTimes {
        HaTimes::new(
            self.setting_i64("ha.heartbeat.interval"),
            self.setting_i64("ha.lease.time"),
            self.setting_i64("ha.restart.margin"),
        )
    }

    /// Publishes the HA settings after a change, for every connected agent.
    pub fn refresh_ha_settings(&self) {
        started();
        let now = self.ha_times();
        self.ha_config.send_if_modified(|cur| {
            let changed = *cur != now;
            *cur = now;
            changed
        });
    }

    pub fn watch_ha_settings(&self) -> tokio::sync::watch::Receiver<HaTimes> {
        self.ha_config.subscribe()
    }

    /// How long the host's agent has been silent as this coordinator
    /// knows it. A host with a session here is judged by its own stream
    /// alone, as quickly as ever. Without one, while other coordinators
    /// live (`others`), its agent may keep its session with one of them (it
    /// cannot reach this one): then the heartbeat they recorded counts too,
    /// less the seconds by which recording lags (see `agent_heartbeat`) and
    /// two more for whole seconds and clocks of different machines.
    fn stream_silence_ms(&self, h: &Host, others: bool) -> u64 {
        let local = self
            .agents
            .silence(h.id)
            .unwrap_or_else(|| started().elapsed())
            .as_millis() as u64;
        if !others || self.agents.has_session(h.id) {
            return local;
        }
        let recorded = h.last_ping.map(|p| {
            let age_ms = (now() - p).max(0) as u64 * 1000;
            age_ms.saturating_sub((PING_RECORDED_EVERY_SECS as u64 + 2) * 1000)
        });
        recorded.map_or(local, |r| r.min(local))
    }

    /// One pass over the real hosts: marks silent ones Disconnected or Down
    /// as their signals say, and recovers the instances of Down ones.
    pub async fn check_ha(self: &Arc<Self>) -> SResult<()> {
        let times = self.ha_times();
        let hosts: Vec<Host> = self.store.all(Query::new()).await?;
        let real: Vec<&Host> = hosts
            .iter()
            .filter(|h| !h.simulated && h.removed.is_none())
            .collect();
        let others = self.store.shared() && !self.peer_endpoints().await.is_empty();
        let heard = |h: &Host| self.stream_silence_ms(h, others) < times.unheard_after_ms();
        let mut suspects: Vec<&Host> = Vec::new();
        for h in &real {
            if heard(h) {
                continue;
            }
            if h.state == "Down" && h.ha_state == "Fenced" {
                // Declared before: instances a job held then are handled
                // once the job lets go.
                self.recover_lost_instances(h, "its host was lost earlier")
                    .await?;
                continue;
            }
            suspects.push(h);
        }
        // One question per investigator and zone, however many suspects (a
        // coordinator restart makes every host a suspect until it is back).
        let mut seen: Vec<HeartbeatSeen> = Vec::new();
        let mut zones: Vec<i64> = suspects.iter().map(|h| h.zone_id).collect();
        zones.sort_unstable();
        zones.dedup();
        for zone in zones {
            let asked: Vec<&Host> = suspects
                .iter()
                .copied()
                .filter(|h| h.zone_id == zone)
                .collect();
            let clusters: std::collections::HashSet<i64> =
                asked.iter().map(|h| h.cluster_id).collect();
            let mut peers: Vec<&&Host> = real
                .iter()
                .filter(|o| o.zone_id == zone && heard(o))
                .collect();
            // Peers of the suspects' clusters first: they share their pools.
            peers.sort_by_key(|o| (!clusters.contains(&o.cluster_id), o.id));
            peers.truncate(INVESTIGATORS);
            let uuids: Vec<String> = asked.iter().map(|h| h.uuid.clone()).collect();
            let asks = peers.iter().map(|o| self.agents.investigate(o.id, &uuids));
            for answer in futures::future::join_all(asks).await.into_iter().flatten() {
                seen.extend(answer);
            }
        }
        for h in suspects {
            let of_host: Vec<HeartbeatSeen> =
                seen.iter().filter(|s| s.host == h.uuid).cloned().collect();
            let stream_ms = self.stream_silence_ms(h, others);
            match judge(&times, stream_ms, &of_host) {
                Verdict::Heard => {}
                Verdict::Unknown => {
                    self.set_host_ha(h.id, Some("Disconnected"), "Ineligible")
                        .await?
                }
                Verdict::Suspect { .. } => {
                    self.set_host_ha(h.id, Some("Disconnected"), "Suspect")
                        .await?
                }
                Verdict::Dead {
                    stream_ms,
                    storage_ms,
                    lease_ms,
                } => {
                    tracing::warn!(host = %h.uuid, name = %h.name, stream_ms, storage_ms, lease_ms, "host lost: Down");
                    self.set_host_ha(h.id, Some("Down"), "Fenced").await?;
                    let reason = format!(
                        "host {} lost (stream silent {stream_ms} ms, storage heartbeat silent {storage_ms} ms, lease {lease_ms} ms)",
                        h.name
                    );
                    self.recover_lost_instances(h, &reason).await?;
                }
            }
        }
        Ok(())
    }

    /// The instances the records still place on a lost host: stopped there,
    /// and HA-enabled ones started elsewhere. Instances a job is working on
    /// are left to it (a later pass takes them).
    async fn recover_lost_instances(self: &Arc<Self>, h: &Host, reason: &str) -> SResult<()> {
        let on_host: Vec<Vm> = self.store.all(Query::new().eq(Col::Host, h.id)).await?;
        for vm in on_host {
            if self.is_busy(&vm.uuid)
                || !matches!(
                    vm.state,
                    VmState::Running | VmState::Starting | VmState::Stopping | VmState::Migrating
                )
            {
                continue;
            }
            let res = self
                .transition(
                    vm.id,
                    Transition::PoweredOffOutOfBand,
                    |v| {
                        v.host_id = None;
                        v.migrating_to = None;
                    },
                    |_, _| {},
                )
                .await;
            let vm = match res {
                Ok(vm) => vm,
                Err(e) => {
                    tracing::warn!(vm = %vm.uuid, error = %e.text(), "a lost host's instance was not settled");
                    continue;
                }
            };
            self.record(&vm, "VM.HA", &format!("Instance stopped: {reason}"))
                .await?;
            if vm.ha_enable {
                self.ha_restart(&vm, h.id, reason).await?;
            }
        }
        Ok(())
    }

    /// Sets a host's state (when given) and HA state, if they differ.
    pub(crate) async fn set_host_ha(
        &self,
        host_id: i64,
        state: Option<&str>,
        ha_state: &str,
    ) -> SResult<()> {
        self.change_host_record(host_id, |h| {
            if h.ha_state == ha_state && state.is_none_or(|s| s == h.state) {
                return false;
            }
            if let Some(s) = state {
                h.state = s.into();
            }
            h.ha_state = ha_state.into();
            true
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(age_ms: u64, lease_ms: u32) -> HeartbeatSeen {
        HeartbeatSeen {
            host: "h".into(),
            found: true,
            age_ms,
            lease_ms,
        }
    }

    #[test]
    fn a_heard_host_is_alive_whatever_its_storage_says() {
        let t = HaTimes::new(1000, 4000, 1000);
        assert_eq!(judge(&t, 2_999, &[seen(60_000, 4000)]), Verdict::Heard);
    }

    #[test]
    fn a_silent_host_with_a_live_lease_is_only_suspect() {
        let t = HaTimes::new(1000, 4000, 1000);
        assert_eq!(
            judge(&t, 60_000, &[seen(800, 4000)]),
            Verdict::Suspect {
                storage_age_ms: 800
            }
        );
        // The freshest sighting wins: one peer that still sees it moving
        // keeps the host alive.
        assert_eq!(
            judge(&t, 60_000, &[seen(9_000, 4000), seen(300, 4000)]),
            Verdict::Suspect {
                storage_age_ms: 300
            }
        );
    }

    #[test]
    fn down_needs_both_signals_past_the_lease_and_margin() {
        let t = HaTimes::new(1000, 4000, 1000);
        assert_eq!(
            judge(&t, 5_001, &[seen(5_001, 4000)]),
            Verdict::Dead {
                stream_ms: 5_001,
                storage_ms: 5_001,
                lease_ms: 4000
            }
        );
        assert!(matches!(
            judge(&t, 5_000, &[seen(5_001, 4000)]),
            Verdict::Suspect { .. }
        ));
        assert!(matches!(
            judge(&t, 60_000, &[seen(5_000, 4000)]),
            Verdict::Suspect { .. }
        ));
        // A longer lease announced in the record is waited for.
        assert!(matches!(
            judge(&t, 60_000, &[seen(8_000, 10_000)]),
            Verdict::Suspect { .. }
        ));
    }

    #[test]
    fn without_a_peer_that_sees_the_record_nothing_is_decided() {
        let t = HaTimes::new(1000, 4000, 1000);
        assert_eq!(judge(&t, 600_000, &[]), Verdict::Unknown);
        assert_eq!(
            judge(&t, 600_000, &[HeartbeatSeen::default()]),
            Verdict::Unknown
        );
    }

    #[test]
    fn times_keep_the_lease_at_three_heartbeats() {
        let t = HaTimes::new(2000, 1000, -5);
        assert_eq!((t.heartbeat_ms, t.lease_ms, t.margin_ms), (2000, 6000, 0));
        assert_eq!(t.unheard_after_ms(), 6000);
    }
}
