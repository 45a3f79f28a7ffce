//! Property tests: bucket coverage, range partitioning, text and JSON round trips, and the compiled
//! filter against a direct reading of the spec.

mod common;

use std::num::NonZeroU32;

use databus_core::{Key, KeyRef, SourceId};
use databus_filters::{Filter, FilterSpec, KeyHash, PartitionSpec, bucket_of, spec::IdRange};
use proptest::prelude::*;

use common::{filter_spec, key, mod_spec};

/// The spec's meaning, read directly (no compiling, no merging), as the model.
fn model_accepts(spec: &FilterSpec, source: SourceId, key: KeyRef<'_>) -> bool {
    if spec.sources().is_some_and(|s| !s.contains(&source)) {
        return false;
    }
    let parts = spec.key_filter_of(source);
    parts.is_empty()
        || parts.iter().any(|part| match part {
            PartitionSpec::All => true,
            PartitionSpec::Mod(m) => {
                let b = u64::from(bucket_of(key, NonZeroU32::new(m.num_buckets()).unwrap()));
                m.buckets().iter().any(|r| r.contains(b))
            }
            PartitionSpec::Range(r) => match key {
                KeyRef::Int(k) if k >= 0 => r
                    .ids()
                    .iter()
                    .any(|ids| ids.contains(k as u64 / r.range_size())),
                _ => false,
            },
        })
}

