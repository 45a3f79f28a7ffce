//! Filter specs: what a consumer asks for, validated and bounded.
//!
//! A [`FilterSpec`] is the data form of a filter: it is parsed from query parameters
//! ([`FilterSpec::from_query`]), (de)serialized with serde, pushed down to SQL
//! ([`FilterSpec::to_sql`](crate::FilterSpec::to_sql)) and compiled into a [`Filter`](crate::Filter) for
//! the hot path. Every constructor validates, so a `FilterSpec` value is always within the limits below.
//!
//! # Semantics
//!
//! An event passes when it is a control event (end of window), or when
//!
//! - its source is in `sources` (no `sources` = every source), **and**
//! - its key passes the key filter of its source: the per-source one (`partition.<source>`) if given,
//!   else the default one (`partition`), else every key passes.
//!
//! A key filter is a list of partition specs OR-ed together (a key passes if any of them accepts it):
//!
//! | spec | accepts |
//! |------|---------|
//! | `all` | every key |
//! | `mod:<num_buckets>:<buckets>` | keys whose [bucket](crate::bucket_of) among `num_buckets` is listed |
//! | `range:<range_size>:<ids>` | integer keys `k` with `id * range_size <= k < (id + 1) * range_size` for a listed `id` |
//!
//! RANGE applies to integer keys only: byte keys, keyless events and negative integer keys are in no
//! range, so a RANGE filter never accepts them (use MOD to split such keys). MOD accepts every kind of
//! key, using the shared [bucket function](crate::hash).
//!
//! Lists (`<buckets>`, `<ids>`, `sources`) are comma-separated ids or inclusive id ranges: `0,2-3,7`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use databus_core::SourceId;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::FilterError;

/// Largest `num_buckets` of a MOD spec.
pub const MAX_NUM_BUCKETS: u32 = 1_000_000;
/// Most items (ids or id ranges) in one list: the buckets of a MOD spec, the ids of a RANGE spec, or
/// `sources` (counted as runs of consecutive ids).
pub const MAX_LIST_ITEMS: usize = 1024;
/// Most partition specs OR-ed together in one key filter.
pub const MAX_PARTS: usize = 64;
/// Most per-source key filters (`partition.<source>`).
pub const MAX_PER_SOURCE: usize = 256;
/// Most list items in a whole spec, over all its lists. This bounds the work of matching and the number
/// of SQL parameters of [`FilterSpec::to_sql`](crate::FilterSpec::to_sql) (at most about 13,000, under
/// SQLite's limit of 32,766).
pub const MAX_TOTAL_ITEMS: usize = 4096;
/// Longest query string [`FilterSpec::from_query`] reads, and longest single value, in bytes.
pub const MAX_QUERY_LEN: usize = 64 * 1024;

/// The largest key a RANGE can reach, plus one: ranges end at or below `2^63`.
const RANGE_KEY_LIMIT: u128 = 1 << 63;

/// An inclusive range of ids, `first..=last`; written `first` when both are equal, else `first-last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IdRange {
    /// The first id.
    pub first: u64,
    /// The last id (inclusive).
    pub last: u64,
}

impl IdRange {
    /// The range `first..=last`.
    pub const fn new(first: u64, last: u64) -> Self {
        IdRange { first, last }
    }

    /// The one-id range `id..=id`.
    pub const fn single(id: u64) -> Self {
        IdRange {
            first: id,
            last: id,
        }
    }

    /// Whether `id` is in the range.
    pub const fn contains(&self, id: u64) -> bool {
        self.first <= id && id <= self.last
    }
}

impl fmt::Display for IdRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// A MOD partition: the keys whose bucket among `num_buckets` is one of `buckets`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModSpec {
    num_buckets: u32,
    buckets: Vec<IdRange>,
}

