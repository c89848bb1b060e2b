//! Instance statistics: the coordinator's sampling settings, the pure
//! [`Sampler`] that turns the hypervisor's cumulative counters into
//! reports, and the task that samples on the configured cadence.
//!
//! Cadence: nothing is sampled until the coordinator sends settings with a
//! VM interval; the first pass runs at once, then one per interval. Disk
//! statistics ride along every n-th pass, n being the disk interval in VM
//! intervals rounded up, so they are never more frequent than asked.
//! New settings restart the cadence without touching the link, and the
//! previous samples are kept, so CPU rates carry on across the change.
//!
//! Reports are best effort: when the link's queue is full a report is
//! dropped rather than waited on, so statistics never hold up command
//! results or events.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use orrery_proto::v1 as pb;
use tokio::sync::{mpsc, watch};

use crate::hypervisor::{DomainCounters, HvError, Hypervisor};

/// The shortest VM interval honoured: every pass asks each guest's QEMU
/// for its balloon and device figures, which a sub-second cadence would
/// turn into steady load on a busy host.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("reading domain statistics: {0}")]
    Hypervisor(#[from] HvError),
}

/// The coordinator's sampling settings (`StatsConfig`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSettings {
    /// None: no sampling at all.
    pub vm_interval: Option<Duration>,
    /// None: disk statistics are never included.
    pub disk_interval: Option<Duration>,
    /// Only domains that are Orrery instances.
    pub user_vm_only: bool,
}

impl From<&pb::StatsConfig> for StatsSettings {
    fn from(c: &pb::StatsConfig) -> Self {
        let interval = |ms: u32| (ms > 0).then(|| Duration::from_millis(u64::from(ms)));
        StatsSettings {
            vm_interval: interval(c.vm_interval_ms).map(|d| d.max(MIN_INTERVAL)),
            disk_interval: interval(c.disk_interval_ms),
            user_vm_only: c.user_vm_only,
        }
    }
}

impl StatsSettings {
    /// Whether pass number `pass` (the first is 0) includes disks.
    pub fn disks_due(&self, pass: u64) -> bool {
        let (Some(vm), Some(disk)) = (self.vm_interval, self.disk_interval) else {
            return false;
        };
        let every = disk.as_nanos().div_ceil(vm.as_nanos().max(1)).max(1);
        u128::from(pass) % every == 0
    }
}

/// What the previous pass saw of a domain.
#[derive(Debug, Clone, Copy)]
struct Previous {
    run_id: Option<u32>,
    cpu_time_ns: u64,
    at: Instant,
}

/// Turns successive passes of counters into reports, remembering each
/// domain's previous CPU time (by domain name, unique on a host).
#[derive(Debug, Default)]
pub struct Sampler {
    previous: HashMap<String, Previous>,
}

impl Sampler {
    pub fn new() -> Self {
        Sampler::default()
    }

    /// Domains remembered from the last pass.
    pub fn tracked(&self) -> usize {
        self.previous.len()
    }

    pub fn clear(&mut self) {
        self.previous.clear();
    }

    /// One report per domain in `counters`, read at `at` (a monotonic
    /// clock, so wall-clock steps do not distort rates). Domains missing
    /// from this pass (stopped, undefined, migrated away) are forgotten,
    /// so a later return starts afresh.
    pub fn sample(&mut self, at: Instant, counters: &[DomainCounters]) -> Vec<pb::InstanceStats> {
        let mut next = HashMap::with_capacity(counters.len());
        let out = counters
            .iter()
            .map(|c| {
                let previous = self.previous.get(&c.name);
                let cpu_percent = match (previous, c.cpu_time_ns) {
                    (Some(p), Some(now)) if p.run_id == c.run_id => {
                        cpu_percent(p.cpu_time_ns, p.at, now, at, c.vcpus.unwrap_or(0))
                    }
                    _ => -1.0,
                };
                if let Some(cpu_time_ns) = c.cpu_time_ns {
                    next.insert(
                        c.name.clone(),
                        Previous {
                            run_id: c.run_id,
                            cpu_time_ns,
                            at,
                        },
                    );
                }
                report(c, cpu_percent)
            })
            .collect();
        self.previous = next;
        out
    }
}

