//! Strategies shared by the property tests.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use databus_core::{Key, SourceId};
use databus_filters::{FilterSpec, IdRange, ModSpec, PartitionSpec, RangeSpec};
use proptest::prelude::*;

/// Up to four id ranges inside `0..limit`.
pub fn id_ranges(limit: u64) -> impl Strategy<Value = Vec<IdRange>> {
    prop::collection::vec((0..limit, 0..limit.min(8)), 1..5).prop_map(move |items| {
        items
            .into_iter()
            .map(|(first, len)| IdRange::new(first, (first + len).min(limit - 1)))
            .collect()
    })
}

pub fn mod_spec() -> impl Strategy<Value = PartitionSpec> {
    prop_oneof![1u32..=16, 1u32..=MAX_BIG_BUCKETS].prop_flat_map(|n| {
        id_ranges(u64::from(n))
            .prop_map(move |buckets| PartitionSpec::Mod(ModSpec::new(n, buckets).unwrap()))
    })
}

const MAX_BIG_BUCKETS: u32 = 1_000_000;

pub fn range_spec() -> impl Strategy<Value = PartitionSpec> {
    (1u64..=100, 1u64..=60).prop_flat_map(|(size, max_id)| {
        id_ranges(max_id)
            .prop_map(move |ids| PartitionSpec::Range(RangeSpec::new(size, ids).unwrap()))
    })
}

pub fn partition_spec() -> impl Strategy<Value = PartitionSpec> {
    prop_oneof![1 => Just(PartitionSpec::All), 3 => mod_spec(), 3 => range_spec()]
}

/// A key filter: 1 to 3 specs, `all` only alone.
pub fn key_filter() -> impl Strategy<Value = Vec<PartitionSpec>> {
    prop::collection::vec(partition_spec(), 1..4).prop_map(|mut parts| {
        if parts.len() > 1 {
            parts.retain(|p| *p != PartitionSpec::All);
            if parts.is_empty() {
                parts.push(PartitionSpec::All);
            }
        }
        parts
    })
}

/// Valid specs over sources 0..12.
pub fn filter_spec() -> impl Strategy<Value = FilterSpec> {
    (
        prop::option::of(prop::collection::btree_set(0u16..12, 1..6)),
        prop_oneof![Just(Vec::new()), key_filter()],
        prop::collection::btree_map(0u16..12, key_filter(), 0..3),
    )
        .prop_map(|(sources, partition, per_source)| {
            let per_source: BTreeMap<SourceId, Vec<PartitionSpec>> = per_source
                .into_iter()
                .map(|(s, parts)| (SourceId::new(s), parts))
                .collect();
            let sources = sources.map(|s| {
                let mut set: BTreeSet<SourceId> = s.into_iter().map(SourceId::new).collect();
                set.extend(per_source.keys().copied());
                set
            });
            FilterSpec::new(sources, partition, per_source).unwrap()
        })
}

/// Keys of every kind, integers concentrated where the generated ranges are.
pub fn key() -> impl Strategy<Value = Key> {
    prop_oneof![
        4 => (-200i64..7000).prop_map(Key::Int),
        1 => any::<i64>().prop_map(Key::Int),
        2 => prop::collection::vec(any::<u8>(), 0..40).prop_map(Key::Bytes),
        1 => Just(Key::None),
    ]
}