impl ModSpec {
    /// A MOD spec; `buckets` must be non-empty and below `num_buckets`, `num_buckets` in
    /// `1..=`[`MAX_NUM_BUCKETS`].
    pub fn new(num_buckets: u32, buckets: Vec<IdRange>) -> Result<ModSpec, FilterError> {
        ModSpec::checked(u64::from(num_buckets), buckets)
            .map_err(|reason| FilterError::param("partition", reason))
    }

    fn checked(num_buckets: u64, buckets: Vec<IdRange>) -> Result<ModSpec, String> {
        if num_buckets == 0 || num_buckets > u64::from(MAX_NUM_BUCKETS) {
            return Err(format!(
                "num_buckets {num_buckets} is out of bounds; use mod:<num_buckets>:<buckets> with \
                 num_buckets from 1 to {MAX_NUM_BUCKETS}"
            ));
        }
        // In bounds, so it fits.
        let num_buckets = num_buckets as u32;
        check_list(&buckets, "bucket", "e.g. mod:8:0,2-3")?;
        if let Some(bad) = buckets.iter().find(|r| r.last >= u64::from(num_buckets)) {
            return Err(format!(
                "bucket {} is out of range for {num_buckets} buckets; buckets are numbered 0 to {}",
                bad.last,
                num_buckets - 1
            ));
        }
        Ok(ModSpec {
            num_buckets,
            buckets,
        })
    }

    /// The number of buckets.
    pub fn num_buckets(&self) -> u32 {
        self.num_buckets
    }

    /// The accepted buckets, as given.
    pub fn buckets(&self) -> &[IdRange] {
        &self.buckets
    }
}

/// A RANGE partition: the integer keys `k` with `id * range_size <= k < (id + 1) * range_size` for an
/// `id` in `ids`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RangeSpec {
    range_size: u64,
    ids: Vec<IdRange>,
}

impl RangeSpec {
    /// A RANGE spec; `range_size >= 1`, `ids` non-empty, and every range must end at or below `2^63`
    /// (`(last + 1) * range_size <= 2^63`) so that it holds only `i64` keys.
    pub fn new(range_size: u64, ids: Vec<IdRange>) -> Result<RangeSpec, FilterError> {
        RangeSpec::checked(range_size, ids)
            .map_err(|reason| FilterError::param("partition", reason))
    }

    fn checked(range_size: u64, ids: Vec<IdRange>) -> Result<RangeSpec, String> {
        if range_size == 0 {
            return Err(
                "range_size is 0; use range:<range_size>:<ids> with range_size of at least 1"
                    .to_owned(),
            );
        }
        check_list(&ids, "range id", "e.g. range:1000:0-4")?;
        if let Some(bad) = ids
            .iter()
            .find(|r| (u128::from(r.last) + 1) * u128::from(range_size) > RANGE_KEY_LIMIT)
        {
            return Err(format!(
                "range id {} with range_size {range_size} ends past the largest integer key \
                 {}; use smaller ids or a smaller range_size",
                bad.last,
                i64::MAX
            ));
        }
        Ok(RangeSpec { range_size, ids })
    }

    /// The number of keys in each range.
    pub fn range_size(&self) -> u64 {
        self.range_size
    }

    /// The accepted range ids, as given.
    pub fn ids(&self) -> &[IdRange] {
        &self.ids
    }

    /// The inclusive key interval of range ids `ids`: `[first * size, (last + 1) * size - 1]`.
    pub(crate) fn key_interval(&self, ids: IdRange) -> (i64, i64) {
        // Validation guarantees (last + 1) * size <= 2^63, so both ends fit an i64.
        let size = u128::from(self.range_size);
        let lo = u128::from(ids.first) * size;
        let hi = (u128::from(ids.last) + 1) * size - 1;
        (lo as i64, hi as i64)
    }
}

/// One partition spec of a key filter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PartitionSpec {
    /// Every key.
    All,
    /// Keys by bucket of the shared hash.
    Mod(ModSpec),
    /// Integer keys by range.
    Range(RangeSpec),
}