/// The share (0-100) of `vcpus` CPUs that `before` -> `now` CPU time used
/// over the wall-clock time between the samples; -1 when it cannot be
/// told (no time passed, no vCPUs, the counter went backwards because the
/// domain restarted). Time spent by QEMU's own threads counts too, which
/// can push a busy guest past its vCPUs: that is reported as 100.
pub fn cpu_percent(
    before_ns: u64,
    before_at: Instant,
    now_ns: u64,
    now_at: Instant,
    vcpus: u32,
) -> f64 {
    let wall = now_at.saturating_duration_since(before_at).as_nanos() as f64;
    if now_ns < before_ns || wall <= 0.0 || vcpus == 0 {
        return -1.0;
    }
    let used = (now_ns - before_ns) as f64;
    let percent = used / (wall * f64::from(vcpus)) * 100.0;
    if percent.is_finite() {
        percent.clamp(0.0, 100.0)
    } else {
        -1.0
    }
}

fn report(c: &DomainCounters, cpu_percent: f64) -> pb::InstanceStats {
    pb::InstanceStats {
        name: c.name.clone(),
        instance_uuid: c.instance_uuid.clone().unwrap_or_default(),
        cpu_time_ns: c.cpu_time_ns.unwrap_or(0),
        vcpus: c.vcpus.unwrap_or(0),
        cpu_percent,
        memory_actual_kib: c.memory.current_kib,
        memory_unused_kib: c.memory.unused_kib,
        memory_rss_kib: c.memory.rss_kib,
        // libvirt's bulk statistics carry no balloon target besides the
        // domain's defined memory, which the balloon aims at unless the
        // guest has been asked to shrink.
        memory_target_kib: c.memory.maximum_kib,
        nics: c
            .nics
            .iter()
            .map(|n| pb::NicStats {
                mac: n.mac.clone().unwrap_or_default(),
                rx_bytes: n.rx_bytes,
                tx_bytes: n.tx_bytes,
                rx_packets: n.rx_packets,
                tx_packets: n.tx_packets,
            })
            .collect(),
        disks: c
            .disks
            .iter()
            // An empty drive holds nothing to attribute figures to.
            .filter_map(|d| {
                let path = d.path.as_deref()?;
                Some(pb::DiskStats {
                    path: path.to_string(),
                    volume_uuid: crate::storage::volume_uuid_of(std::path::Path::new(path))
                        .unwrap_or_default(),
                    read_bytes: d.read_bytes,
                    write_bytes: d.write_bytes,
                    read_ops: d.read_ops,
                    write_ops: d.write_ops,
                    allocation_bytes: d.allocation_bytes,
                    capacity_bytes: d.capacity_bytes,
                })
            })
            .collect(),
    }
}

/// One sampling pass: reads the counters and turns them into a report.
pub async fn collect(
    hv: &dyn Hypervisor,
    sampler: &mut Sampler,
    settings: &StatsSettings,
    with_disks: bool,
) -> Result<pb::StatsReport, StatsError> {
    let mut counters = hv.domain_counters(with_disks).await?;
    // Read after the counters arrive: the hypervisor call can take a while
    // on a busy host, and the rate must span the samples themselves.
    let at = tokio::time::Instant::now().into_std();
    if settings.user_vm_only {
        counters.retain(|c| c.instance_uuid.is_some());
    }
    if !with_disks {
        for c in &mut counters {
            c.disks.clear();
        }
    }
    Ok(pb::StatsReport {
        unix_ms: chrono::Utc::now().timestamp_millis(),
        instances: sampler.sample(at, &counters),
        with_disks,
    })
}

