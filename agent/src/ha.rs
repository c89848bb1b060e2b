//! The storage heartbeat and the self-fencing watchdog.
//!
//! Every agent renews a lease record for its host on the shared primary pool
//! (`<primary>/.orrery-ha/<host id>`) at a short interval and watches the
//! records of the other hosts that share the pool, so the coordinator can ask
//! it whether a silent host is still alive (an investigation). A host counts
//! as alive while its lease lasts: `lease` after its last renewal.
//!
//! The coordinator starts a lost host's instances elsewhere only once both
//! the host's stream and its lease have been silent for longer than the lease
//! time. The other side of that bargain is kept here: a host that can neither
//! renew its lease nor hear the coordinator kills its instances' QEMU
//! processes before its lease ends, so no instance can ever run twice. The
//! watchdog is its own thread reading only local files (libvirt's status
//! files under /run), so neither a hung storage write nor a hung libvirt nor
//! a busy async runtime can delay it.
//!
//! Timing with the defaults (interval 0.5 s, lease 3 s): the agent fences
//! once its last renewal is older than `lease - 2 × interval` (2 s) and the
//! coordinator has not answered for two intervals; peers see the lease
//! expire no earlier than 3 s after the last renewal, and the coordinator
//! waits a margin more.

use orrery_proto::v1 as pb;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The directory of lease records on a shared pool.
pub const HA_DIR: &str = ".orrery-ha";
/// A record is written in place at this fixed size, so renewing it needs no
/// new blocks (a full disk still renews) and a reader never sees a record
/// grow or shrink.
pub const RECORD_BYTES: usize = 256;

pub const DEFAULT_HEARTBEAT_MS: u32 = 500;
pub const DEFAULT_LEASE_MS: u32 = 3000;

/// The settings in force (`HaConfig`), validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HaSettings {
    pub heartbeat: Duration,
    pub lease: Duration,
}

impl Default for HaSettings {
    fn default() -> Self {
        HaSettings::new(DEFAULT_HEARTBEAT_MS, DEFAULT_LEASE_MS)
    }
}

impl HaSettings {
    /// Clamps to what keeps fencing ahead of the lease: at least 100 ms
    /// between renewals and a lease of at least three of them.
    pub fn new(heartbeat_ms: u32, lease_ms: u32) -> Self {
        let hb = heartbeat_ms.clamp(100, 60_000);
        let lease = lease_ms.max(3 * hb);
        HaSettings {
            heartbeat: Duration::from_millis(hb as u64),
            lease: Duration::from_millis(lease as u64),
        }
    }

    /// How stale both the lease and the coordinator's word may get before
    /// the host fences itself: two renewals before the lease ends, so the
    /// kill lands while peers still see the lease as held.
    pub fn fence_after(&self) -> Duration {
        self.lease.saturating_sub(2 * self.heartbeat)
    }

    /// Silence from the coordinator after which it counts as lost: two
    /// missed answers to heartbeats.
    pub fn contact_lost_after(&self) -> Duration {
        2 * self.heartbeat
    }
}

impl From<&pb::HaConfig> for HaSettings {
    fn from(c: &pb::HaConfig) -> Self {
        HaSettings::new(c.heartbeat_ms, c.lease_ms)
    }
}

/// One lease record as written on the pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub host: String,
    pub seq: u64,
    pub unix_ms: i64,
    pub lease_ms: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("the record is {0} bytes, more than {RECORD_BYTES}")]
    TooLong(usize),
    #[error("not a lease record: {0}")]
    Malformed(String),
}

impl Record {
    /// JSON padded with spaces to [`RECORD_BYTES`], ending in a newline.
    pub fn encode(&self) -> Result<Vec<u8>, RecordError> {
        let mut out =
            serde_json::to_vec(self).map_err(|e| RecordError::Malformed(e.to_string()))?;
        if out.len() + 1 > RECORD_BYTES {
            return Err(RecordError::TooLong(out.len()));
        }
        out.resize(RECORD_BYTES - 1, b' ');
        out.push(b'\n');
        Ok(out)
    }

    pub fn decode(bytes: &[u8]) -> Result<Record, RecordError> {
        let text = std::str::from_utf8(bytes).map_err(|e| RecordError::Malformed(e.to_string()))?;
        serde_json::from_str(text.trim()).map_err(|e| RecordError::Malformed(e.to_string()))
    }
}

/// What this host saw of one peer's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    seq: u64,
    lease_ms: u32,
    /// When this host first read the current `seq`.
    since: Instant,
}

/// Peers' records as observed over time. Ages come from this host's
/// monotonic clock: the time since a record last changed is never more than
/// the time since it was written, so a lease never looks expired early.
#[derive(Debug, Default)]
pub struct PeerTable {
    seen: HashMap<String, Seen>,
}