impl PartitionSpec {
    fn items(&self) -> usize {
        match self {
            PartitionSpec::All => 0,
            PartitionSpec::Mod(m) => m.buckets.len(),
            PartitionSpec::Range(r) => r.ids.len(),
        }
    }

    /// Parses the text form (`all`, `mod:8:0,2-3`, `range:1000:0-4`); errors name `param`.
    pub fn parse(text: &str, param: &str) -> Result<PartitionSpec, FilterError> {
        parse_partition(text).map_err(|reason| FilterError::param(param, reason))
    }
}

impl fmt::Display for PartitionSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartitionSpec::All => f.write_str("all"),
            PartitionSpec::Mod(m) => {
                write!(f, "mod:{}:", m.num_buckets)?;
                write_list(f, &m.buckets)
            }
            PartitionSpec::Range(r) => {
                write!(f, "range:{}:", r.range_size)?;
                write_list(f, &r.ids)
            }
        }
    }
}

impl FromStr for PartitionSpec {
    type Err = FilterError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PartitionSpec::parse(s, "partition")
    }
}

impl Serialize for PartitionSpec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PartitionSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_partition(&text).map_err(serde::de::Error::custom)
    }
}

fn write_list(f: &mut fmt::Formatter<'_>, list: &[IdRange]) -> fmt::Result {
    for (i, range) in list.iter().enumerate() {
        if i > 0 {
            f.write_str(",")?;
        }
        write!(f, "{range}")?;
    }
    Ok(())
}

fn check_list(list: &[IdRange], what: &str, example: &str) -> Result<(), String> {
    if list.is_empty() {
        return Err(format!("empty {what} list; name at least one, {example}"));
    }
    if list.len() > MAX_LIST_ITEMS {
        return Err(format!(
            "{} {what} list items, over the limit of {MAX_LIST_ITEMS}; merge adjacent ids into ranges \
             like 0-99",
            list.len()
        ));
    }
    if let Some(bad) = list.iter().find(|r| r.first > r.last) {
        return Err(format!(
            "{what} range {}-{} is reversed; write the smaller id first ({}-{})",
            bad.first, bad.last, bad.last, bad.first
        ));
    }
    Ok(())
}

const PARTITION_SYNTAX: &str = "use all, mod:<num_buckets>:<buckets> or range:<range_size>:<ids>, \
                                e.g. mod:8:0,2-3";

fn parse_partition(text: &str) -> Result<PartitionSpec, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("empty partition spec; {PARTITION_SYNTAX}"));
    }
    if text.len() > MAX_QUERY_LEN {
        return Err(format!(
            "partition spec is {} bytes, over the limit of {MAX_QUERY_LEN}",
            text.len()
        ));
    }
    let mut fields = text.splitn(3, ':');
    let kind = fields.next().unwrap_or_default();
    match kind.to_ascii_lowercase().as_str() {
        "all" if fields.next().is_none() => Ok(PartitionSpec::All),
        "all" => Err(format!(
            "`all` takes no arguments; write just all (got {})",
            quoted(text)
        )),
        "mod" => {
            let (Some(n), Some(list)) = (fields.next(), fields.next()) else {
                return Err(format!(
                    "{} lacks a field; write mod:<num_buckets>:<buckets>, e.g. mod:8:0,2-3",
                    quoted(text)
                ));
            };
            let n = parse_number(n, "num_buckets")?;
            let buckets = parse_list(list, "bucket")?;
            ModSpec::checked(n, buckets).map(PartitionSpec::Mod)
        }
        "range" => {
            let (Some(size), Some(list)) = (fields.next(), fields.next()) else {
                return Err(format!(
                    "{} lacks a field; write range:<range_size>:<ids>, e.g. range:1000:0-4",
                    quoted(text)
                ));
            };
            let size = parse_number(size, "range_size")?;
            let ids = parse_list(list, "range id")?;
            RangeSpec::checked(size, ids).map(PartitionSpec::Range)
        }
        _ => Err(format!(
            "unknown partition kind {}; {PARTITION_SYNTAX}",
            quoted(kind)
        )),
    }
}