/// Samples whenever `settings` say so and sends each report on `out`,
/// until either channel closes. Starts idle: with no settings, or a VM
/// interval of 0, nothing is read from the hypervisor.
pub async fn run(
    hv: Arc<dyn Hypervisor>,
    mut settings: watch::Receiver<StatsSettings>,
    out: mpsc::Sender<pb::AgentMessage>,
) {
    let mut sampler = Sampler::new();
    loop {
        let current = *settings.borrow_and_update();
        let Some(every) = current.vm_interval else {
            // Stale baselines would turn the pause into one long average.
            sampler.clear();
            if settings.changed().await.is_err() {
                return;
            }
            continue;
        };
        tracing::info!(
            vm_interval_ms = every.as_millis() as u64,
            disk_interval_ms = current.disk_interval.map_or(0, |d| d.as_millis() as u64),
            user_vm_only = current.user_vm_only,
            "sampling instance statistics"
        );
        let mut ticker = tokio::time::interval(every);
        // A pass that overran its interval (a slow hypervisor) is followed
        // by the next on the grid, not by a burst of catch-up passes.
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut pass = 0u64;
        loop {
            tokio::select! {
                changed = settings.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    break;
                }
                _ = ticker.tick() => {
                    let with_disks = current.disks_due(pass);
                    pass += 1;
                    match collect(hv.as_ref(), &mut sampler, &current, with_disks).await {
                        Ok(report) => {
                            let msg = pb::AgentMessage {
                                body: Some(pb::agent_message::Body::Stats(report)),
                            };
                            match out.try_send(msg) {
                                Ok(()) => {}
                                Err(mpsc::error::TrySendError::Full(_)) => {
                                    tracing::debug!("link busy, statistics report dropped");
                                }
                                Err(mpsc::error::TrySendError::Closed(_)) => return,
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "statistics pass failed"),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::fake::FakeHypervisor;
    use crate::hypervisor::{DiskCounters, MemoryCounters, NicCounters};

    const SEC: u64 = 1_000_000_000;

    fn counters(name: &str, run_id: u32, cpu_time_ns: u64, vcpus: u32) -> DomainCounters {
        DomainCounters {
            name: name.into(),
            instance_uuid: Some(format!("uuid-{name}")),
            run_id: Some(run_id),
            cpu_time_ns: Some(cpu_time_ns),
            vcpus: Some(vcpus),
            ..DomainCounters::default()
        }
    }

    fn percents(reports: &[pb::InstanceStats]) -> Vec<(String, f64)> {
        reports
            .iter()
            .map(|r| (r.name.clone(), r.cpu_percent))
            .collect()
    }

    #[test]
    fn cpu_percent_from_deltas() {
        let t0 = Instant::now();
        let t10 = t0 + Duration::from_secs(10);
        // 5 s of CPU over 10 s on one vCPU.
        assert_eq!(cpu_percent(0, t0, 5 * SEC, t10, 1), 50.0);
        // The same on two vCPUs.
        assert_eq!(cpu_percent(0, t0, 5 * SEC, t10, 2), 25.0);
        assert_eq!(cpu_percent(7, t0, 7, t10, 4), 0.0);
        // QEMU's threads on top of fully busy vCPUs.
        assert_eq!(cpu_percent(0, t0, 11 * SEC, t10, 1), 100.0);
        // Nothing to divide by, or a counter that went backwards.
        assert_eq!(cpu_percent(0, t0, 5, t0, 1), -1.0);
        assert_eq!(cpu_percent(0, t10, 5, t0, 1), -1.0);
        assert_eq!(cpu_percent(0, t0, 5, t10, 0), -1.0);
        assert_eq!(cpu_percent(9 * SEC, t0, SEC, t10, 1), -1.0);
    }

    #[test]
    fn first_sample_has_no_rate_then_rates_follow() {
        let mut s = Sampler::new();
        let t0 = Instant::now();
        let first = s.sample(t0, &[counters("a", 1, 100 * SEC, 2)]);
        assert_eq!(percents(&first), [("a".to_string(), -1.0)]);
        assert_eq!(first[0].cpu_time_ns, 100 * SEC);
        assert_eq!(first[0].vcpus, 2);
        assert_eq!(first[0].instance_uuid, "uuid-a");

        let t1 = t0 + Duration::from_secs(60);
        let second = s.sample(
            t1,
            &[counters("a", 1, 130 * SEC, 2), counters("b", 5, SEC, 1)],
        );
        assert_eq!(
            percents(&second),
            [("a".to_string(), 25.0), ("b".to_string(), -1.0)]
        );
        assert_eq!(s.tracked(), 2);
    }

    #[test]
    fn restarts_and_resets_start_afresh() {
        let mut s = Sampler::new();
        let t0 = Instant::now();
        let t = |secs| t0 + Duration::from_secs(secs);
        s.sample(t(0), &[counters("a", 1, 50 * SEC, 1)]);
        // Counter went backwards (same run id: a driver that keeps ids).
        let r = s.sample(t(10), &[counters("a", 1, 2 * SEC, 1)]);
        assert_eq!(r[0].cpu_percent, -1.0);
        // The new baseline is used from then on.
        let r = s.sample(t(20), &[counters("a", 1, 7 * SEC, 1)]);
        assert_eq!(r[0].cpu_percent, 50.0);
        // Restarted between passes and already past the old counter: the
        // run id tells.
        let r = s.sample(t(30), &[counters("a", 2, 9 * SEC, 1)]);
        assert_eq!(r[0].cpu_percent, -1.0);
        let r = s.sample(t(40), &[counters("a", 2, 10 * SEC, 1)]);
        assert_eq!(r[0].cpu_percent, 10.0);
    }

    #[test]
    fn vanished_domains_are_forgotten() {
        let mut s = Sampler::new();
        let t0 = Instant::now();
        s.sample(t0, &[counters("a", 1, SEC, 1), counters("b", 2, SEC, 1)]);
        s.sample(
            t0 + Duration::from_secs(10),
            &[counters("a", 1, 2 * SEC, 1)],
        );
        assert_eq!(s.tracked(), 1);
        // b is back (migrated back, restarted): no stale baseline.
        let r = s.sample(
            t0 + Duration::from_secs(20),
            &[counters("b", 2, 3 * SEC, 1)],
        );
        assert_eq!(r[0].cpu_percent, -1.0);
    }

    #[test]
    fn domains_without_cpu_time_have_no_rate() {
        let mut s = Sampler::new();
        let t0 = Instant::now();
        let mut c = counters("a", 1, 0, 1);
        c.cpu_time_ns = None;
        s.sample(t0, std::slice::from_ref(&c));
        let r = s.sample(t0 + Duration::from_secs(5), &[c]);
        assert_eq!(r[0].cpu_percent, -1.0);
        assert_eq!(r[0].cpu_time_ns, 0);
    }

    #[test]
    fn reports_carry_memory_nics_and_disks() {
        let uuid = "0c5f7d1e-aaaa-bbbb-cccc-000000000001";
        let mut c = counters("a", 1, SEC, 1);
        c.memory = MemoryCounters {
            current_kib: 1024,
            maximum_kib: 2048,
            unused_kib: 512,
            rss_kib: 900,
        };
        c.nics = vec![
            NicCounters {
                device: "vnet0".into(),
                mac: Some("52:54:00:00:00:01".into()),
                rx_bytes: 1,
                tx_bytes: 2,
                rx_packets: 3,
                tx_packets: 4,
            },
            NicCounters {
                device: "vnet1".into(),
                ..NicCounters::default()
            },
        ];
        c.disks = vec![
            DiskCounters {
                target: "vda".into(),
                path: Some(format!("/var/lib/orrery/primary/{uuid}.qcow2")),
                read_bytes: 10,
                write_bytes: 20,
                read_ops: 1,
                write_ops: 2,
                allocation_bytes: 100,
                capacity_bytes: 200,
            },
            DiskCounters {
                target: "hdc".into(),
                path: None,
                ..DiskCounters::default()
            },
            DiskCounters {
                target: "hdd".into(),
                path: Some("/isos/tools.iso".into()),
                ..DiskCounters::default()
            },
        ];
        let r = Sampler::new().sample(Instant::now(), &[c]).remove(0);
        assert_eq!(
            (
                r.memory_actual_kib,
                r.memory_target_kib,
                r.memory_unused_kib,
                r.memory_rss_kib
            ),
            (1024, 2048, 512, 900)
        );
        assert_eq!(
            r.nics,
            vec![
                pb::NicStats {
                    mac: "52:54:00:00:00:01".into(),
                    rx_bytes: 1,
                    tx_bytes: 2,
                    rx_packets: 3,
                    tx_packets: 4,
                },
                pb::NicStats::default(),
            ]
        );
        assert_eq!(
            r.disks,
            vec![
                pb::DiskStats {
                    path: format!("/var/lib/orrery/primary/{uuid}.qcow2"),
                    volume_uuid: uuid.into(),
                    read_bytes: 10,
                    write_bytes: 20,
                    read_ops: 1,
                    write_ops: 2,
                    allocation_bytes: 100,
                    capacity_bytes: 200,
                },
                pb::DiskStats {
                    path: "/isos/tools.iso".into(),
                    ..pb::DiskStats::default()
                },
            ]
        );
    }

    #[test]
    fn settings_from_the_coordinator() {
        let s = StatsSettings::from(&pb::StatsConfig {
            vm_interval_ms: 60_000,
            disk_interval_ms: 0,
            user_vm_only: true,
        });
        assert_eq!(s.vm_interval, Some(Duration::from_secs(60)));
        assert_eq!(s.disk_interval, None);
        assert!(s.user_vm_only);
        assert!(!s.disks_due(0));

        let off = StatsSettings::from(&pb::StatsConfig::default());
        assert_eq!(off, StatsSettings::default());
        assert!(!off.disks_due(0));

        let tiny = StatsSettings::from(&pb::StatsConfig {
            vm_interval_ms: 10,
            ..Default::default()
        });
        assert_eq!(tiny.vm_interval, Some(MIN_INTERVAL));
    }

    #[test]
    fn disks_every_nth_pass_never_more_often_than_asked() {
        let s = |vm: u64, disk: u64| StatsSettings {
            vm_interval: Some(Duration::from_secs(vm)),
            disk_interval: Some(Duration::from_secs(disk)),
            user_vm_only: false,
        };
        let due = |s: StatsSettings| (0..7).filter(|&p| s.disks_due(p)).collect::<Vec<_>>();
        assert_eq!(due(s(60, 60)), [0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(due(s(60, 30)), [0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(due(s(60, 120)), [0, 2, 4, 6]);
        assert_eq!(due(s(60, 150)), [0, 3, 6]);
    }

    /// A fake host with two running domains: an instance and a domain
    /// Orrery did not create.
    async fn host() -> Arc<FakeHypervisor> {
        let hv = Arc::new(FakeHypervisor::new());
        for (name, meta) in [
            ("i-2-1-VM", "<metadata><orrery:instance xmlns:orrery='https://orrery.dev/xmlns/domain/1'><orrery:uuid>6a1c3f0e-3b1d-4a51-9a4e-2f8f0b6c7d10</orrery:uuid><orrery:name>web</orrery:name></orrery:instance></metadata>"),
            ("foreign", ""),
        ] {
            let xml = format!(
                "<domain type='kvm'><name>{name}</name>{meta}<memory>1024</memory><vcpu>1</vcpu>\
                 <os><type>hvm</type></os><devices/></domain>"
            );
            hv.define(&xml).await.unwrap();
            hv.start(name).await.unwrap();
        }
        hv.set_counters(
            "i-2-1-VM",
            DomainCounters {
                cpu_time_ns: Some(SEC),
                vcpus: Some(1),
                disks: vec![DiskCounters {
                    target: "vda".into(),
                    path: Some("/p/0c5f7d1e-aaaa-bbbb-cccc-000000000001.qcow2".into()),
                    read_bytes: 4096,
                    ..DiskCounters::default()
                }],
                ..DomainCounters::default()
            },
        );
        hv
    }

    #[tokio::test]
    async fn collect_filters_and_leaves_disks_out_unless_due() {
        let hv = host().await;
        let mut sampler = Sampler::new();
        let all = StatsSettings {
            vm_interval: Some(Duration::from_secs(10)),
            ..StatsSettings::default()
        };
        let r = collect(hv.as_ref(), &mut sampler, &all, false)
            .await
            .unwrap();
        let names: Vec<_> = r.instances.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["foreign", "i-2-1-VM"]);
        assert!(!r.with_disks);
        assert!(r.instances.iter().all(|i| i.disks.is_empty()));
        assert!(r.unix_ms > 0);

        let users = StatsSettings {
            user_vm_only: true,
            ..all
        };
        let r = collect(hv.as_ref(), &mut sampler, &users, true)
            .await
            .unwrap();
        assert!(r.with_disks);
        assert_eq!(r.instances.len(), 1);
        let i = &r.instances[0];
        assert_eq!(i.instance_uuid, "6a1c3f0e-3b1d-4a51-9a4e-2f8f0b6c7d10");
        assert_eq!(i.disks.len(), 1);
        assert_eq!(
            i.disks[0].volume_uuid,
            "0c5f7d1e-aaaa-bbbb-cccc-000000000001"
        );
        assert_eq!(i.disks[0].read_bytes, 4096);

        hv.fail_next(
            "domain_counters",
            HvError::backend(crate::hypervisor::codes::OPERATION_FAILED, "boom"),
        );
        assert!(matches!(
            collect(hv.as_ref(), &mut sampler, &all, false).await,
            Err(StatsError::Hypervisor(_))
        ));
    }

    async fn next_report(
        rx: &mut mpsc::Receiver<pb::AgentMessage>,
    ) -> (tokio::time::Instant, pb::StatsReport) {
        match rx.recv().await.expect("a report").body {
            Some(pb::agent_message::Body::Stats(r)) => (tokio::time::Instant::now(), r),
            other => panic!("not a statistics report: {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_task_follows_the_settings() {
        let hv = host().await;
        let (settings_tx, settings_rx) = watch::channel(StatsSettings::default());
        let (tx, mut rx) = mpsc::channel(16);
        let task = tokio::spawn(run(hv.clone(), settings_rx, tx));

        // No settings: nothing is read, nothing sent.
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert!(rx.try_recv().is_err());
        assert!(!hv.calls().iter().any(|c| c == "domain_counters"));

        let t0 = tokio::time::Instant::now();
        settings_tx.send_replace(StatsSettings {
            vm_interval: Some(Duration::from_secs(10)),
            disk_interval: Some(Duration::from_secs(20)),
            user_vm_only: false,
        });
        let (at, r) = next_report(&mut rx).await;
        assert_eq!(at, t0);
        assert!(r.with_disks);
        assert!(r.instances.iter().all(|i| i.cpu_percent == -1.0));

        // 5 s of CPU in the next 10 s on one vCPU.
        hv.set_counters(
            "i-2-1-VM",
            DomainCounters {
                cpu_time_ns: Some(6 * SEC),
                vcpus: Some(1),
                ..DomainCounters::default()
            },
        );
        let (at, r) = next_report(&mut rx).await;
        assert_eq!(at - t0, Duration::from_secs(10));
        assert!(!r.with_disks);
        let ours = r.instances.iter().find(|i| i.name == "i-2-1-VM").unwrap();
        assert_eq!(ours.cpu_percent, 50.0);
        let (at, r) = next_report(&mut rx).await;
        assert_eq!(at - t0, Duration::from_secs(20));
        assert!(r.with_disks);

        // New settings: a pass at once, then the new cadence; the
        // baselines are kept.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let t1 = tokio::time::Instant::now();
        settings_tx.send_replace(StatsSettings {
            vm_interval: Some(Duration::from_secs(2)),
            disk_interval: None,
            user_vm_only: true,
        });
        let (at, r) = next_report(&mut rx).await;
        assert_eq!(at, t1);
        assert_eq!(r.instances.len(), 1);
        assert_eq!(r.instances[0].cpu_percent, 0.0);
        for k in 1..=3 {
            let (at, r) = next_report(&mut rx).await;
            assert_eq!(at - t1, Duration::from_secs(2 * k));
            assert!(!r.with_disks);
        }

        // Off again: silence.
        settings_tx.send_replace(StatsSettings::default());
        tokio::time::sleep(Duration::from_secs(60)).await;
        while let Ok(m) = rx.try_recv() {
            // At most a pass that was already under way.
            assert!(matches!(m.body, Some(pb::agent_message::Body::Stats(_))));
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(rx.try_recv().is_err());

        // The task ends with the settings' sender (the session).
        drop(settings_tx);
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_link_drops_reports_instead_of_waiting() {
        let hv = host().await;
        let (settings_tx, settings_rx) = watch::channel(StatsSettings {
            vm_interval: Some(Duration::from_secs(1)),
            ..StatsSettings::default()
        });
        let (tx, mut rx) = mpsc::channel(1);
        let task = tokio::spawn(run(hv.clone(), settings_rx, tx));
        tokio::time::sleep(Duration::from_millis(5500)).await;
        // Six passes ran; only the first fitted.
        let passes = hv
            .calls()
            .iter()
            .filter(|c| *c == "domain_counters")
            .count();
        assert_eq!(passes, 6);
        assert!(rx.try_recv().is_ok());
        assert!(rx.try_recv().is_err());
        // A closed link ends the task.
        drop(rx);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(task.is_finished());
        drop(settings_tx);
    }
}
