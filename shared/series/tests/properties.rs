//! Property tests: anything pushed comes back unchanged, ranges select exactly the
//! rows they should, and damaged input is an error, never a panic.

use orrery_series::{
    decode, decode_range, decode_samples, encode_samples, rates, read_header, BlockBuilder,
    IoCounters, MemoryStats, NetCounters, VmSample,
};
use proptest::prelude::*;

/// A column shaped like real statistics: constant, slowly changing, a noisy counter,
/// a random walk, or arbitrary 64-bit values.
fn column(rows: usize) -> impl Strategy<Value = Vec<i64>> {
    prop_oneof![
        any::<i64>().prop_map(move |v| vec![v; rows]),
        (
            any::<i64>(),
            prop::collection::vec(prop_oneof![9 => Just(0i64), 1 => -5000i64..5000], rows)
        )
            .prop_map(|(start, steps)| running_sum(start, &steps)),
        (0i64..1 << 40, prop::collection::vec(0i64..1 << 20, rows))
            .prop_map(|(start, steps)| running_sum(start, &steps)),
        (any::<i64>(), prop::collection::vec(-100i64..100, rows))
            .prop_map(|(start, steps)| running_sum(start, &steps)),
        prop::collection::vec(any::<i64>(), rows),
    ]
}

fn running_sum(start: i64, steps: &[i64]) -> Vec<i64> {
    let mut v = start;
    steps
        .iter()
        .map(|s| {
            v = v.wrapping_add(*s);
            v
        })
        .collect()
}

/// Strictly increasing timestamps: regular with jitter, with gaps, or arbitrary.
fn timestamps(rows: usize) -> impl Strategy<Value = Vec<i64>> {
    let gaps = prop_oneof![
        prop::collection::vec(59_995i64..60_005, rows),
        prop::collection::vec(
            prop_oneof![20 => 59_990i64..60_010, 1 => 60_000i64..10_000_000],
            rows
        ),
        prop::collection::vec(1i64..1 << 40, rows),
    ];
    (-(1i64 << 50)..(1i64 << 50), gaps).prop_map(|(start, gaps)| {
        let mut ts = start;
        gaps.iter()
            .map(|g| {
                ts += g;
                ts
            })
            .collect()
    })
}

/// `(timestamps, columns)` for a block of up to 300 rows and 8 columns.
fn table() -> impl Strategy<Value = (Vec<i64>, Vec<Vec<i64>>)> {
    (0usize..300, 0usize..8)
        .prop_flat_map(|(rows, cols)| (timestamps(rows), prop::collection::vec(column(rows), cols)))
}

fn encode((ts, cols): &(Vec<i64>, Vec<Vec<i64>>)) -> Vec<u8> {
    let mut b = BlockBuilder::new(cols.len()).unwrap();
    for (i, &t) in ts.iter().enumerate() {
        let row: Vec<i64> = cols.iter().map(|c| c[i]).collect();
        b.push(t, &row).unwrap();
    }
    b.finish()
}

proptest! {
    #[test]
    fn round_trip(t in table()) {
        let bytes = encode(&t);
        let (ts, cols) = &t;
        let header = read_header(&bytes).unwrap();
        prop_assert_eq!(header.rows, ts.len());
        prop_assert_eq!(header.columns, cols.len());
        prop_assert_eq!(header.time_range, ts.first().map(|&f| (f, *ts.last().unwrap())));
        let block = decode(&bytes).unwrap();
        prop_assert_eq!(block.timestamps(), &ts[..]);
        for (c, expected) in cols.iter().enumerate() {
            prop_assert_eq!(&block.column(c).collect::<Vec<_>>(), expected);
        }
    }

    #[test]
    fn range_selects_exactly(t in table(), a in any::<prop::sample::Index>(), b in any::<prop::sample::Index>(), shift in -2i64..3) {
        let bytes = encode(&t);
        let (ts, _) = &t;
        let full = decode(&bytes).unwrap();
        let (from, to) = if ts.is_empty() {
            (0, 1)
        } else {
            (ts[a.index(ts.len())] + shift, ts[b.index(ts.len())] - shift)
        };
        let part = decode_range(&bytes, from, to).unwrap();
        let expected: Vec<_> = full.iter().filter(|r| r.ts >= from && r.ts < to).collect();
        prop_assert_eq!(part.iter().collect::<Vec<_>>(), expected);
        prop_assert_eq!(part.columns(), full.columns());
    }

    #[test]
    fn truncation_is_an_error(t in table(), cut in any::<prop::sample::Index>()) {
        let bytes = encode(&t);
        let len = cut.index(bytes.len());
        prop_assert!(decode(&bytes[..len]).is_err());
    }

    #[test]
    fn damaged_blocks_never_panic(t in table(), flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4)) {
        let mut bytes = encode(&t);
        for (at, mask) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= mask;
        }
        // Either outcome is fine; what matters is no panic and a sane result.
        if let Ok(block) = decode(&bytes) {
            prop_assert!(block.timestamps().windows(2).all(|w| w[0] < w[1]));
        }
        let _ = decode_range(&bytes, i64::MIN, i64::MAX);
    }

    #[test]
    fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode(&bytes);
        let _ = read_header(&bytes);
        let mut versioned = bytes.clone();
        versioned.insert(0, 1);
        let _ = decode(&versioned);
        let _ = decode_samples::<VmSample>(&versioned);
    }

    #[test]
    fn vm_samples_round_trip(raw in prop::collection::vec((1i64..100_000, any::<u32>(), any::<u32>(), any::<[u64; 12]>()), 0..100)) {
        let mut ts = 1_700_000_000_000i64;
        let samples: Vec<VmSample> = raw
            .into_iter()
            .map(|(gap, cpu, vcpus, v)| {
                ts += gap;
                VmSample {
                    ts,
                    cpu_hundredths: cpu,
                    vcpus,
                    memory: MemoryStats { actual_kib: v[0], unused_kib: v[1], rss_kib: v[2], target_kib: v[3] },
                    network: NetCounters { rx_bytes: v[4], tx_bytes: v[5], rx_packets: v[6], tx_packets: v[7] },
                    disk: IoCounters { read_bytes: v[8], write_bytes: v[9], read_ops: v[10], write_ops: v[11] },
                }
            })
            .collect();
        let bytes = encode_samples(&samples).unwrap();
        prop_assert_eq!(decode_samples::<VmSample>(&bytes).unwrap(), samples);
    }

    #[test]
    fn counter_deltas_are_never_negative_or_absurd(points in prop::collection::vec((any::<i64>(), any::<u64>()), 0..50)) {
        for pair in points.windows(2) {
            for d in rates::counter_deltas(pair) {
                prop_assert!(d.end_ts > d.start_ts);
                prop_assert!(d.per_second.is_finite() && d.per_second >= 0.0);
                // Never more than the counter itself shows after the interval.
                prop_assert!(d.increase <= pair[1].1);
                prop_assert_eq!(d.reset, pair[1].1 < pair[0].1);
            }
        }
    }

    #[test]
    fn cpu_percent_is_bounded(a in any::<u64>(), b in any::<u64>(), ms in any::<i64>(), vcpus in any::<u32>()) {
        if let Some(p) = rates::cpu_percent(a, b, ms, vcpus) {
            prop_assert!((0.0..=100.0).contains(&p));
        }
    }
}
