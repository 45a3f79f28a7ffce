//! The compiled filter the relay runs for every event it scans.
//!
//! Compiling merges every list into sorted, disjoint intervals (buckets for MOD, key intervals for
//! RANGE), so [`Filter::matches`] is a few binary searches and at most one hash, and never allocates.

use std::num::NonZeroU32;

use databus_core::{Event, FrameHeader, KeyRef, Opcode, SourceId};

use crate::hash::BucketDivisor;
use crate::{FilterSpec, KeyHash, PartitionSpec};

/// Sorts and merges inclusive intervals into disjoint, non-adjacent ones.
fn merge<T: Copy + Ord>(
    mut intervals: Vec<(T, T)>,
    next: impl Fn(T) -> Option<T>,
) -> Box<[(T, T)]> {
    intervals.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(intervals.len());
    for (lo, hi) in intervals {
        match out.last_mut() {
            Some(last) if next(last.1).is_none_or(|n| lo <= n) => {
                if hi > last.1 {
                    last.1 = hi;
                }
            }
            _ => out.push((lo, hi)),
        }
    }
    out.into_boxed_slice()
}

/// Whether `x` is in one of the sorted, disjoint intervals.
#[inline]
fn in_intervals<T: Copy + Ord>(intervals: &[(T, T)], x: T) -> bool {
    let i = intervals.partition_point(|&(_, hi)| hi < x);
    intervals.get(i).is_some_and(|&(lo, _)| lo <= x)
}

/// One compiled partition spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Part {
    /// Buckets (sorted, disjoint) among `num_buckets`.
    Mod {
        num_buckets: BucketDivisor,
        buckets: Box<[(u32, u32)]>,
    },
    /// Integer key intervals (sorted, disjoint, inclusive).
    Range { keys: Box<[(i64, i64)]> },
}

/// A compiled key filter: an OR of parts; no parts means every key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeyFilter {
    pub(crate) parts: Box<[Part]>,
}

impl KeyFilter {
    fn compile(specs: &[PartitionSpec]) -> KeyFilter {
        if specs.is_empty() || specs.contains(&PartitionSpec::All) {
            return KeyFilter::default();
        }
        let parts = specs
            .iter()
            .filter_map(|spec| match spec {
                PartitionSpec::All => None,
                PartitionSpec::Mod(m) => {
                    // ModSpec guarantees 1 <= num_buckets and every bucket < num_buckets (a u32).
                    let num_buckets = NonZeroU32::new(m.num_buckets())?;
                    let buckets = m
                        .buckets()
                        .iter()
                        .map(|r| (r.first as u32, r.last as u32))
                        .collect();
                    Some(Part::Mod {
                        num_buckets: BucketDivisor::new(num_buckets),
                        buckets: merge(buckets, |b: u32| b.checked_add(1)),
                    })
                }
                PartitionSpec::Range(r) => {
                    let keys = r.ids().iter().map(|&ids| r.key_interval(ids)).collect();
                    Some(Part::Range {
                        keys: merge(keys, |k: i64| k.checked_add(1)),
                    })
                }
            })
            .collect();
        KeyFilter { parts }
    }

    fn is_all(&self) -> bool {
        self.parts.is_empty()
    }

    /// Whether no part needs the key itself (every part is MOD, decided by the key's hash).
    fn decides_by_hash(&self) -> bool {
        self.parts
            .iter()
            .all(|part| matches!(part, Part::Mod { .. }))
    }

    /// [`KeyFilter::matches`] from the key's hash: exact when [`KeyFilter::decides_by_hash`]; RANGE parts
    /// (which need the key) never match here.
    #[inline]
    fn matches_hash(&self, hash: KeyHash) -> bool {
        self.parts.is_empty()
            || self.parts.iter().any(|part| match part {
                Part::Mod {
                    num_buckets,
                    buckets,
                } => in_intervals(buckets, num_buckets.bucket(hash)),
                Part::Range { .. } => false,
            })
    }