/// Quotes user text for an error message, cut to a readable length.
pub(crate) fn quoted(text: &str) -> String {
    const SHOWN: usize = 64;
    if text.len() <= SHOWN {
        return format!("{text:?}");
    }
    let mut end = SHOWN;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}...", &text[..end])
}

/// Parses a decimal number made of ASCII digits only (no sign, no spaces inside).
pub(crate) fn parse_number(text: &str, what: &str) -> Result<u64, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("missing {what}; write a decimal number"));
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{what} {} is not a number; write a non-negative decimal number",
            quoted(text)
        ));
    }
    text.parse::<u64>()
        .map_err(|_| format!("{what} {} is too large", quoted(text)))
}

/// Parses `0,2-3,7` into id ranges (not yet checked against limits other than the item count).
pub(crate) fn parse_list(text: &str, what: &str) -> Result<Vec<IdRange>, String> {
    let mut out = Vec::new();
    if text.trim().is_empty() {
        // The caller's limit check reports the empty list with an example of its own.
        return Ok(out);
    }
    for item in text.split(',') {
        if out.len() == MAX_LIST_ITEMS {
            return Err(format!(
                "more than {MAX_LIST_ITEMS} {what} list items; merge adjacent ids into ranges like 0-99"
            ));
        }
        let item = item.trim();
        if item.is_empty() {
            return Err(format!(
                "empty item in {what} list {}; separate ids with single commas, e.g. 0,2-3",
                quoted(text)
            ));
        }
        let range = match item.split_once('-') {
            Some((first, last)) => {
                IdRange::new(parse_number(first, what)?, parse_number(last, what)?)
            }
            None => IdRange::single(parse_number(item, what)?),
        };
        out.push(range);
    }
    Ok(out)
}

/// What a consumer asks for: which sources, and which keys of each.
///
/// See the [module docs](self) for the semantics and [`crate`] for the query syntax. Serialized with
/// serde as
///
/// ```json
/// {"sources":[1,2],"partition":["mod:8:0,2-3"],"per_source":{"2":["all"]}}
/// ```
///
/// where every field is optional (`{}` is every event) and each partition spec uses its text form.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "FilterSpecRepr", into = "FilterSpecRepr")]
pub struct FilterSpec {
    sources: Option<BTreeSet<SourceId>>,
    partition: Vec<PartitionSpec>,
    per_source: BTreeMap<SourceId, Vec<PartitionSpec>>,
}

/// The serde form of [`FilterSpec`], validated on the way in.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterSpecRepr {
    /// Accepted sources; absent means every source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sources: Option<Vec<SourceId>>,
    /// The default key filter (OR of its specs); empty means every key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    partition: Vec<PartitionSpec>,
    /// Key filters of single sources, replacing the default one for them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    per_source: BTreeMap<SourceId, Vec<PartitionSpec>>,
}

impl TryFrom<FilterSpecRepr> for FilterSpec {
    type Error = FilterError;

    fn try_from(repr: FilterSpecRepr) -> Result<Self, Self::Error> {
        FilterSpec::new(
            repr.sources.map(|s| s.into_iter().collect()),
            repr.partition,
            repr.per_source,
        )
    }
}

impl From<FilterSpec> for FilterSpecRepr {
    fn from(spec: FilterSpec) -> Self {
        FilterSpecRepr {
            sources: spec.sources.map(|s| s.into_iter().collect()),
            partition: spec.partition,
            per_source: spec.per_source,
        }
    }
}

