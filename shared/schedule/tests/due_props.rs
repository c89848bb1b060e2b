//! Model test: the due-index pops exactly what a plain map of key -> due time says
//! is due, in (time, key) order, whatever mix of upserts and removals came before.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use orrery_schedule::due::{DueIndex, DueKey};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Upsert(DueKey, i64),
    Remove(DueKey),
    Pop(i64),
}

fn key() -> impl Strategy<Value = DueKey> {
    prop_oneof![
        (0u64..40).prop_map(DueKey::Schedule),
        (0u64..40).prop_map(DueKey::Lease)
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (key(), 0i64..500).prop_map(|(k, t)| Op::Upsert(k, t)),
        2 => key().prop_map(Op::Remove),
        2 => (0i64..500).prop_map(Op::Pop),
    ]
}

fn at(minutes: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + TimeDelta::minutes(minutes)
}

proptest! {
    #[test]
    fn matches_a_plain_map(ops in proptest::collection::vec(op(), 1..400)) {
        let mut index = DueIndex::new();
        let mut model: BTreeMap<DueKey, DateTime<Utc>> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Upsert(k, t) => {
                    index.upsert(k, at(t));
                    model.insert(k, at(t));
                }
                Op::Remove(k) => {
                    prop_assert_eq!(index.remove(k), model.remove(&k));
                }
                Op::Pop(t) => {
                    let now = at(t);
                    let mut expected: Vec<(DateTime<Utc>, DueKey)> = model
                        .iter()
                        .filter(|(_, &due)| due <= now)
                        .map(|(&k, &due)| (due, k))
                        .collect();
                    expected.sort();
                    for (_, k) in &expected {
                        model.remove(k);
                    }
                    let got: Vec<(DateTime<Utc>, DueKey)> =
                        index.pop_due(now).into_iter().map(|d| (d.at, d.key)).collect();
                    prop_assert_eq!(got, expected);
                }
            }
            prop_assert_eq!(index.len(), model.len());
        }
        let next = model.iter().map(|(&k, &due)| (due, k)).min();
        prop_assert_eq!(index.peek().map(|d| (d.at, d.key)), next);
    }
}