    #[inline]
    fn matches(&self, key: KeyRef<'_>) -> bool {
        if self.parts.is_empty() {
            return true;
        }
        let mut hash: Option<KeyHash> = None;
        self.parts.iter().any(|part| match part {
            Part::Mod {
                num_buckets,
                buckets,
            } => {
                let hash = *hash.get_or_insert_with(|| KeyHash::of(key));
                in_intervals(buckets, num_buckets.bucket(hash))
            }
            Part::Range { keys } => match key {
                KeyRef::Int(k) => in_intervals(keys, k),
                KeyRef::Bytes(_) | KeyRef::None => false,
            },
        })
    }
}

/// A compiled [`FilterSpec`]: decides per event, without allocating.
///
/// ```
/// use databus_core::{EventBuilder, EventView, Key, Opcode, Scn, SourceId};
/// use databus_filters::{Filter, FilterSpec};
///
/// let filter = Filter::new(&FilterSpec::from_query("sources=1&partition=range:100:0").unwrap());
/// let mut buf = Vec::new();
/// EventBuilder::new(Scn::new(5), Opcode::Upsert)
///     .source(SourceId::new(1))
///     .key(Key::Int(42).as_ref())
///     .write_to_vec(&mut buf);
/// let (view, _) = EventView::parse(&buf).unwrap();
/// assert!(filter.matches(view.header(), view.key()));
/// assert!(!filter.matches_key(SourceId::new(1), Key::Int(100).as_ref()));
/// assert!(!filter.matches_key(SourceId::new(2), Key::Int(42).as_ref()));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Accepted sources, sorted; `None` for all.
    pub(crate) sources: Option<Box<[SourceId]>>,
    /// The key filter of sources without their own.
    pub(crate) default: KeyFilter,
    /// Per-source key filters, sorted by source.
    pub(crate) per_source: Box<[(SourceId, KeyFilter)]>,
}

impl Filter {
    /// The filter that accepts every event.
    pub fn all() -> Filter {
        Filter::default()
    }

    /// Compiles a spec.
    pub fn new(spec: &FilterSpec) -> Filter {
        Filter {
            sources: spec.sources().map(|s| s.iter().copied().collect()),
            default: KeyFilter::compile(spec.partition()),
            per_source: spec
                .per_source()
                .iter()
                .map(|(&source, specs)| (source, KeyFilter::compile(specs)))
                .collect(),
        }
    }

    /// Whether this filter accepts every event (a relay can skip calling it).
    pub fn is_all(&self) -> bool {
        self.sources.is_none()
            && self.default.is_all()
            && self.per_source.iter().all(|(_, f)| f.is_all())
    }

    /// Whether the event with this header and key passes: control events always do; data events when
    /// [`Filter::matches_key`] says so. The hot path of the relay: no allocation, at most one hash.
    #[inline]
    pub fn matches(&self, header: &FrameHeader, key: KeyRef<'_>) -> bool {
        self.matches_opcode(header.opcode(), header.source(), key)
    }

    /// The decision of [`Filter::matches`] from its parts: control events always pass, table events
    /// (truncate, schema change: they concern every key of their source) when their source passes,
    /// row changes when [`Filter::matches_key`] says so.
    #[inline]
    pub fn matches_opcode(&self, opcode: Opcode, source: SourceId, key: KeyRef<'_>) -> bool {
        if opcode.is_control() {
            true
        } else if opcode.is_table_event() {
            self.matches_source(source)
        } else {
            self.matches_key(source, key)
        }
    }

    /// Whether events of `source` pass the source filter (whatever their key).
    #[inline]
    pub fn matches_source(&self, source: SourceId) -> bool {
        self.sources
            .as_ref()
            .is_none_or(|sources| sources.binary_search(&source).is_ok())
    }

    /// Whether an owned event passes (control events always do, table events when their source does): the same decision as
    /// [`Filter::matches`], for clients and tests that hold [`Event`]s.
    pub fn matches_event(&self, event: &Event) -> bool {
        self.matches_opcode(event.opcode, event.source, event.key.as_ref())
    }