/// Runs of consecutive ids in a sorted set, as inclusive ranges.
pub(crate) fn runs(ids: impl IntoIterator<Item = u64>) -> Vec<IdRange> {
    let mut out: Vec<IdRange> = Vec::new();
    for id in ids {
        match out.last_mut() {
            Some(last) if last.last.checked_add(1) == Some(id) => last.last = id,
            _ => out.push(IdRange::single(id)),
        }
    }
    out
}

pub(crate) fn source_runs(sources: &BTreeSet<SourceId>) -> Vec<IdRange> {
    runs(sources.iter().map(|s| u64::from(s.get())))
}

fn check_key_filter(param: &str, parts: &[PartitionSpec]) -> Result<(), FilterError> {
    if parts.len() > MAX_PARTS {
        return Err(FilterError::param(
            param,
            format!(
                "{} partition specs, over the limit of {MAX_PARTS}; combine buckets into one \
                 mod spec (mod:8:0,2-3) instead of repeating {param}",
                parts.len()
            ),
        ));
    }
    if parts.len() > 1 && parts.contains(&PartitionSpec::All) {
        return Err(FilterError::param(
            param,
            "`all` cannot be combined with other partition specs; keep only all, or drop it",
        ));
    }
    Ok(())
}

impl FilterSpec {
    /// Every event: no source filter, no key filter.
    pub fn all() -> FilterSpec {
        FilterSpec::default()
    }

    /// A validated spec.
    ///
    /// - `sources`: accepted sources, `None` for all; must not be empty.
    /// - `partition`: the default key filter, an OR of its specs; empty for every key.
    /// - `per_source`: key filters of single sources, replacing the default for them; each non-empty,
    ///   and each source must be in `sources` when that is given.
    ///
    /// Errors name the query parameter at fault (`sources`, `partition`, `partition.<source>`).
    pub fn new(
        sources: Option<BTreeSet<SourceId>>,
        partition: Vec<PartitionSpec>,
        per_source: BTreeMap<SourceId, Vec<PartitionSpec>>,
    ) -> Result<FilterSpec, FilterError> {
        let mut total = 0usize;
        if let Some(sources) = &sources {
            if sources.is_empty() {
                return Err(FilterError::param(
                    "sources",
                    "empty source list; list at least one source id, or leave sources out to \
                     receive every source",
                ));
            }
            let runs = source_runs(sources).len();
            if runs > MAX_LIST_ITEMS {
                return Err(FilterError::param(
                    "sources",
                    format!(
                        "{runs} separate source ids or ranges, over the limit of {MAX_LIST_ITEMS}; \
                         receive every source and filter on the client instead"
                    ),
                ));
            }
            total += runs;
        }
        check_key_filter("partition", &partition)?;
        total += partition.iter().map(PartitionSpec::items).sum::<usize>();
        if per_source.len() > MAX_PER_SOURCE {
            return Err(FilterError::param(
                "partition.<source>",
                format!(
                    "{} per-source partition filters, over the limit of {MAX_PER_SOURCE}; use the \
                     default `partition` for most sources",
                    per_source.len()
                ),
            ));
        }
        for (source, parts) in &per_source {
            let param = format!("partition.{source}");
            if parts.is_empty() {
                return Err(FilterError::param(
                    param,
                    "no partition spec; give one (all, mod:<num_buckets>:<buckets> or \
                     range:<range_size>:<ids>) or drop the entry",
                ));
            }
            check_key_filter(&param, parts)?;
            if sources.as_ref().is_some_and(|s| !s.contains(source)) {
                return Err(FilterError::param(
                    param,
                    format!(
                        "source {source} is not in sources; add {source} to sources or drop \
                         partition.{source}"
                    ),
                ));
            }
            total += parts.iter().map(PartitionSpec::items).sum::<usize>();
        }
        if total > MAX_TOTAL_ITEMS {
            return Err(FilterError::InvalidQuery(format!(
                "the filter has {total} list items in all, over the limit of {MAX_TOTAL_ITEMS}; \
                 use fewer, wider ranges or fewer per-source filters"
            )));
        }
        Ok(FilterSpec {
            sources,
            partition,
            per_source,
        })
    }

