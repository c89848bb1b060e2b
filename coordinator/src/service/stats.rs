//! Instance and volume statistics on the coordinator: samples arrive from the
//! agents (or the simulated hosts), wait in memory in each series' open block,
//! and are written as compressed blocks (`orrery_series`) to the statistics
//! store. Each series' open rows are also saved as a tail every minute, so a
//! restart loses at most that minute.
//!
//! Blocks are written per hour (60 samples at the default interval); every
//! twelve hourly blocks of a series are merged into one, which is where the
//! encoding reaches its best ratio. Retention (`vm.stats.max.retention.time`,
//! `vm.disk.stats.max.retention.time`) deletes whole blocks that end before
//! the cut-off and filters the rest at read time.

use super::*;
use crate::store::stats::{
    SeriesKey, SeriesKind, SqliteStats, StatsStore, StatsStoreError, StoredBlock,
};
use orrery_series::rates::counter_increase;
use orrery_series::{decode_samples, decode_samples_range, encode_samples, Schema};
use orrery_series::{VmSample, VolumeSample};
use std::collections::BTreeMap;

/// Rows in a freshly written block.
pub const BLOCK_ROWS: usize = 60;
/// Hourly blocks of a series merged into one.
pub const MERGE_AT: u32 = 12;

/// A series being filled.
struct Open<S> {
    rows: Vec<S>,
    /// Rows changed since the tail was last saved.
    dirty: bool,
    /// Hourly blocks stored for the series, once known.
    hot: Option<u32>,
}

impl<S> Default for Open<S> {
    fn default() -> Self {
        Open {
            rows: Vec::new(),
            dirty: false,
            hot: None,
        }
    }
}

#[derive(Default)]
struct State {
    vms: HashMap<i64, Open<VmSample>>,
    volumes: HashMap<i64, Open<VolumeSample>>,
    /// The last two samples of each instance: the figures
    /// listVirtualMachines shows are the latest one and its change since
    /// the one before.
    latest: HashMap<i64, (Option<VmSample>, VmSample)>,
    latest_volume: HashMap<i64, (Option<VolumeSample>, VolumeSample)>,
}

pub struct StatsHub {
    store: Box<dyn StatsStore>,
    state: parking_lot::Mutex<State>,
    /// Whether this coordinator writes blocks and tails now. Coordinators
    /// sharing one database all receive every host's samples; only the
    /// leader writes them, the others keep the open rows in memory (so a
    /// new leader continues the same series) and read what it wrote.
    writes: Writes,
}

/// Whether a statistics hub writes now (see `StatsHub::writes`).
pub type Writes = std::sync::Arc<dyn Fn() -> bool + Send + Sync>;

/// The figures of one interval, as CloudStack shows statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct VmFigures {
    pub ts: i64,
    pub cpu_percent: f64,
    pub network_kbs_read: u64,
    pub network_kbs_write: u64,
    pub disk_kbs_read: u64,
    pub disk_kbs_write: u64,
    pub disk_io_read: u64,
    pub disk_io_write: u64,
    pub memory_kbs: u64,
    pub memory_free_kbs: u64,
    pub memory_target_kbs: u64,
}