impl PeerTable {
    pub fn observe(&mut self, r: &Record, now: Instant) {
        match self.seen.get_mut(&r.host) {
            Some(s) if s.seq == r.seq => s.lease_ms = r.lease_ms,
            _ => {
                self.seen.insert(
                    r.host.clone(),
                    Seen {
                        seq: r.seq,
                        lease_ms: r.lease_ms,
                        since: now,
                    },
                );
            }
        }
    }

    /// How a peer's heartbeat looks from here now.
    pub fn report(&self, host: &str, now: Instant) -> pb::HeartbeatSeen {
        match self.seen.get(host) {
            Some(s) => pb::HeartbeatSeen {
                host_id: host.to_string(),
                found: true,
                age_ms: now.saturating_duration_since(s.since).as_millis() as u64,
                lease_ms: s.lease_ms,
                seq: s.seq,
            },
            None => pb::HeartbeatSeen {
                host_id: host.to_string(),
                ..Default::default()
            },
        }
    }
}

/// Pure: whether the host must fence itself now. Only when it has lost
/// both its lease renewals and the coordinator; a host that never renewed
/// (no shared pool yet) counts from the moment the watchdog started.
pub fn fence_due(
    now: Instant,
    last_renewal: Instant,
    last_contact: Instant,
    settings: &HaSettings,
) -> bool {
    now.saturating_duration_since(last_renewal) >= settings.fence_after()
        && now.saturating_duration_since(last_contact) >= settings.contact_lost_after()
}

/// A running domain as libvirt's status file records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningDomain {
    pub name: String,
    pub pid: u32,
}

/// Shared between the link (settings, coordinator contact, investigations)
/// and the heartbeat and watchdog threads.
pub struct Ha {
    host: String,
    dir: PathBuf,
    run_dir: PathBuf,
    settings: Mutex<HaSettings>,
    epoch: Instant,
    /// Milliseconds since `epoch` of the last renewal / word from the
    /// coordinator (atomics: the watchdog never waits on a lock a stuck
    /// writer could hold).
    last_renewal_ms: AtomicU64,
    last_contact_ms: AtomicU64,
    peers: Mutex<PeerTable>,
    seq: AtomicU64,
    fenced: AtomicBool,
}