    /// Whether this spec accepts every event.
    pub fn is_all(&self) -> bool {
        self.sources.is_none()
            && self.partition.iter().all(|p| *p == PartitionSpec::All)
            && self
                .per_source
                .values()
                .all(|parts| parts.iter().all(|p| *p == PartitionSpec::All))
    }

    /// The accepted sources; `None` for every source.
    pub fn sources(&self) -> Option<&BTreeSet<SourceId>> {
        self.sources.as_ref()
    }

    /// The default key filter: an OR of its specs; empty for every key.
    pub fn partition(&self) -> &[PartitionSpec] {
        &self.partition
    }

    /// The per-source key filters.
    pub fn per_source(&self) -> &BTreeMap<SourceId, Vec<PartitionSpec>> {
        &self.per_source
    }

    /// The key filter that applies to `source`: its own, else the default (empty = every key).
    pub fn key_filter_of(&self, source: SourceId) -> &[PartitionSpec] {
        self.per_source
            .get(&source)
            .map_or(&self.partition[..], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(text: &str) -> String {
        match PartitionSpec::parse(text, "partition").unwrap_err() {
            FilterError::InvalidParam { param, reason } => {
                assert_eq!(param, "partition");
                reason
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn parses_and_formats_each_kind() {
        for text in [
            "all",
            "mod:8:0,2-3",
            "range:1000:0-4",
            "mod:1:0",
            "range:1:0,5,9-12",
        ] {
            let spec: PartitionSpec = text.parse().unwrap();
            assert_eq!(spec.to_string(), text);
        }
        let PartitionSpec::Mod(m) = "mod:8:0,2-3".parse().unwrap() else {
            panic!("not mod")
        };
        assert_eq!(m.num_buckets(), 8);
        assert_eq!(m.buckets(), &[IdRange::single(0), IdRange::new(2, 3)]);
        // Lenient input, canonical output.
        let spec: PartitionSpec = " MOD:8: 0 , 3-3 ".parse().unwrap();
        assert_eq!(spec.to_string(), "mod:8:0,3");
    }

    #[test]
    fn each_bad_partition_spec_has_a_clear_reason() {
        let cases: &[(&str, &str)] = &[
            (
                "",
                "empty partition spec; use all, mod:<num_buckets>:<buckets> or range",
            ),
            ("hash:8:1", "unknown partition kind \"hash\"; use all, mod:"),
            ("all:1", "`all` takes no arguments"),
            (
                "mod:8",
                "\"mod:8\" lacks a field; write mod:<num_buckets>:<buckets>",
            ),
            (
                "range:10",
                "\"range:10\" lacks a field; write range:<range_size>:<ids>, e.g. range:1000:0-4",
            ),
            (
                "mod:0:0",
                "num_buckets 0 is out of bounds; use mod:<num_buckets>:<buckets> with num_buckets from 1 to 1000000",
            ),
            ("mod:1000001:0", "num_buckets 1000001 is out of bounds"),
            (
                "mod:99999999999:0",
                "num_buckets 99999999999 is out of bounds",
            ),
            (
                "mod:x:0",
                "num_buckets \"x\" is not a number; write a non-negative decimal number",
            ),
            ("mod:-8:0", "num_buckets \"-8\" is not a number"),
            ("mod:+8:0", "num_buckets \"+8\" is not a number"),
            (
                "mod:8:",
                "empty bucket list; name at least one, e.g. mod:8:0,2-3",
            ),
            (
                "mod:8:1,,2",
                "empty item in bucket list \"1,,2\"; separate ids with single commas",
            ),
            (
                "mod:8:8",
                "bucket 8 is out of range for 8 buckets; buckets are numbered 0 to 7",
            ),
            ("mod:8:2-9", "bucket 9 is out of range for 8 buckets"),
            (
                "mod:8:5-3",
                "bucket range 5-3 is reversed; write the smaller id first (3-5)",
            ),
            ("mod:8:1-2-3", "bucket \"2-3\" is not a number"),
            (
                "mod:8:99999999999999999999",
                "bucket \"99999999999999999999\" is too large",
            ),
            (
                "range:0:1",
                "range_size is 0; use range:<range_size>:<ids> with range_size of at least 1",
            ),
            ("range:1000:4-2", "range id range 4-2 is reversed"),
            (
                "range:1000:9223372036854775",
                "range id 9223372036854775 with range_size 1000 ends past the largest integer key 9223372036854775807; use smaller ids or a smaller range_size",
            ),
            (
                "range:1:",
                "empty range id list; name at least one, e.g. range:1000:0-4",
            ),
            ("range:1:3-", "missing range id; write a decimal number"),
        ];
        for (text, want) in cases {
            let got = reason(text);
            assert!(
                got.starts_with(want),
                "{text:?}: got {got:?}, want prefix {want:?}"
            );
        }
    }

    #[test]
    fn list_item_limit() {
        let list: Vec<String> = (0..=MAX_LIST_ITEMS as u64)
            .map(|i| (i * 2).to_string())
            .collect();
        let got = reason(&format!("mod:1000000:{}", list.join(",")));
        assert_eq!(
            got,
            "more than 1024 bucket list items; merge adjacent ids into ranges like 0-99"
        );
        let list: Vec<String> = (0..MAX_LIST_ITEMS as u64)
            .map(|i| (i * 2).to_string())
            .collect();
        assert!(PartitionSpec::parse(&format!("mod:1000000:{}", list.join(",")), "p").is_ok());
    }

    #[test]
    fn long_values_are_rejected_and_quoted_short() {
        let text = format!("mod:8:{}", "1".repeat(MAX_QUERY_LEN));
        assert!(
            reason(&text).starts_with("partition spec is 65542 bytes, over the limit of 65536")
        );
        let got = reason(&format!("hash{}", "é".repeat(100)));
        assert!(got.len() < 250, "{got}");
        assert!(got.contains("...;"), "{got}");
    }

    #[test]
    fn range_bounds_are_exact() {
        // (id + 1) * size == 2^63 exactly is accepted: the last key is i64::MAX.
        let PartitionSpec::Range(r) = "range:4611686018427387904:1".parse().unwrap() else {
            panic!()
        };
        assert_eq!(r.key_interval(IdRange::single(1)), (1 << 62, i64::MAX));
        assert!(
            "range:4611686018427387904:2"
                .parse::<PartitionSpec>()
                .is_err()
        );
        assert!(
            "range:9223372036854775808:0"
                .parse::<PartitionSpec>()
                .is_ok()
        );
        assert!(
            "range:9223372036854775809:0"
                .parse::<PartitionSpec>()
                .is_err()
        );
    }

    #[test]
    fn spec_validation_names_the_parameter() {
        let m = |t: &str| t.parse::<PartitionSpec>().unwrap();
        let s = |ids: &[u16]| Some(ids.iter().map(|&i| SourceId::new(i)).collect());
        let err = FilterSpec::new(s(&[]), vec![], BTreeMap::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid filter parameter `sources`: empty source list; list at least one source id, or \
             leave sources out to receive every source"
        );
        let per = BTreeMap::from([(SourceId::new(3), vec![m("mod:4:1")])]);
        let err = FilterSpec::new(s(&[1, 2]), vec![], per).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid filter parameter `partition.3`: source 3 is not in sources; add 3 to sources or \
             drop partition.3"
        );
        let err = FilterSpec::new(None, vec![m("all"), m("mod:2:0")], BTreeMap::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid filter parameter `partition`: `all` cannot be combined with other partition \
             specs; keep only all, or drop it"
        );
        let per = BTreeMap::from([(SourceId::new(3), vec![])]);
        let err = FilterSpec::new(None, vec![], per).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid filter parameter `partition.3`: no partition spec")
        );
        let err =
            FilterSpec::new(None, vec![m("mod:2:0"); MAX_PARTS + 1], BTreeMap::new()).unwrap_err();
        assert!(
            err.to_string().starts_with(
                "invalid filter parameter `partition`: 65 partition specs, over the limit of 64"
            ),
            "{err}"
        );
        let per: BTreeMap<_, _> = (0..=MAX_PER_SOURCE as u16)
            .map(|i| (SourceId::new(i), vec![m("all")]))
            .collect();
        let err = FilterSpec::new(None, vec![], per).unwrap_err();
        assert!(
            err.to_string()
                .contains("257 per-source partition filters, over the limit of 256"),
            "{err}"
        );
        let sparse = Some(
            (0..=MAX_LIST_ITEMS as u16)
                .map(|i| SourceId::new(i * 2))
                .collect(),
        );
        let err = FilterSpec::new(sparse, vec![], BTreeMap::new()).unwrap_err();
        assert!(
            err.to_string()
                .contains("1025 separate source ids or ranges, over the limit of 1024"),
            "{err}"
        );
        let wide: Vec<IdRange> = (0..1000).map(|i| IdRange::single(i * 2)).collect();
        let wide = PartitionSpec::Mod(ModSpec::new(1_000_000, wide).unwrap());
        let err = FilterSpec::new(None, vec![wide; 5], BTreeMap::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid filter query: the filter has 5000 list items in all, over the limit of 4096; use \
             fewer, wider ranges or fewer per-source filters"
        );
        assert!(err.is_client_error());
    }

    #[test]
    fn serde_form_is_compact_and_validated() {
        let json = r#"{"sources":[2,1],"partition":["mod:8:0,2-3"],"per_source":{"2":["all"]}}"#;
        let spec: FilterSpec = serde_json::from_str(json).unwrap();
        assert_eq!(spec.sources().unwrap().len(), 2);
        assert_eq!(spec.key_filter_of(SourceId::new(2)), &[PartitionSpec::All]);
        assert_eq!(
            spec.key_filter_of(SourceId::new(1))[0].to_string(),
            "mod:8:0,2-3"
        );
        let back = serde_json::to_string(&spec).unwrap();
        assert_eq!(
            back,
            r#"{"sources":[1,2],"partition":["mod:8:0,2-3"],"per_source":{"2":["all"]}}"#
        );
        assert_eq!(serde_json::from_str::<FilterSpec>(&back).unwrap(), spec);
        assert_eq!(serde_json::to_string(&FilterSpec::all()).unwrap(), "{}");
        assert!(serde_json::from_str::<FilterSpec>("{}").unwrap().is_all());

        let err = serde_json::from_str::<FilterSpec>(r#"{"partition":["mod:0:1"]}"#).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("num_buckets 0 is out of bounds"),
            "{err}"
        );
        let err =
            serde_json::from_str::<FilterSpec>(r#"{"sources":[1],"per_source":{"5":["all"]}}"#)
                .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid filter parameter `partition.5`"),
            "{err}"
        );
        let err = serde_json::from_str::<FilterSpec>(r#"{"source":[1]}"#).unwrap_err();
        assert!(
            err.to_string().starts_with("unknown field `source`"),
            "{err}"
        );
    }

    #[test]
    fn runs_merge_consecutive_ids() {
        assert_eq!(
            runs([1, 2, 3, 5, 7, 8]),
            vec![IdRange::new(1, 3), IdRange::single(5), IdRange::new(7, 8)]
        );
        assert_eq!(
            runs([u64::MAX - 1, u64::MAX]),
            vec![IdRange::new(u64::MAX - 1, u64::MAX)]
        );
        assert!(runs([]).is_empty());
    }
}
