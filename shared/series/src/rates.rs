//! Turning cumulative counters into per-interval figures.
//!
//! Hypervisors report traffic and CPU time as counters that only grow while an
//! instance runs, but restart from zero when it is restarted or migrated (a new QEMU
//! process, or another host). A naive `current - previous` then goes hugely negative, or
//! wraps to an absurd positive value in unsigned arithmetic. Here a counter that goes
//! backwards is taken to have restarted from zero, so the interval's increase is the
//! value read after the reset: never negative, and at most what the new process counted.

/// Increase of a cumulative counter between two readings. A lower `current` means the
/// counter was reset in between, so everything it counted since (`current`) is the
/// best estimate of the interval's increase.
pub fn counter_increase(previous: u64, current: u64) -> u64 {
    current.checked_sub(previous).unwrap_or(current)
}

/// Per-second rate of `increase` over `elapsed_ms`; `None` when no time has passed.
pub fn per_second(increase: u64, elapsed_ms: i64) -> Option<f64> {
    (elapsed_ms > 0).then(|| increase as f64 * 1000.0 / elapsed_ms as f64)
}

/// One interval between two consecutive counter readings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CounterDelta {
    pub start_ts: i64,
    pub end_ts: i64,
    /// Increase over the interval (see [`counter_increase`]).
    pub increase: u64,
    /// Whether the counter went backwards, i.e. was reset during the interval.
    pub reset: bool,
    /// `increase` per second.
    pub per_second: f64,
}

/// Deltas between consecutive `(ts_ms, counter)` readings. Pairs whose timestamps do
/// not increase are skipped (they have no rate), so every result has a positive
/// interval and a finite, non-negative rate.
pub fn counter_deltas(points: &[(i64, u64)]) -> Vec<CounterDelta> {
    points
        .windows(2)
        .filter_map(|w| {
            let ((start_ts, previous), (end_ts, current)) = (w[0], w[1]);
            let increase = counter_increase(previous, current);
            let per_second = per_second(increase, end_ts.checked_sub(start_ts)?)?;
            Some(CounterDelta {
                start_ts,
                end_ts,
                increase,
                reset: current < previous,
                per_second,
            })
        })
        .collect()
}

/// CPU use in percent of the instance's capacity over an interval: CPU time consumed
/// (nanoseconds, cumulative over all vCPUs) divided by wall time times `vcpus`.
///
/// Clamped to `[0, 100]` because scheduling and sampling jitter can make the measured
/// CPU time exceed the wall interval slightly. `None` when the interval is empty or
/// the instance has no vCPUs, where no meaningful figure exists.
pub fn cpu_percent(
    previous_cpu_ns: u64,
    current_cpu_ns: u64,
    elapsed_ms: i64,
    vcpus: u32,
) -> Option<f64> {
    if elapsed_ms <= 0 || vcpus == 0 {
        return None;
    }
    let used_ns = counter_increase(previous_cpu_ns, current_cpu_ns) as f64;
    let capacity_ns = elapsed_ms as f64 * 1e6 * f64::from(vcpus);
    Some((used_ns / capacity_ns * 100.0).clamp(0.0, 100.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increase_normal_and_reset() {
        assert_eq!(counter_increase(100, 250), 150);
        assert_eq!(counter_increase(100, 100), 0);
        // Restart: the counter begins again from zero and has counted 40 since.
        assert_eq!(counter_increase(1_000_000, 40), 40);
        assert_eq!(counter_increase(u64::MAX, 0), 0);
    }

    #[test]
    fn deltas_over_a_reset() {
        let points = [
            (0, 1_000),
            (60_000, 7_000),
            (120_000, 500), // restarted
            (180_000, 3_500),
        ];
        let d = counter_deltas(&points);
        assert_eq!(d.len(), 3);
        assert_eq!((d[0].increase, d[0].reset), (6_000, false));
        assert_eq!(d[0].per_second, 100.0);
        assert_eq!((d[1].increase, d[1].reset), (500, true));
        assert_eq!((d[2].increase, d[2].reset), (3_000, false));
        assert_eq!((d[2].start_ts, d[2].end_ts), (120_000, 180_000));
        assert!(d
            .iter()
            .all(|x| x.per_second >= 0.0 && x.per_second.is_finite()));
    }

    #[test]
    fn deltas_skip_intervals_without_time() {
        let points = [
            (0, 1),
            (0, 2),
            (-5, 3),
            (1_000, 4),
            (i64::MIN, 0),
            (i64::MAX, 9),
        ];
        let d = counter_deltas(&points);
        // Only (-5 -> 1000) has a positive length that fits i64; (MIN -> MAX) overflows.
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].start_ts, d[0].end_ts, d[0].increase), (-5, 1_000, 1));
        assert!(counter_deltas(&[]).is_empty());
        assert!(counter_deltas(&[(1, 1)]).is_empty());
    }

    #[test]
    fn per_second_needs_time() {
        assert_eq!(per_second(10, 0), None);
        assert_eq!(per_second(10, -1), None);
        assert_eq!(per_second(10, 500), Some(20.0));
    }

    #[test]
    fn cpu_percent_from_cpu_time() {
        // 2 vCPUs for 60 s = 120 s of capacity; 30 s used = 25 %.
        assert_eq!(cpu_percent(0, 30_000_000_000, 60_000, 2), Some(25.0));
        // Jitter beyond capacity is clamped.
        assert_eq!(cpu_percent(0, 130_000_000_000, 60_000, 2), Some(100.0));
        // After a restart only the new process's CPU time counts.
        assert_eq!(
            cpu_percent(500_000_000_000, 6_000_000_000, 60_000, 1),
            Some(10.0)
        );
        assert_eq!(cpu_percent(5, 5, 60_000, 1), Some(0.0));
        assert_eq!(cpu_percent(0, 1, 0, 1), None);
        assert_eq!(cpu_percent(0, 1, 60_000, 0), None);
    }
}