    /// Whether a data event of `source` with `key` passes (the source filter AND the source's key
    /// filter). Ignores the opcode: call [`Filter::matches`] for frames, which lets control events
    /// through.
    #[inline]
    pub fn matches_key(&self, source: SourceId, key: KeyRef<'_>) -> bool {
        if self
            .sources
            .as_ref()
            .is_some_and(|sources| sources.binary_search(&source).is_err())
        {
            return false;
        }
        self.key_filter(source).matches(key)
    }

    /// Whether [`Filter::matches_hashed`] decides every event exactly as [`Filter::matches_key`]: true
    /// unless some key filter has a RANGE part (RANGE needs the integer key itself, not its hash).
    pub fn decides_by_hash(&self) -> bool {
        self.default.decides_by_hash() && self.per_source.iter().all(|(_, f)| f.decides_by_hash())
    }

    /// The decision of [`Filter::matches_key`] for a key whose [`KeyHash`] is `hash`, without the key:
    /// what a relay that hashed each key once, when it stored the event, evaluates per reader. Exactly
    /// `matches_key(source, key)` for `hash == KeyHash::of(key)` when [`Filter::decides_by_hash`];
    /// otherwise RANGE parts count as not matching (so it may say `false` where `matches_key` says
    /// `true`, never the reverse).
    #[inline]
    pub fn matches_hashed(&self, source: SourceId, hash: KeyHash) -> bool {
        if self
            .sources
            .as_ref()
            .is_some_and(|sources| sources.binary_search(&source).is_err())
        {
            return false;
        }
        self.key_filter(source).matches_hash(hash)
    }

    /// A matcher for [`Filter::matches_hashed`] specialized to this filter's shape: a filter with no
    /// source list and one MOD spec (what a client-cluster member asks for) decides with one bucket
    /// computation and no lookups. Same answers as `matches_hashed`.
    pub fn hash_matcher(&self) -> HashMatcher<'_> {
        let shape = match (&self.sources, &*self.per_source, &*self.default.parts) {
            (None, [], []) => Shape::Everything,
            (
                None,
                [],
                [
                    Part::Mod {
                        num_buckets,
                        buckets,
                    },
                ],
            ) => match **buckets {
                [(lo, hi)] => Shape::OneRun {
                    divisor: *num_buckets,
                    lo,
                    hi,
                },
                _ => Shape::General(self),
            },
            _ => Shape::General(self),
        };
        HashMatcher { shape }
    }

    pub(crate) fn key_filter(&self, source: SourceId) -> &KeyFilter {
        match self.per_source.binary_search_by_key(&source, |(s, _)| *s) {
            Ok(i) => &self.per_source[i].1,
            Err(_) => &self.default,
        }
    }
}

/// [`Filter::matches_hashed`] specialized to one filter's shape (see [`Filter::hash_matcher`]).
#[derive(Debug, Clone, Copy)]
pub struct HashMatcher<'a> {
    shape: Shape<'a>,
}

#[derive(Debug, Clone, Copy)]
enum Shape<'a> {
    /// Every event.
    Everything,
    /// Every source; keys whose bucket among `divisor` is in `lo..=hi`.
    OneRun {
        divisor: BucketDivisor,
        lo: u32,
        hi: u32,
    },
    /// Anything else.
    General(&'a Filter),
}

/// The common shape of [`HashMatcher`]: every source, keys whose bucket among `n` is in one run of
/// buckets. Small and `Copy`, so a scan loop specialized to it decides with no call and no lookup.
#[derive(Debug, Clone, Copy)]
pub struct OneRun {
    divisor: BucketDivisor,
    lo: u32,
    hi: u32,
}

impl OneRun {
    /// Whether a row with this key hash passes (whatever its source).
    #[inline(always)]
    pub fn matches(&self, hash: KeyHash) -> bool {
        let bucket = self.divisor.bucket(hash);
        self.lo <= bucket && bucket <= self.hi
    }
}