/// One sample read against the one before it; counters that went backwards
/// (a restart) count from zero, never negative.
pub fn vm_figures(prev: Option<&VmSample>, cur: &VmSample) -> VmFigures {
    let d = |f: fn(&VmSample) -> u64| prev.map(|p| counter_increase(f(p), f(cur))).unwrap_or(0);
    VmFigures {
        ts: cur.ts,
        cpu_percent: cur.cpu_percent(),
        network_kbs_read: d(|s| s.network.rx_bytes) / 1024,
        network_kbs_write: d(|s| s.network.tx_bytes) / 1024,
        disk_kbs_read: d(|s| s.disk.read_bytes) / 1024,
        disk_kbs_write: d(|s| s.disk.write_bytes) / 1024,
        disk_io_read: d(|s| s.disk.read_ops),
        disk_io_write: d(|s| s.disk.write_ops),
        memory_kbs: cur.memory.actual_kib,
        memory_free_kbs: cur.memory.unused_kib,
        memory_target_kbs: cur.memory.target_kib,
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct VolumeFigures {
    pub ts: i64,
    pub kbs_read: u64,
    pub kbs_write: u64,
    pub io_read: u64,
    pub io_write: u64,
    pub physical_size: u64,
}

pub fn volume_figures(prev: Option<&VolumeSample>, cur: &VolumeSample) -> VolumeFigures {
    let d = |f: fn(&VolumeSample) -> u64| prev.map(|p| counter_increase(f(p), f(cur))).unwrap_or(0);
    VolumeFigures {
        ts: cur.ts,
        kbs_read: d(|s| s.io.read_bytes) / 1024,
        kbs_write: d(|s| s.io.write_bytes) / 1024,
        io_read: d(|s| s.io.read_ops),
        io_write: d(|s| s.io.write_ops),
        physical_size: cur.physical_size,
    }
}

/// Work a series asks for once its lock is released.
enum Flush {
    Block(StoredBlock),
    Merge(SeriesKey, StoredBlock),
}

fn block_of<S: Schema>(key: SeriesKey, rows: &[S], level: u8) -> Option<StoredBlock> {
    let first = rows.first()?.ts();
    let last = rows.last()?.ts();
    let data = encode_samples(rows).ok()?;
    Some(StoredBlock {
        key,
        start_ts: first,
        end_ts: last,
        rows: rows.len() as u32,
        level,
        data,
    })
}

/// Adds a sample to an open series; a full series hands back its block.
fn push<S: Schema + Copy>(open: &mut Open<S>, key: SeriesKey, s: S) -> Option<Flush> {
    if open.rows.last().map(|l| l.ts() >= s.ts()).unwrap_or(false) {
        // Out of order or repeated: the series keeps strictly increasing time.
        return None;
    }
    open.rows.push(s);
    open.dirty = true;
    if open.rows.len() < BLOCK_ROWS {
        return None;
    }
    let rows = std::mem::take(&mut open.rows);
    let block = block_of(key, &rows, 0)?;
    let hot = open.hot.map(|h| h + 1);
    open.hot = hot;
    match hot {
        Some(h) if h >= MERGE_AT => {
            open.hot = Some(0);
            Some(Flush::Merge(key, block))
        }
        _ => Some(Flush::Block(block)),
    }
}

impl StatsHub {
    /// The embedded store: `stats.db` in the data dir, always written.
    pub async fn open(data_dir: &std::path::Path) -> Result<StatsHub, StatsStoreError> {
        let store = Box::new(SqliteStats::open(&data_dir.join("stats.db"))?);
        Self::with_store(store, std::sync::Arc::new(|| true)).await
    }

    /// A hub on `store`, writing while `writes` says so.
    pub async fn with_store(
        store: Box<dyn StatsStore>,
        writes: Writes,
    ) -> Result<StatsHub, StatsStoreError> {
        let hub = StatsHub {
            store,
            state: parking_lot::Mutex::new(State::default()),
            writes,
        };
        // Reload the tails saved before the last stop.
        let tails = hub.store.tails().await?;
        let mut st = hub.state.lock();
        for (key, data) in tails {
            match key.kind {
                SeriesKind::Vm => {
                    if let Ok(rows) = decode_samples::<VmSample>(&data) {
                        if let Some(last) = rows.last() {
                            let prev = rows.len().checked_sub(2).map(|i| rows[i]);
                            st.latest.insert(key.entity, (prev, *last));
                        }
                        st.vms.entry(key.entity).or_default().rows = rows;
                    }
                }
                SeriesKind::Volume => {
                    if let Ok(rows) = decode_samples::<VolumeSample>(&data) {
                        st.volumes.entry(key.entity).or_default().rows = rows;
                    }
                }
            }
        }
        drop(st);
        Ok(hub)
    }

    pub async fn ingest_vm(&self, vm_id: i64, s: VmSample) -> Result<(), StatsStoreError> {
        let key = SeriesKey {
            kind: SeriesKind::Vm,
            entity: vm_id,
        };
        let flush = {
            let mut st = self.state.lock();
            let newer = st
                .latest
                .get(&vm_id)
                .map(|(_, l)| l.ts < s.ts)
                .unwrap_or(true);
            if newer {
                let prev = st.latest.get(&vm_id).map(|(_, l)| *l);
                st.latest.insert(vm_id, (prev, s));
            }
            push(st.vms.entry(vm_id).or_default(), key, s)
        };
        self.flush(flush).await
    }

    /// Volume samples always update the latest figures; they are kept as
    /// history only when `keep` (vm.disk.stats.retention.enabled).
    pub async fn ingest_volume(
        &self,
        vol_id: i64,
        s: VolumeSample,
        keep: bool,
    ) -> Result<(), StatsStoreError> {
        let key = SeriesKey {
            kind: SeriesKind::Volume,
            entity: vol_id,
        };
        let flush = {
            let mut st = self.state.lock();
            let prev = st.latest_volume.get(&vol_id).map(|(_, l)| *l);
            if prev.map(|p| p.ts < s.ts).unwrap_or(true) {
                st.latest_volume.insert(vol_id, (prev, s));
            }
            if !keep {
                return Ok(());
            }
            push(st.volumes.entry(vol_id).or_default(), key, s)
        };
        self.flush(flush).await
    }

    async fn flush(&self, f: Option<Flush>) -> Result<(), StatsStoreError> {
        if !(self.writes)() {
            // The writing coordinator stores the same block.
            return Ok(());
        }
        match f {
            None => Ok(()),
            Some(Flush::Block(b)) => {
                let key = b.key;
                self.store.put_blocks(vec![b], vec![], vec![key]).await?;
                self.note_hot(key).await
            }
            Some(Flush::Merge(key, b)) => {
                let mut hot = self.store.hot_blocks(key).await?;
                hot.push(b);
                let merged = match key.kind {
                    SeriesKind::Vm => merge::<VmSample>(key, &hot),
                    SeriesKind::Volume => merge::<VolumeSample>(key, &hot),
                };
                let replace = hot.iter().map(|b| (key, b.start_ts)).collect();
                self.store
                    .put_blocks(merged.into_iter().collect(), replace, vec![key])
                    .await
            }
        }
    }

    /// Learns how many hourly blocks a series has, the first time it needs to.
    async fn note_hot(&self, key: SeriesKey) -> Result<(), StatsStoreError> {
        let known = {
            let st = self.state.lock();
            match key.kind {
                SeriesKind::Vm => st.vms.get(&key.entity).and_then(|o| o.hot),
                SeriesKind::Volume => st.volumes.get(&key.entity).and_then(|o| o.hot),
            }
        };
        if known.is_none() {
            let n = self.store.hot_blocks(key).await?.len() as u32;
            let mut st = self.state.lock();
            let hot = match key.kind {
                SeriesKind::Vm => st.vms.get_mut(&key.entity).map(|o| &mut o.hot),
                SeriesKind::Volume => st.volumes.get_mut(&key.entity).map(|o| &mut o.hot),
            };
            if let Some(h) = hot {
                h.get_or_insert(n);
            }
        }
        Ok(())
    }

    /// Saves the open rows of every series that changed since the last time.
    pub async fn save_tails(&self) -> Result<usize, StatsStoreError> {
        if !(self.writes)() {
            // Kept dirty: saved once this coordinator writes.
            return Ok(0);
        }
        let tails: Vec<(SeriesKey, Vec<u8>)> = {
            let mut st = self.state.lock();
            let mut out = Vec::new();
            for (id, o) in st.vms.iter_mut().filter(|(_, o)| o.dirty) {
                o.dirty = false;
                if let Ok(d) = encode_samples(&o.rows) {
                    out.push((
                        SeriesKey {
                            kind: SeriesKind::Vm,
                            entity: *id,
                        },
                        d,
                    ));
                }
            }
            for (id, o) in st.volumes.iter_mut().filter(|(_, o)| o.dirty) {
                o.dirty = false;
                if let Ok(d) = encode_samples(&o.rows) {
                    out.push((
                        SeriesKey {
                            kind: SeriesKind::Volume,
                            entity: *id,
                        },
                        d,
                    ));
                }
            }
            out
        };
        let n = tails.len();
        if n > 0 {
            self.store.put_tails(tails).await?;
        }
        Ok(n)
    }

    /// An instance's samples with `from <= ts < to` (unix ms), oldest first,
    /// with the one sample before `from` when there is one (for deltas).
    pub async fn vm_samples(
        &self,
        vm_id: i64,
        from: i64,
        to: i64,
    ) -> Result<Vec<VmSample>, StatsStoreError> {
        let key = SeriesKey {
            kind: SeriesKind::Vm,
            entity: vm_id,
        };
        self.samples(key, from, to, |st| {
            st.vms.get(&vm_id).map(|o| o.rows.clone())
        })
        .await
    }

    pub async fn volume_samples(
        &self,
        vol_id: i64,
        from: i64,
        to: i64,
    ) -> Result<Vec<VolumeSample>, StatsStoreError> {
        let key = SeriesKey {
            kind: SeriesKind::Volume,
            entity: vol_id,
        };
        self.samples(key, from, to, |st| {
            st.volumes.get(&vol_id).map(|o| o.rows.clone())
        })
        .await
    }

    /// A series' stored blocks and open rows in a range, merged by time.
    async fn samples<S: Schema + Copy>(
        &self,
        key: SeriesKey,
        from: i64,
        to: i64,
        open: impl FnOnce(&State) -> Option<Vec<S>>,
    ) -> Result<Vec<S>, StatsStoreError> {
        // An hour of look-back finds the sample before `from` at any interval
        // up to an hour.
        let look_from = from.saturating_sub(3_600_000);
        let mut rows: BTreeMap<i64, S> = BTreeMap::new();
        for b in self.store.blocks(key, look_from, to).await? {
            if let Ok(s) = decode_samples_range::<S>(&b.data, look_from, to) {
                rows.extend(s.into_iter().map(|x| (x.ts(), x)));
            }
        }
        let open_rows = open(&self.state.lock()).unwrap_or_default();
        rows.extend(
            open_rows
                .into_iter()
                .filter(|s| s.ts() >= look_from && s.ts() < to)
                .map(|s| (s.ts(), s)),
        );
        let all: Vec<S> = rows.into_values().collect();
        let first_in = all.iter().position(|s| s.ts() >= from).unwrap_or(all.len());
        Ok(all[first_in.saturating_sub(1)..].to_vec())
    }

    /// The latest figures of an instance.
    pub fn vm_latest(&self, vm_id: i64) -> Option<VmFigures> {
        let st = self.state.lock();
        st.latest
            .get(&vm_id)
            .map(|(prev, cur)| vm_figures(prev.as_ref(), cur))
    }

    pub fn volume_latest(&self, vol_id: i64) -> Option<VolumeFigures> {
        let st = self.state.lock();
        st.latest_volume
            .get(&vol_id)
            .map(|(prev, cur)| volume_figures(prev.as_ref(), cur))
    }

    /// The latest figures of every instance, for the metrics endpoint.
    pub fn all_latest(&self) -> Vec<(i64, VmFigures)> {
        let st = self.state.lock();
        st.latest
            .iter()
            .map(|(id, (prev, cur))| (*id, vm_figures(prev.as_ref(), cur)))
            .collect()
    }

    /// Drops what is older than the retention settings; returns blocks
    /// deleted. A retention of zero or less keeps everything.
    pub async fn apply_retention(
        &self,
        now_ms: i64,
        vm_minutes: i64,
        volume_minutes: Option<i64>,
    ) -> Result<u64, StatsStoreError> {
        let mut n = 0;
        if vm_minutes > 0 {
            let cutoff = now_ms - vm_minutes * 60_000;
            n += self.store.delete_before(SeriesKind::Vm, cutoff).await?;
            // Series with nothing left in memory and no sample since the
            // cut-off (expunged or long stopped instances) are forgotten,
            // tails included.
            let gone: Vec<SeriesKey> = {
                let mut st = self.state.lock();
                for o in st.vms.values_mut() {
                    let before = o.rows.len();
                    o.rows.retain(|s| s.ts >= cutoff);
                    o.dirty |= o.rows.len() != before;
                }
                let stale: Vec<i64> = st
                    .vms
                    .iter()
                    .filter(|(id, o)| {
                        o.rows.is_empty() && st.latest.get(id).is_none_or(|(_, l)| l.ts < cutoff)
                    })
                    .map(|(id, _)| *id)
                    .collect();
                for id in &stale {
                    st.vms.remove(id);
                    st.latest.remove(id);
                }
                stale
                    .into_iter()
                    .map(|entity| SeriesKey {
                        kind: SeriesKind::Vm,
                        entity,
                    })
                    .collect()
            };
            if !gone.is_empty() {
                self.store.put_blocks(Vec::new(), Vec::new(), gone).await?;
            }
        }
        if let Some(m) = volume_minutes.filter(|m| *m > 0) {
            let cutoff = now_ms - m * 60_000;
            n += self.store.delete_before(SeriesKind::Volume, cutoff).await?;
        }
        Ok(n)
    }

    pub async fn size_bytes(&self) -> Result<u64, StatsStoreError> {
        self.store.size_bytes().await
    }
}

/// Merges a series' hourly blocks into one.
fn merge<S: Schema + Copy>(key: SeriesKey, blocks: &[StoredBlock]) -> Option<StoredBlock> {
    let mut rows: BTreeMap<i64, S> = BTreeMap::new();
    for b in blocks {
        if let Ok(s) = decode_samples::<S>(&b.data) {
            rows.extend(s.into_iter().map(|x| (x.ts(), x)));
        }
    }
    let rows: Vec<S> = rows.into_values().collect();
    block_of(key, &rows, 1)
}

/// How agents sample, from the settings; pushed to every agent session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatsSettings {
    pub vm_interval_ms: u32,
    pub disk_interval_ms: u32,
    pub user_vm_only: bool,
}

/// One instance in a host's statistics report.
#[derive(Debug, Clone, Default)]
pub struct InstanceReport {
    pub instance_uuid: String,
    /// Negative when the agent has no previous sample to compare with.
    pub cpu_percent: f64,
    pub vcpus: u32,
    pub memory: orrery_series::MemoryStats,
    pub network: orrery_series::NetCounters,
    /// Summed over the instance's disks.
    pub disk: orrery_series::IoCounters,
    pub disks: Vec<DiskReport>,
}

#[derive(Debug, Clone, Default)]
pub struct DiskReport {
    pub volume_uuid: String,
    pub io: orrery_series::IoCounters,
    pub allocation: u64,
    pub capacity: u64,
}

#[derive(Debug, Clone, Default)]
pub struct HostStats {
    pub unix_ms: i64,
    pub with_disks: bool,
    pub instances: Vec<InstanceReport>,
}

/// The statistics part of the service: sampling settings for the agents,
/// reports in, figures and history out (through `hub`), retention.
pub struct Statistics {
    ctx: Arc<Context>,
    /// Instance and volume series and their latest figures.
    pub hub: StatsHub,
    /// Sampling settings as agents should apply them.
    config: tokio::sync::watch::Sender<StatsSettings>,
    /// Instance and volume ids by uuid, for statistics reports.
    ids: parking_lot::Mutex<HashMap<String, i64>>,
}

super::context::part_of_service!(Statistics);

impl Statistics {
    pub(in crate::service) fn new(ctx: Arc<Context>, hub: StatsHub) -> Self {
        Statistics {
            ctx,
            hub,
            config: tokio::sync::watch::channel(StatsSettings::default()).0,
            ids: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    pub fn settings_now(&self) -> StatsSettings {
        let vm = self
            .ctx
            .setting_i64("vm.stats.interval")
            .clamp(0, u32::MAX as i64) as u32;
        let disk_s = self.ctx.setting_i64("vm.disk.stats.interval").max(0);
        let min_s = self.ctx.setting_i64("vm.disk.stats.interval.min").max(0);
        let disk_ms = if disk_s == 0 {
            0
        } else {
            (disk_s.max(min_s) * 1000).clamp(0, u32::MAX as i64) as u32
        };
        StatsSettings {
            vm_interval_ms: vm,
            disk_interval_ms: disk_ms,
            user_vm_only: self.ctx.setting_bool("vm.stats.user.vm.only"),
        }
    }

    /// Publishes the sampling settings after a change, so every connected
    /// agent applies them without a restart.
    pub fn refresh_settings(&self) {
        let now = self.settings_now();
        self.config.send_if_modified(|cur| {
            let changed = *cur != now;
            *cur = now;
            changed
        });
    }

    pub fn watch_settings(&self) -> tokio::sync::watch::Receiver<StatsSettings> {
        self.config.subscribe()
    }

    /// The id of a live instance or volume by uuid; ids never change, so
    /// they are kept once found.
    async fn id_by_uuid<E: Entity + Owned>(&self, uuid: &str) -> SResult<Option<i64>> {
        if let Some(id) = self.ids.lock().get(uuid) {
            return Ok(Some(*id));
        }
        let id = self
            .ctx
            .store
            .load_uuid::<E>(uuid)
            .await?
            .filter(|e| !e.is_removed())
            .map(|e| e.id());
        if let Some(i) = id {
            let mut m = self.ids.lock();
            if m.len() > 200_000 {
                m.clear();
            }
            m.insert(uuid.to_string(), i);
        }
        Ok(id)
    }

    /// Takes one host's statistics report.
    pub async fn ingest(&self, report: &HostStats) -> SResult<usize> {
        let keep_disks = self.ctx.setting_bool("vm.disk.stats.retention.enabled");
        let mut n = 0;
        for i in &report.instances {
            let Some(vm_id) = self.id_by_uuid::<Vm>(&i.instance_uuid).await? else {
                continue;
            };
            let mut s = VmSample {
                ts: report.unix_ms,
                vcpus: i.vcpus,
                memory: i.memory,
                network: i.network,
                disk: i.disk,
                ..Default::default()
            };
            // No previous sample on the agent: no figure yet, shown as 0.
            s.set_cpu_percent(i.cpu_percent.clamp(0.0, 100.0));
            self.hub.ingest_vm(vm_id, s).await?;
            n += 1;
            if report.with_disks {
                for d in &i.disks {
                    if d.volume_uuid.is_empty() {
                        continue;
                    }
                    if let Some(vol) = self.id_by_uuid::<Volume>(&d.volume_uuid).await? {
                        let v = VolumeSample {
                            ts: report.unix_ms,
                            io: d.io,
                            physical_size: d.allocation,
                            virtual_size: d.capacity,
                        };
                        self.hub.ingest_volume(vol, v, keep_disks).await?;
                    }
                }
            }
        }
        Ok(n)
    }

    /// Statistics of the instances on simulated hosts, made up but shaped
    /// like real ones: CPU wandering with the instance and the time,
    /// counters that only grow.
    pub async fn simulate(&self, unix_ms: i64) -> SResult<usize> {
        let hosts: Vec<Host> = self
            .ctx
            .store
            .all(Query::new().and(Cond::Ne(Col::State, "Removed".into())))
            .await?;
        let simulated: std::collections::HashSet<i64> = hosts
            .iter()
            .filter(|h| h.simulated && h.removed.is_none())
            .map(|h| h.id)
            .collect();
        if simulated.is_empty() {
            return Ok(0);
        }
        let vms: Vec<Vm> = self
            .ctx
            .store
            .all(Query::new().eq(Col::State, "Running"))
            .await?;
        let mut report = HostStats {
            unix_ms,
            with_disks: self.settings_now().disk_interval_ms > 0,
            instances: Vec::new(),
        };
        let secs = (unix_ms / 1000) as u64;
        for v in vms
            .iter()
            .filter(|v| v.host_id.is_some_and(|h| simulated.contains(&h)))
        {
            let seed = (v.id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let wobble = (seed ^ (secs / 60).wrapping_mul(0xBF58_476D_1CE4_E5B9)) % 4000;
            let rate = 1 + seed % 50_000;
            let mem_kib = (v.memory.max(0) as u64) * 1024;
            let io = orrery_series::IoCounters {
                read_bytes: secs * rate * 4,
                write_bytes: secs * rate * 2,
                read_ops: secs * (rate / 4096 + 1),
                write_ops: secs * (rate / 8192 + 1),
            };
            report.instances.push(InstanceReport {
                instance_uuid: v.uuid.clone(),
                cpu_percent: 5.0 + wobble as f64 / 100.0,
                vcpus: v.cpu_number.max(1) as u32,
                memory: orrery_series::MemoryStats {
                    actual_kib: mem_kib,
                    unused_kib: mem_kib * 2 / 5,
                    rss_kib: mem_kib * 3 / 5,
                    target_kib: mem_kib,
                },
                network: orrery_series::NetCounters {
                    rx_bytes: secs * rate,
                    tx_bytes: secs * rate / 2,
                    rx_packets: secs * (rate / 1000 + 1),
                    tx_packets: secs * (rate / 2000 + 1),
                },
                disk: io,
                disks: vec![],
            });
        }
        self.ingest(&report).await
    }

    /// Saves tails every minute, applies retention every five, and samples
    /// the simulated hosts at the configured interval.
    pub fn start_tasks(self: &Arc<Self>) {
        let svc = self.clone();
        tokio::spawn(async move {
            let mut n: u64 = 0;
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(60)).await;
                n += 1;
                if let Err(e) = svc.hub.save_tails().await {
                    tracing::warn!(error = %e, "saving statistics tails failed");
                }
                if n.is_multiple_of(5) && svc.ctx.leads() {
                    if let Err(e) = svc.retention().await {
                        tracing::warn!(error = %e.text(), "statistics retention failed");
                    }
                }
            }
        });
        // The simulated hosts sample like agents do: at the configured
        // interval, picking up a new interval at once.
        let svc = self.clone();
        let mut settings = self.watch_settings();
        tokio::spawn(async move {
            loop {
                let ms = settings.borrow_and_update().vm_interval_ms;
                if ms == 0 {
                    if settings.changed().await.is_err() {
                        return;
                    }
                    continue;
                }
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_millis(u64::from(ms.max(1000)))) => {}
                    r = settings.changed() => {
                        if r.is_err() {
                            return;
                        }
                        continue;
                    }
                }
                if let Err(e) = svc.simulate(chrono::Utc::now().timestamp_millis()).await {
                    tracing::warn!(error = %e.text(), "simulated statistics failed");
                }
            }
        });
    }

    pub async fn retention(&self) -> SResult<u64> {
        let vm = self.ctx.setting_i64("vm.stats.max.retention.time");
        let vol = self
            .ctx
            .setting_bool("vm.disk.stats.retention.enabled")
            .then(|| self.ctx.setting_i64("vm.disk.stats.max.retention.time"));
        Ok(self
            .hub
            .apply_retention(chrono::Utc::now().timestamp_millis(), vm, vol)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("orrery-stats-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn sample(ts: i64, cpu: f64, rx: u64) -> VmSample {
        let mut s = VmSample {
            ts,
            vcpus: 2,
            ..Default::default()
        };
        s.set_cpu_percent(cpu);
        s.network.rx_bytes = rx;
        s.memory.actual_kib = 524_288;
        s
    }

    const MIN: i64 = 60_000;

    #[tokio::test]
    async fn a_hub_that_does_not_write_keeps_its_rows_until_it_does() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let d = dir();
        let writes = Arc::new(AtomicBool::new(false));
        let flag = writes.clone();
        let hub = StatsHub::with_store(
            Box::new(SqliteStats::open(&d.join("stats.db")).unwrap()),
            Arc::new(move || flag.load(Ordering::Acquire)),
        )
        .await
        .unwrap();
        let key = SeriesKey {
            kind: SeriesKind::Vm,
            entity: 3,
        };
        // A finished block and open rows: nothing stored while another
        // coordinator writes, yet everything it received is answered.
        for i in 0..(BLOCK_ROWS as i64 + 5) {
            hub.ingest_vm(3, sample(i * MIN, 1.0, 0)).await.unwrap();
        }
        assert!(hub.store.blocks(key, 0, i64::MAX).await.unwrap().is_empty());
        assert_eq!(hub.save_tails().await.unwrap(), 0);
        assert!(hub.store.tails().await.unwrap().is_empty());
        assert_eq!(hub.vm_samples(3, 0, i64::MAX).await.unwrap().len(), 5);
        // Leading now: the open rows are saved, the next block stored.
        writes.store(true, Ordering::Release);
        assert_eq!(hub.save_tails().await.unwrap(), 1);
        assert_eq!(hub.store.tails().await.unwrap().len(), 1);
        for i in (BLOCK_ROWS as i64 + 5)..(2 * BLOCK_ROWS as i64) {
            hub.ingest_vm(3, sample(i * MIN, 1.0, 0)).await.unwrap();
        }
        let stored = hub.store.blocks(key, 0, i64::MAX).await.unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].start_ts, BLOCK_ROWS as i64 * MIN);
        assert!(hub.store.tails().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn history_spans_blocks_merges_and_the_open_rows() {
        let d = dir();
        let hub = StatsHub::open(&d).await.unwrap();
        // 13 hours at one sample a minute: 12 hourly blocks merged into
        // one, then an hour in a fresh block, then 30 open minutes.
        let n = 13 * 60 + 30;
        for i in 0..n {
            hub.ingest_vm(7, sample(i * MIN, (i % 100) as f64, (i as u64) * 2048))
                .await
                .unwrap();
        }
        let blocks = hub
            .store
            .blocks(
                SeriesKey {
                    kind: SeriesKind::Vm,
                    entity: 7,
                },
                0,
                i64::MAX,
            )
            .await
            .unwrap();
        assert_eq!(
            blocks.iter().map(|b| (b.level, b.rows)).collect::<Vec<_>>(),
            vec![(1, 720), (0, 60)]
        );
        let all = hub.vm_samples(7, 0, i64::MAX).await.unwrap();
        assert_eq!(all.len(), n as usize);
        assert!(all.windows(2).all(|w| w[0].ts < w[1].ts));
        // A range inside: the sample before it comes along for the deltas.
        let part = hub.vm_samples(7, 100 * MIN, 110 * MIN).await.unwrap();
        assert_eq!(part.first().unwrap().ts, 99 * MIN);
        assert_eq!(part.len(), 11);
        let f = vm_figures(Some(&part[0]), &part[1]);
        assert_eq!(f.network_kbs_read, 2);
        // Sample 100's CPU figure was (100 % 100) percent.
        assert_eq!(f.cpu_percent, 0.0);
        assert_eq!(part[1].ts, 100 * MIN);
        std::fs::remove_dir_all(&d).ok();
    }

    #[tokio::test]
    async fn open_rows_survive_a_restart_through_the_tails() {
        let d = dir();
        {
            let hub = StatsHub::open(&d).await.unwrap();
            for i in 0..25 {
                hub.ingest_vm(3, sample(i * MIN, 10.0, 0)).await.unwrap();
            }
            assert_eq!(hub.save_tails().await.unwrap(), 1);
            assert_eq!(hub.save_tails().await.unwrap(), 0, "nothing changed");
        }
        let hub = StatsHub::open(&d).await.unwrap();
        assert_eq!(hub.vm_samples(3, 0, i64::MAX).await.unwrap().len(), 25);
        assert_eq!(hub.vm_latest(3).unwrap().cpu_percent, 10.0);
        // The series goes on from where it was.
        for i in 25..70 {
            hub.ingest_vm(3, sample(i * MIN, 10.0, 0)).await.unwrap();
        }
        assert_eq!(hub.vm_samples(3, 0, i64::MAX).await.unwrap().len(), 70);
        std::fs::remove_dir_all(&d).ok();
    }

    #[tokio::test]
    async fn counters_that_restart_never_give_negative_figures() {
        let d = dir();
        let hub = StatsHub::open(&d).await.unwrap();
        hub.ingest_vm(1, sample(0, 5.0, 10 << 20)).await.unwrap();
        hub.ingest_vm(1, sample(MIN, 5.0, 11 << 20)).await.unwrap();
        assert_eq!(hub.vm_latest(1).unwrap().network_kbs_read, 1024);
        // The instance restarted: its counter is small again.
        hub.ingest_vm(1, sample(2 * MIN, 5.0, 4096)).await.unwrap();
        assert_eq!(hub.vm_latest(1).unwrap().network_kbs_read, 4);
        // Samples out of order are ignored.
        hub.ingest_vm(1, sample(MIN / 2, 99.0, 0)).await.unwrap();
        assert_eq!(hub.vm_samples(1, 0, i64::MAX).await.unwrap().len(), 3);
        std::fs::remove_dir_all(&d).ok();
    }

    #[tokio::test]
    async fn retention_drops_old_samples_and_shrinks_the_file() {
        let d = dir();
        let hub = StatsHub::open(&d).await.unwrap();
        // 200 instances, 24 hours each, with traffic that varies like real
        // traffic (a fixed pseudo-random sequence).
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for vm in 0..200 {
            let mut rx = 0u64;
            for i in 0..(24 * 60) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                rx += x % 5_000_000;
                hub.ingest_vm(vm, sample(i * MIN, (x % 10_000) as f64 / 100.0, rx))
                    .await
                    .unwrap();
            }
        }
        let before = hub.size_bytes().await.unwrap();
        let now = 24 * 60 * MIN;
        // Keep the last 12 hours.
        let deleted = hub.apply_retention(now, 12 * 60, None).await.unwrap();
        assert!(deleted > 0);
        let after = hub.size_bytes().await.unwrap();
        assert!(
            after * 10 < before * 7,
            "file should shrink: {before} -> {after} bytes"
        );
        let left = hub.vm_samples(5, 0, i64::MAX).await.unwrap();
        assert!(left.first().unwrap().ts >= now - 13 * 60 * MIN);
        assert_eq!(left.last().unwrap().ts, now - MIN);
        // Zero keeps everything.
        assert_eq!(hub.apply_retention(now * 10, 0, None).await.unwrap(), 0);
        // Once nothing is left, the series is forgotten.
        hub.apply_retention(now * 10, 1, None).await.unwrap();
        assert!(hub.vm_samples(5, 0, i64::MAX).await.unwrap().is_empty());
        assert!(hub.vm_latest(5).is_none());
        std::fs::remove_dir_all(&d).ok();
    }
}