fn runs_of(buckets: &[u64]) -> Vec<IdRange> {
    let mut out: Vec<IdRange> = Vec::new();
    for &b in buckets {
        match out.last_mut() {
            Some(last) if last.last + 1 == b => last.last = b,
            _ => out.push(IdRange::single(b)),
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// For any n, the filters mod:n:0 .. mod:n:n-1 accept every key exactly once, and so do the
    /// members of a client cluster that split the buckets between them in any way.
    #[test]
    fn mod_buckets_cover_every_key_exactly_once(
        n in 1u32..=48,
        owners in prop::collection::vec(0usize..4, 48),
        keys in prop::collection::vec(key(), 1..40),
    ) {
        let single: Vec<Filter> = (0..n)
            .map(|b| Filter::new(&FilterSpec::from_query(&format!("partition=mod:{n}:{b}")).unwrap()))
            .collect();
        let mut members = Vec::new();
        for member in 0..4 {
            let owned: Vec<u64> = (0..u64::from(n)).filter(|&b| owners[b as usize] == member).collect();
            if owned.is_empty() {
                continue;
            }
            let spec = format!("partition=mod:{n}:{}", runs_of(&owned).iter().map(ToString::to_string).collect::<Vec<_>>().join(","));
            members.push((member, Filter::new(&FilterSpec::from_query(&spec).unwrap())));
        }
        for key in &keys {
            let src = SourceId::new(3);
            let hits: Vec<u32> = (0..n).filter(|&b| single[b as usize].matches_key(src, key.as_ref())).collect();
            prop_assert_eq!(hits.clone(), vec![bucket_of(key.as_ref(), NonZeroU32::new(n).unwrap())], "key {}", key);
            let owner: Vec<usize> = members.iter().filter(|(_, f)| f.matches_key(src, key.as_ref())).map(|(m, _)| *m).collect();
            prop_assert_eq!(owner, vec![owners[hits[0] as usize]], "key {}", key);
        }
    }

    /// Range ids partition the non-negative integer keys: key k is in range id k / size and in no
    /// other; negative keys and byte keys are in none.
    #[test]
    fn range_ids_partition_integer_keys(
        size in prop_oneof![1u64..=1000, 1u64..=(1 << 40), Just(1u64 << 62), Just(1u64 << 63)],
        k in 0i64..=i64::MAX,
        negative in i64::MIN..0,
        bytes in prop::collection::vec(any::<u8>(), 0..16),
    ) {
        let id = k as u64 / size;
        let last_id = ((1u128 << 63) / u128::from(size) - 1) as u64;
        let accepts = |ids: &str, key: KeyRef<'_>| {
            let f = Filter::new(&FilterSpec::from_query(&format!("partition=range:{size}:{ids}")).unwrap());
            f.matches_key(SourceId::new(0), key)
        };
        let all_ids = format!("0-{last_id}");
        prop_assert!(accepts(&id.to_string(), KeyRef::Int(k)));
        if id > 0 {
            let below = format!("0-{}", id - 1);
            prop_assert!(!accepts(&below, KeyRef::Int(k)));
        }
        if id < last_id {
            let above = format!("{}-{}", id + 1, last_id);
            prop_assert!(!accepts(&above, KeyRef::Int(k)));
        }
        prop_assert!(!accepts(&all_ids, KeyRef::Int(negative)));
        prop_assert!(!accepts(&all_ids, KeyRef::Bytes(&bytes)));
        prop_assert!(!accepts(&all_ids, KeyRef::None));
    }

    /// parse(format(spec)) == spec, through the query form and through JSON.
    #[test]
    fn text_and_json_forms_round_trip(spec in filter_spec()) {
        let query = spec.to_query();
        prop_assert_eq!(FilterSpec::from_query(&query).unwrap(), spec.clone(), "query {}", query);
        let json = serde_json::to_string(&spec).unwrap();
        prop_assert_eq!(serde_json::from_str::<FilterSpec>(&json).unwrap(), spec, "json {}", json);
    }

    /// The compiled filter (merged intervals, binary search, one hash) agrees with the spec read
    /// directly.
    #[test]
    fn compiled_filter_agrees_with_the_spec(
        spec in filter_spec(),
        events in prop::collection::vec((0u16..14, key()), 1..60),
    ) {
        let filter = Filter::new(&spec);
        for (source, key) in &events {
            let source = SourceId::new(*source);
            prop_assert_eq!(
                filter.matches_key(source, key.as_ref()),
                model_accepts(&spec, source, key.as_ref()),
                "spec {} source {} key {}", spec, source, key
            );
        }
        prop_assert_eq!(filter.is_all(), spec.is_all());
    }

    /// Arbitrary text never panics the parser, and whatever parses formats back to itself.
    #[test]
    fn arbitrary_queries_parse_or_fail_cleanly(query in "[a-z0-9.,:=&%+-]{0,60}") {
        if let Ok(spec) = FilterSpec::from_query(&query) {
            prop_assert_eq!(FilterSpec::from_query(&spec.to_query()).unwrap(), spec);
        }
    }
}

#[test]
fn a_cluster_of_three_sees_each_key_once() {
    let members: Vec<Filter> = ["0-2", "3-5", "6-7"]
        .iter()
        .map(|b| Filter::new(&FilterSpec::from_query(&format!("partition=mod:8:{b}")).unwrap()))
        .collect();
    for k in -1000..1000 {
        let key = Key::Int(k);
        let n = members
            .iter()
            .filter(|f| f.matches_key(SourceId::new(1), key.as_ref()))
            .count();
        assert_eq!(n, 1, "key {k}");
    }
}

proptest! {
    /// Deciding on a frame header (the relay) and on an owned event (a client) agree, and control
    /// events always pass.
    #[test]
    fn frame_and_owned_event_decisions_agree(
        spec in common::filter_spec(),
        events in prop::collection::vec((0u16..14, key(), any::<bool>()), 1..30),
    ) {
        use databus_core::{Event, Opcode, PartitionId, SchemaId, Scn};
        let filter = Filter::new(&spec);
        for (source, key, control) in events {
            let event = if control {
                Event::end_of_window(Scn::new(9), 1)
            } else {
                Event {
                    scn: Scn::new(9),
                    opcode: Opcode::Upsert,
                    source: SourceId::new(source),
                    partition: PartitionId::new(0),
                    timestamp_ns: 1,
                    schema: SchemaId::new(5),
                    key,
                    payload: vec![1, 2, 3],
                }
            };
            let frame = event.to_frame();
            let (view, _) = databus_core::EventView::parse(&frame).unwrap();
            let decided = filter.matches(view.header(), view.key());
            prop_assert_eq!(decided, filter.matches_event(&event));
            if control {
                prop_assert!(decided);
            } else {
                prop_assert_eq!(decided, model_accepts(&spec, event.source, event.key.as_ref()));
            }
        }
    }

    /// `matches_hashed` on the key's hash gives `matches_key`'s answer for every filter without RANGE
    /// parts (MOD-only specs, with source lists and per-source filters); with RANGE parts it never
    /// accepts what `matches_key` refuses.
    #[test]
    fn matches_hashed_agrees_with_matches_key(
        spec in filter_spec(),
        mod_only in mod_only_spec(),
        events in prop::collection::vec((0u16..12, key()), 1..40),
    ) {
        let general = Filter::new(&spec);
        let by_hash = Filter::new(&mod_only);
        prop_assert!(by_hash.decides_by_hash());
        let has_range = std::iter::once(spec.partition())
            .chain(spec.per_source().values().map(Vec::as_slice))
            .filter(|parts| !parts.contains(&PartitionSpec::All))
            .flatten()
            .any(|p| matches!(p, PartitionSpec::Range(_)));
        prop_assert_eq!(general.decides_by_hash(), !has_range);
        for (source, key) in events {
            let source = SourceId::new(source);
            let hash = KeyHash::of(key.as_ref());
            prop_assert_eq!(
                by_hash.matches_hashed(source, hash),
                by_hash.matches_key(source, key.as_ref())
            );
            prop_assert_eq!(
                by_hash.hash_matcher().matches(source, hash),
                by_hash.matches_hashed(source, hash)
            );
            prop_assert_eq!(
                general.hash_matcher().matches(source, hash),
                general.matches_hashed(source, hash)
            );
            prop_assert_eq!(
                by_hash.matches_hashed(source, hash),
                model_accepts(&mod_only, source, key.as_ref())
            );
            let hashed = general.matches_hashed(source, hash);
            let keyed = general.matches_key(source, key.as_ref());
            if general.decides_by_hash() {
                prop_assert_eq!(hashed, keyed);
            } else {
                prop_assert!(!hashed || keyed);
            }
        }
    }
}

/// Specs whose key filters are MOD only (or everything), over sources 0..12.
fn mod_only_spec() -> impl Strategy<Value = FilterSpec> {
    let parts = || {
        prop_oneof![
            1 => Just(vec![PartitionSpec::All]),
            4 => prop::collection::vec(mod_spec(), 1..4),
        ]
    };
    (
        prop::option::of(prop::collection::btree_set(0u16..12, 1..6)),
        prop_oneof![Just(Vec::new()), parts()],
        prop::collection::btree_map(0u16..12, parts(), 0..3),
    )
        .prop_map(|(sources, partition, per_source)| {
            let per_source: std::collections::BTreeMap<SourceId, Vec<PartitionSpec>> = per_source
                .into_iter()
                .map(|(s, parts)| (SourceId::new(s), parts))
                .collect();
            let sources = sources.map(|s| {
                let mut set: std::collections::BTreeSet<SourceId> =
                    s.into_iter().map(SourceId::new).collect();
                set.extend(per_source.keys().copied());
                set
            });
            FilterSpec::new(sources, partition, per_source).unwrap()
        })
}