impl HashMatcher<'_> {
    /// The matcher as a [`OneRun`], when the filter has that shape.
    pub fn one_run(&self) -> Option<OneRun> {
        match self.shape {
            Shape::OneRun { divisor, lo, hi } => Some(OneRun { divisor, lo, hi }),
            _ => None,
        }
    }

    /// [`Filter::matches_hashed`]`(source, hash)`.
    #[inline]
    pub fn matches(&self, source: SourceId, hash: KeyHash) -> bool {
        match self.shape {
            Shape::Everything => true,
            Shape::OneRun { divisor, lo, hi } => {
                let bucket = divisor.bucket(hash);
                lo <= bucket && bucket <= hi
            }
            Shape::General(filter) => filter.matches_hashed(source, hash),
        }
    }
}

impl From<&FilterSpec> for Filter {
    fn from(spec: &FilterSpec) -> Self {
        Filter::new(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use databus_core::{EventBuilder, EventView, Key, Opcode, Scn};

    fn filter(query: &str) -> Filter {
        Filter::new(&FilterSpec::from_query(query).unwrap())
    }

    fn int(source: u16, key: i64) -> (SourceId, Key) {
        (SourceId::new(source), Key::Int(key))
    }

    #[test]
    fn merge_sorts_and_joins_adjacent_and_overlapping() {
        let m = merge(vec![(5u32, 6), (0, 1), (2, 3), (10, 12), (11, 11)], |x| {
            x.checked_add(1)
        });
        assert_eq!(&*m, &[(0, 3), (5, 6), (10, 12)]);
        let m = merge(vec![(i64::MAX - 1, i64::MAX), (0, i64::MAX - 2)], |x| {
            x.checked_add(1)
        });
        assert_eq!(&*m, &[(0, i64::MAX)]);
    }

    #[test]
    fn hash_matchers_of_every_shape_agree_with_matches_key() {
        for (query, one_run) in [
            ("partition=mod:100:7", true),
            ("partition=mod:8:2-5", true),
            ("partition=mod:1:0", true),
            ("partition=all", false),
            ("partition=mod:8:1,5", false),
            ("sources=1&partition=mod:4:1", false),
            ("partition.2=mod:4:1", false),
        ] {
            let f = filter(query);
            let m = f.hash_matcher();
            assert_eq!(matches!(m.shape, Shape::OneRun { .. }), one_run, "{query}");
            for k in -500..2000 {
                for source in [0, 1, 2] {
                    let (source, key) = int(source, k);
                    assert_eq!(
                        m.matches(source, KeyHash::of(key.as_ref())),
                        f.matches_key(source, key.as_ref()),
                        "{query} {k}"
                    );
                }
            }
        }
    }

    #[test]
    fn interval_search() {
        let iv = [(0i64, 3), (5, 6), (10, 12)];
        let inside: Vec<i64> = (-2..15).filter(|&x| in_intervals(&iv, x)).collect();
        assert_eq!(inside, vec![0, 1, 2, 3, 5, 6, 10, 11, 12]);
        assert!(!in_intervals::<i64>(&[], 0));
    }

    #[test]
    fn table_events_pass_every_key_filter_but_not_an_excluding_source_filter() {
        for opcode in [Opcode::Truncate, Opcode::SchemaChange] {
            let mut buf = Vec::new();
            EventBuilder::new(Scn::new(3), opcode)
                .source(SourceId::new(1))
                .payload(b"{}")
                .write_to_vec(&mut buf);
            let (view, _) = EventView::parse(&buf).unwrap();
            for spec in [
                "partition=mod:4:0",
                "partition=mod:4:3",
                "partition=range:10:5",
                "sources=1&partition.1=mod:2:1",
            ] {
                assert!(f_matches(spec, &view), "{opcode:?} {spec}");
            }
            assert!(!f_matches("sources=2", &view), "{opcode:?}");
            let event = Event::from(view);
            assert!(filter("partition=mod:8:5").matches_event(&event));
            assert!(!filter("sources=2").matches_event(&event));
        }
    }

    fn f_matches(spec: &str, view: &EventView<'_>) -> bool {
        filter(spec).matches(view.header(), view.key())
    }

    #[test]
    fn control_events_always_pass() {
        let f = filter("sources=9&partition=range:1:0");
        let mut buf = Vec::new();
        EventBuilder::end_of_window(Scn::new(3), 0).write_to_vec(&mut buf);
        let (view, _) = EventView::parse(&buf).unwrap();
        assert!(f.matches(view.header(), view.key()));
        buf.clear();
        EventBuilder::new(Scn::new(3), Opcode::Delete)
            .source(SourceId::new(1))
            .key(KeyRef::Int(0))
            .write_to_vec(&mut buf);
        let (view, _) = EventView::parse(&buf).unwrap();
        assert!(!f.matches(view.header(), view.key()));
        assert!(!f.matches_event(&Event::from(view)));
        assert!(f.matches_event(&Event::end_of_window(Scn::new(3), 0)));
    }

    #[test]
    fn source_filter_and_per_source_key_filters() {
        // Source 1 by MOD, source 2 everything, other sources rejected.
        let f = filter("sources=1,2&partition.1=mod:4:1");
        for key in -50..50 {
            let (s, k) = int(1, key);
            assert_eq!(
                f.matches_key(s, k.as_ref()),
                bucket(&k, 4) == 1,
                "key {key}"
            );
            let (s, k) = int(2, key);
            assert!(f.matches_key(s, k.as_ref()));
            let (s, k) = int(3, key);
            assert!(!f.matches_key(s, k.as_ref()));
        }
        // Default partition for all sources, source 7 overridden to all.
        let f = filter("partition=range:10:1&partition.7=all");
        assert!(f.matches_key(SourceId::new(7), KeyRef::Int(-3)));
        assert!(f.matches_key(SourceId::new(8), KeyRef::Int(15)));
        assert!(!f.matches_key(SourceId::new(8), KeyRef::Int(20)));
        assert!(!f.is_all());
        assert!(filter("").is_all());
        assert!(filter("partition=all&partition.3=all").is_all());
        assert!(Filter::all().is_all());
    }

    fn bucket(key: &Key, n: u32) -> u32 {
        crate::bucket_of(key.as_ref(), NonZeroU32::new(n).unwrap())
    }

    #[test]
    fn mod_accepts_every_kind_of_key_by_bucket() {
        let f = filter("partition=mod:8:0,2-3");
        let keys = [
            Key::Int(-7),
            Key::Int(0),
            Key::Int(i64::MIN),
            Key::Bytes(b"user-17".to_vec()),
            Key::Bytes(vec![]),
            Key::None,
        ];
        for key in keys {
            let want = matches!(bucket(&key, 8), 0 | 2 | 3);
            assert_eq!(f.matches_key(SourceId::new(1), key.as_ref()), want, "{key}");
        }
    }

    #[test]
    fn range_takes_non_negative_integer_keys_only() {
        let f = filter("partition=range:1000:0-1,3");
        let accepted: Vec<i64> = [-1, 0, 999, 1000, 1999, 2000, 2999, 3000, 3999, 4000]
            .into_iter()
            .filter(|&k| f.matches_key(SourceId::new(0), KeyRef::Int(k)))
            .collect();
        assert_eq!(accepted, vec![0, 999, 1000, 1999, 3000, 3999]);
        assert!(!f.matches_key(SourceId::new(0), KeyRef::Bytes(b"5")));
        assert!(!f.matches_key(SourceId::new(0), KeyRef::None));
        let top = filter("partition=range:4611686018427387904:1");
        assert!(top.matches_key(SourceId::new(0), KeyRef::Int(i64::MAX)));
        assert!(!top.matches_key(SourceId::new(0), KeyRef::Int((1 << 62) - 1)));
    }

    #[test]
    fn sub_filters_or_together() {
        let f = filter("partition=range:10:0&partition=range:10:5");
        let accepted: Vec<i64> = (0..60)
            .filter(|&k| f.matches_key(SourceId::new(0), KeyRef::Int(k)))
            .collect();
        assert_eq!(accepted, (0..10).chain(50..60).collect::<Vec<_>>());
        let f = filter("partition=range:10:0&partition=mod:2:0");
        for k in 0..100 {
            let want = k < 10 || bucket(&Key::Int(k), 2) == 0;
            assert_eq!(f.matches_key(SourceId::new(0), KeyRef::Int(k)), want);
        }
    }
}