impl Ha {
    /// `pool` is the shared primary pool; `run_dir` is libvirt's QEMU state
    /// directory (`/run/libvirt/qemu`).
    pub fn new(host: &str, pool: &Path, run_dir: &Path) -> Arc<Ha> {
        Arc::new(Ha {
            host: host.to_string(),
            dir: pool.join(HA_DIR),
            run_dir: run_dir.to_path_buf(),
            settings: Mutex::new(HaSettings::default()),
            epoch: Instant::now(),
            last_renewal_ms: AtomicU64::new(0),
            last_contact_ms: AtomicU64::new(0),
            peers: Mutex::new(PeerTable::default()),
            // Sequence numbers only need to change; starting from the clock
            // keeps a restarted agent from repeating its last one.
            seq: AtomicU64::new(chrono::Utc::now().timestamp_millis() as u64),
            fenced: AtomicBool::new(false),
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn at(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }

    pub fn settings(&self) -> HaSettings {
        *self.settings.lock()
    }

    pub fn set_settings(&self, s: HaSettings) {
        let mut cur = self.settings.lock();
        if *cur != s {
            tracing::info!(
                heartbeat_ms = s.heartbeat.as_millis() as u64,
                lease_ms = s.lease.as_millis() as u64,
                "HA settings"
            );
            *cur = s;
        }
    }

    /// The coordinator was heard from (any message on the stream).
    pub fn contact(&self) {
        self.last_contact_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    pub fn fenced(&self) -> bool {
        self.fenced.load(Ordering::Relaxed)
    }

    /// Answers an investigation about `hosts`.
    pub fn investigate(&self, hosts: &[String]) -> pb::HeartbeatReport {
        let now = Instant::now();
        let peers = self.peers.lock();
        pb::HeartbeatReport {
            hosts: hosts.iter().map(|h| peers.report(h, now)).collect(),
        }
    }

    /// Renews this host's record once. The file is opened afresh each
    /// time: a renewal then proves the pool's path works now (a remount, a
    /// stale NFS handle or a cut path fails here), not just an old handle.
    fn renew(&self) -> std::io::Result<()> {
        let path = self.dir.join(&self.host);
        if !self.dir.is_dir() {
            std::fs::create_dir_all(&self.dir)?;
        }
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let rec = Record {
            host: self.host.clone(),
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
            unix_ms: chrono::Utc::now().timestamp_millis(),
            lease_ms: self.settings().lease.as_millis() as u32,
        };
        let bytes = rec
            .encode()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        f.seek(SeekFrom::Start(0))?;
        f.write_all(&bytes)?;
        f.sync_data()
    }

    /// Reads every peer's record in the pool's directory.
    fn scan(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let now = Instant::now();
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            if name == self.host || name.starts_with('.') {
                continue;
            }
            let mut buf = [0u8; RECORD_BYTES];
            let Ok(n) = File::open(e.path()).and_then(|mut f| f.read(&mut buf)) else {
                continue;
            };
            // A record caught mid-write fails to parse and counts as no
            // change, which only makes its lease look younger.
            if let Ok(r) = Record::decode(&buf[..n]) {
                if r.host == name {
                    self.peers.lock().observe(&r, now);
                }
            }
        }
    }

    /// Starts the heartbeat and watchdog threads for the life of the process.
    pub fn start(self: &Arc<Self>) -> std::io::Result<()> {
        let me = self.clone();
        std::thread::Builder::new()
            .name("ha-heartbeat".into())
            .spawn(move || me.heartbeat_loop())?;
        let me = self.clone();
        std::thread::Builder::new()
            .name("ha-watchdog".into())
            .spawn(move || me.watchdog_loop())?;
        Ok(())
    }

    fn heartbeat_loop(&self) {
        let mut failing = false;
        loop {
            let started = Instant::now();
            match self.renew() {
                Ok(()) => {
                    self.last_renewal_ms.store(self.now_ms(), Ordering::Relaxed);
                    if failing {
                        tracing::info!(dir = %self.dir.display(), "storage heartbeat renewed again");
                        failing = false;
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::error!(dir = %self.dir.display(), error = %e, "renewing the storage heartbeat failed");
                        failing = true;
                    }
                }
            }
            self.scan();
            let every = self.settings().heartbeat;
            std::thread::sleep(every.saturating_sub(started.elapsed()));
        }
    }

    fn watchdog_loop(&self) {
        loop {
            let s = self.settings();
            let now = Instant::now();
            let renewal = self.at(self.last_renewal_ms.load(Ordering::Relaxed));
            let contact = self.at(self.last_contact_ms.load(Ordering::Relaxed));
            if fence_due(now, renewal, contact, &s) {
                let killed = fence(&self.run_dir);
                if !self.fenced.swap(true, Ordering::Relaxed) || !killed.is_empty() {
                    tracing::error!(
                        killed = ?killed,
                        lease_ms = s.lease.as_millis() as u64,
                        "fenced: neither the storage lease nor the coordinator answers; this host's instances were killed so they cannot run twice"
                    );
                }
            } else if self.fenced.load(Ordering::Relaxed)
                && now.saturating_duration_since(renewal) < s.heartbeat * 2
                && now.saturating_duration_since(contact) < s.heartbeat * 2
            {
                tracing::info!("lease and coordinator back; no longer fenced");
                self.fenced.store(false, Ordering::Relaxed);
            }
            // Checked four times per renewal interval, so the kill lands
            // well inside the two intervals left before the lease ends.
            std::thread::sleep((s.heartbeat / 4).max(Duration::from_millis(25)));
        }
    }
}

/// The Orrery instances libvirt runs on this host, from its status files.
pub fn running_domains(run_dir: &Path) -> Vec<RunningDomain> {
    let Ok(entries) = std::fs::read_dir(run_dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().and_then(|x| x.to_str()) != Some("xml") {
            continue;
        }
        let Ok(xml) = std::fs::read_to_string(&path) else {
            continue;
        };
        if let Ok(Some((pid, meta))) = crate::domxml::running_status(&xml) {
            out.push(RunningDomain {
                name: meta.instance_name,
                pid,
            });
        }
    }
    out
}

/// Kills every Orrery instance's QEMU on this host (SIGKILL: nothing it
/// does after the lease ends may reach its disks). Returns the names killed.
pub fn fence(run_dir: &Path) -> Vec<String> {
    let mut killed = Vec::new();
    for d in running_domains(run_dir) {
        // The pid must still be QEMU: a recycled pid is someone else.
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", d.pid)).unwrap_or_default();
        if !String::from_utf8_lossy(&cmdline).contains("qemu") {
            continue;
        }
        // SAFETY: kill(2) with a pid read from libvirt's status file and a
        // constant signal; no memory is shared.
        if unsafe { libc::kill(d.pid as i32, libc::SIGKILL) } == 0 {
            killed.push(d.name);
        }
    }
    killed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_at_a_fixed_size() {
        let r = Record {
            host: "0b7c3c5e-1111-4e4e-9a9a-123456789abc".into(),
            seq: u64::MAX,
            unix_ms: i64::MAX,
            lease_ms: u32::MAX,
        };
        let b = r.encode().unwrap();
        assert_eq!(b.len(), RECORD_BYTES);
        assert_eq!(Record::decode(&b).unwrap(), r);
        assert!(Record::decode(&b[..40]).is_err());
        assert!(Record::decode(b"\xff\xfe").is_err());
        let long = Record {
            host: "x".repeat(300),
            ..r
        };
        assert!(matches!(long.encode(), Err(RecordError::TooLong(_))));
    }

    #[test]
    fn ages_count_from_the_first_sight_of_a_sequence_number() {
        let t0 = Instant::now();
        let mut t = PeerTable::default();
        let r = |seq| Record {
            host: "h1".into(),
            seq,
            unix_ms: 0,
            lease_ms: 4000,
        };
        assert!(!t.report("h1", t0).found);
        t.observe(&r(1), t0);
        t.observe(&r(1), t0 + Duration::from_secs(3));
        let seen = t.report("h1", t0 + Duration::from_secs(5));
        assert!(seen.found);
        assert_eq!((seen.age_ms, seen.lease_ms, seen.seq), (5000, 4000, 1));
        // A new sequence number restarts the age.
        t.observe(&r(2), t0 + Duration::from_secs(6));
        assert_eq!(t.report("h1", t0 + Duration::from_secs(7)).age_ms, 1000);
    }

    #[test]
    fn fencing_needs_both_links_lost_and_comes_before_the_lease_ends() {
        let s = HaSettings::new(1000, 4000);
        assert_eq!(s.fence_after(), Duration::from_secs(2));
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        // Storage stale, coordinator fresh: no fence.
        assert!(!fence_due(at(3000), t0, at(2500), &s));
        // Coordinator silent, storage fresh: no fence.
        assert!(!fence_due(at(3000), at(2500), t0, &s));
        // Both silent for the fence time: fence, while peers still see
        // two renewal intervals of lease left.
        assert!(fence_due(at(2000), t0, t0, &s));
        assert!(!fence_due(at(1999), t0, t0, &s));
    }

    #[test]
    fn settings_keep_the_fence_ahead_of_the_lease() {
        let s = HaSettings::new(10, 10);
        assert_eq!(s.heartbeat, Duration::from_millis(100));
        assert_eq!(s.lease, Duration::from_millis(300));
        assert!(s.fence_after() >= Duration::from_millis(100));
        assert_eq!(HaSettings::default(), HaSettings::new(500, 3000));
    }

    #[test]
    fn a_host_renews_its_record_and_reads_its_peers() {
        let dir = tempfile::tempdir().unwrap();
        let run = tempfile::tempdir().unwrap();
        let a = Ha::new("host-a", dir.path(), run.path());
        let b = Ha::new("host-b", dir.path(), run.path());
        a.renew().unwrap();
        b.renew().unwrap();
        b.scan();
        let asked = ["host-a".to_string(), "host-c".to_string()];
        let report = b.investigate(&asked);
        let first = &report.hosts[0];
        assert!(first.found && first.host_id == "host-a");
        assert_eq!(first.lease_ms, DEFAULT_LEASE_MS);
        assert!(!report.hosts[1].found && report.hosts[1].host_id == "host-c");
        a.renew().unwrap();
        b.scan();
        assert_eq!(b.investigate(&asked).hosts[0].seq, first.seq + 1);
        let len = std::fs::metadata(dir.path().join(HA_DIR).join("host-a"))
            .unwrap()
            .len();
        assert_eq!(len, RECORD_BYTES as u64);
        // A pool whose path fails refuses the renewal.
        let gone = Ha::new("host-a", &dir.path().join("file/under/a/file"), run.path());
        std::fs::write(dir.path().join("file"), b"x").unwrap();
        assert!(gone.renew().is_err());
    }

    #[test]
    fn fencing_kills_only_running_orrery_qemu_processes() {
        let run = tempfile::tempdir().unwrap();
        // A process that is not QEMU under a status file naming it.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let status = format!(
            "<domstatus state='running' reason='booted' pid='{}'><domain type='kvm'><name>i-2-7-VM</name>\
             <metadata><orrery:instance xmlns:orrery='{}'><orrery:uuid>u-7</orrery:uuid>\
             <orrery:name>i-2-7-VM</orrery:name></orrery:instance></metadata></domain></domstatus>",
            child.id(),
            crate::domxml::ORRERY_NS
        );
        std::fs::write(run.path().join("i-2-7-VM.xml"), status).unwrap();
        std::fs::write(
            run.path().join("other.xml"),
            "<domstatus pid='1'><domain><name>x</name></domain></domstatus>",
        )
        .unwrap();
        let found = running_domains(run.path());
        assert_eq!(
            found,
            vec![RunningDomain {
                name: "i-2-7-VM".into(),
                pid: child.id()
            }]
        );
        // `sleep` is not QEMU: left alone.
        assert!(fence(run.path()).is_empty());
        assert!(child.try_wait().unwrap().is_none());
        child.kill().unwrap();
        let _ = child.wait();
    }
}
