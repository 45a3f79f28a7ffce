//! The query-parameter form of a [`FilterSpec`].
//!
//! | parameter | value | meaning |
//! |-----------|-------|---------|
//! | `sources` | list of source ids, e.g. `1,2,5-7` | only these sources (at most once) |
//! | `partition` | partition spec | the default key filter; repeat to OR several specs |
//! | `partition.<source>` | partition spec | the key filter of that source, replacing the default; repeat to OR |
//!
//! Partition specs are `all`, `mod:<num_buckets>:<buckets>` and `range:<range_size>:<ids>`. Lists are
//! comma-separated ids or inclusive ranges `a-b`. Values are percent-decoded (`%3A` for `:`, `%2C`
//! for `,`, `+` for a space), so both raw and encoded forms work; [`FilterSpec::to_query`] writes the
//! raw form, which needs no encoding.
//!
//! Parameters with other names are ignored, so the filter can share a query string with the request's
//! own parameters — except names that start with `source` or `partition` (case-insensitively), which
//! are rejected as likely typos (`partitions=`, `source=`). Endpoints must not use such names for
//! anything else.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use databus_core::SourceId;

use crate::spec::{MAX_QUERY_LEN, parse_list, quoted, runs};
use crate::{FilterError, FilterSpec, PartitionSpec};

/// Decodes one `application/x-www-form-urlencoded` component: `+` is a space, `%XX` a byte; the result
/// must be UTF-8.
fn percent_decode(text: &str) -> Result<String, String> {
    if !text.bytes().any(|b| b == b'%' || b == b'+') {
        return Ok(text.to_owned());
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).and_then(|h| {
                    let h = std::str::from_utf8(h).ok()?;
                    if h.bytes().all(|b| b.is_ascii_hexdigit()) {
                        u8::from_str_radix(h, 16).ok()
                    } else {
                        None
                    }
                });
                let Some(byte) = hex else {
                    return Err(format!(
                        "bad percent-encoding in {}; write % as %25 and other escapes as %XX with \
                         two hex digits",
                        quoted(text)
                    ));
                };
                out.push(byte);
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| {
        format!(
            "{} does not decode to UTF-8 text; percent-encode UTF-8 bytes only",
            quoted(text)
        )
    })
}

/// Which filter parameter a name is, if any.
enum ParamName {
    Sources,
    Partition,
    PartitionOf(SourceId),
    Other,
}

fn classify(name: &str) -> Result<ParamName, FilterError> {
    match name {
        "sources" => return Ok(ParamName::Sources),
        "partition" => return Ok(ParamName::Partition),
        _ => {}
    }
    if let Some(source) = name.strip_prefix("partition.") {
        let valid = !source.is_empty() && source.bytes().all(|b| b.is_ascii_digit());
        return match source.parse::<u16>() {
            Ok(id) if valid => Ok(ParamName::PartitionOf(SourceId::new(id))),
            _ => Err(FilterError::param(
                name,
                format!(
                    "{} is not a source id (0 to 65535); write partition.<source id>, e.g. \
                     partition.2=mod:4:1",
                    quoted(source)
                ),
            )),
        };
    }
    let lower = name.to_ascii_lowercase();
    if lower.starts_with("partition") || lower.starts_with("source") {
        return Err(FilterError::InvalidQuery(format!(
            "unknown filter parameter {}; use sources, partition or partition.<source id>",
            quoted(name)
        )));
    }
    Ok(ParamName::Other)
}

fn parse_sources(value: &str) -> Result<BTreeSet<SourceId>, FilterError> {
    let list = parse_list(value, "source id").map_err(|r| FilterError::param("sources", r))?;
    // A bitmap of the 65536 source ids: overlapping ranges cost nothing extra.
    let mut bits = [0u64; 1024];
    for range in list {
        if range.first > range.last {
            return Err(FilterError::param(
                "sources",
                format!(
                    "source range {range_first}-{range_last} is reversed; write the smaller id \
                     first ({range_last}-{range_first})",
                    range_first = range.first,
                    range_last = range.last
                ),
            ));
        }
        if range.last > u64::from(u16::MAX) {
            return Err(FilterError::param(
                "sources",
                format!(
                    "source id {} is out of range; source ids are 0 to 65535",
                    range.last
                ),
            ));
        }
        let (first, last) = (range.first as usize, range.last as usize);
        for (word, bits) in bits
            .iter_mut()
            .enumerate()
            .take(last / 64 + 1)
            .skip(first / 64)
        {
            let lo = if word == first / 64 { first % 64 } else { 0 };
            let hi = if word == last / 64 { last % 64 } else { 63 };
            *bits |= (u64::MAX >> (63 - hi)) & (u64::MAX << lo);
        }
    }
    let mut set = BTreeSet::new();
    for (word, &bits) in bits.iter().enumerate() {
        for bit in (0..64).filter(|b| bits & (1 << b) != 0) {
            // word < 1024 and bit < 64, so the id is below 65536.
            set.insert(SourceId::new((word * 64 + bit) as u16));
        }
    }
    Ok(set)
}

impl FilterSpec {
    /// Parses the filter parameters out of a whole query string (with or without its leading `?`),
    /// ignoring parameters that are not filter parameters. See the [module docs](crate::query).
    ///
    /// ```
    /// use databus_filters::FilterSpec;
    ///
    /// let spec = FilterSpec::from_query("scn=42&sources=1,2&partition.1=mod:4:1").unwrap();
    /// assert_eq!(spec.to_query(), "sources=1-2&partition.1=mod:4:1");
    /// let err = FilterSpec::from_query("partition=mod:0:1").unwrap_err();
    /// assert!(err.to_string().starts_with("invalid filter parameter `partition`: num_buckets 0"));
    /// ```
    pub fn from_query(query: &str) -> Result<FilterSpec, FilterError> {
        if query.len() > MAX_QUERY_LEN {
            return Err(FilterError::InvalidQuery(format!(
                "query string is {} bytes, over the limit of {MAX_QUERY_LEN}; send large filters in \
                 the JSON form",
                query.len()
            )));
        }
        let query = query.strip_prefix('?').unwrap_or(query);
        let mut pairs = Vec::new();
        for segment in query.split('&').filter(|s| !s.is_empty()) {
            let (name, value) = segment.split_once('=').unwrap_or((segment, ""));
            let name = percent_decode(name).map_err(FilterError::InvalidQuery)?;
            if matches!(classify(&name)?, ParamName::Other) {
                continue;
            }
            let value = percent_decode(value).map_err(|r| FilterError::param(&name, r))?;
            pairs.push((name, value));
        }
        FilterSpec::from_pairs(pairs)
    }

    /// Builds a spec from already-decoded `(name, value)` pairs, in order (e.g. from a framework's
    /// query parser), ignoring names that are not filter parameters.
    pub fn from_pairs<I, K, V>(pairs: I) -> Result<FilterSpec, FilterError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut sources = None;
        let mut partition = Vec::new();
        let mut per_source: BTreeMap<SourceId, Vec<PartitionSpec>> = BTreeMap::new();
        for (name, value) in pairs {
            let (name, value) = (name.as_ref(), value.as_ref());
            let kind = classify(name)?;
            if matches!(kind, ParamName::Other) {
                continue;
            }
            if value.len() > MAX_QUERY_LEN {
                return Err(FilterError::param(
                    name,
                    format!(
                        "value is {} bytes, over the limit of {MAX_QUERY_LEN}",
                        value.len()
                    ),
                ));
            }
            if value.trim().is_empty() {
                let example = match kind {
                    ParamName::Sources => "sources=1,2",
                    _ => "partition=mod:8:0,2-3",
                };
                return Err(FilterError::param(
                    name,
                    format!("empty value; give one, e.g. {example}, or leave {name} out"),
                ));
            }
            match kind {
                ParamName::Sources => {
                    if sources.is_some() {
                        return Err(FilterError::param(
                            "sources",
                            "given more than once; list every source in one sources=1,2,5-7",
                        ));
                    }
                    sources = Some(parse_sources(value)?);
                }
                ParamName::Partition => partition.push(PartitionSpec::parse(value, name)?),
                ParamName::PartitionOf(source) => per_source
                    .entry(source)
                    .or_default()
                    .push(PartitionSpec::parse(value, name)?),
                ParamName::Other => {}
            }
            // Fail fast on absurd repetition instead of collecting it all first.
            if partition.len() > crate::spec::MAX_PARTS
                || per_source.len() > crate::spec::MAX_PER_SOURCE
                || per_source
                    .values()
                    .any(|p| p.len() > crate::spec::MAX_PARTS)
            {
                break;
            }
        }
        FilterSpec::new(sources, partition, per_source)
    }

    /// The query-parameter form, without a leading `?`; empty for [`FilterSpec::all`].
    /// `FilterSpec::from_query(&spec.to_query()) == Ok(spec)` for every spec whose text fits
    /// [`MAX_QUERY_LEN`].
    pub fn to_query(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for FilterSpec {
    /// Writes [`FilterSpec::to_query`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        if let Some(sources) = self.sources() {
            f.write_str("sources=")?;
            let runs = runs(sources.iter().map(|s| u64::from(s.get())));
            for (i, run) in runs.iter().enumerate() {
                write!(f, "{}{run}", if i > 0 { "," } else { "" })?;
            }
            sep = "&";
        }
        for part in self.partition() {
            write!(f, "{sep}partition={part}")?;
            sep = "&";
        }
        for (source, parts) in self.per_source() {
            for part in parts {
                write!(f, "{sep}partition.{source}={part}")?;
                sep = "&";
            }
        }
        Ok(())
    }
}

impl FromStr for FilterSpec {
    type Err = FilterError;

    /// Parses [`FilterSpec::from_query`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FilterSpec::from_query(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(query: &str) -> String {
        FilterSpec::from_query(query).unwrap_err().to_string()
    }

    #[test]
    fn parses_the_documented_examples() {
        let spec = FilterSpec::from_query("sources=1,2&partition=mod:8:0,2-3").unwrap();
        assert_eq!(spec.sources().unwrap().len(), 2);
        assert_eq!(spec.partition().len(), 1);
        let spec = FilterSpec::from_query("partition=range:1000:0-4").unwrap();
        assert!(spec.sources().is_none());
        let spec = FilterSpec::from_query("?sources=1,2&partition.1=mod:4:1").unwrap();
        assert_eq!(
            spec.key_filter_of(SourceId::new(1))[0].to_string(),
            "mod:4:1"
        );
        assert!(spec.key_filter_of(SourceId::new(2)).is_empty());
        let spec = FilterSpec::from_query("partition=mod:8:0&partition=range:10:3&partition.7=all")
            .unwrap();
        assert_eq!(spec.partition().len(), 2);
        assert_eq!(
            spec.to_query(),
            "partition=mod:8:0&partition=range:10:3&partition.7=all"
        );
        assert!(FilterSpec::from_query("").unwrap().is_all());
        assert!(FilterSpec::from_query("?").unwrap().is_all());
        assert!(FilterSpec::from_query("partition=all").unwrap().is_all());
    }

    #[test]
    fn other_parameters_are_ignored_and_encoded_values_decoded() {
        let spec = FilterSpec::from_query(
            "scn=5&max_bytes=100&&sources=1%2C3-4&partition=mod%3A8%3A1+,+2",
        )
        .unwrap();
        assert_eq!(spec.to_query(), "sources=1,3-4&partition=mod:8:1,2");
        let spec = FilterSpec::from_query("partition%2E2=mod:2:0").unwrap();
        assert_eq!(spec.to_query(), "partition.2=mod:2:0");
    }

    #[test]
    fn to_query_round_trips() {
        for q in [
            "",
            "sources=1",
            "sources=0-3,9,65535",
            "partition=mod:1000000:0-999999",
            "sources=1-2&partition=range:1000:0-4&partition.2=all",
            "partition=mod:4:0&partition=mod:4:3&partition.1=range:1:5&partition.1=mod:2:1",
        ] {
            let spec = FilterSpec::from_query(q).unwrap();
            assert_eq!(spec.to_query(), q);
            assert_eq!(q.parse::<FilterSpec>().unwrap(), spec);
        }
    }

    #[test]
    fn each_bad_query_has_a_clear_message() {
        let cases: &[(&str, &str)] = &[
            (
                "sources=",
                "invalid filter parameter `sources`: empty value; give one, e.g. sources=1,2, or leave sources out",
            ),
            (
                "partition",
                "invalid filter parameter `partition`: empty value; give one, e.g. partition=mod:8:0,2-3, or leave partition out",
            ),
            (
                "sources=1&sources=2",
                "invalid filter parameter `sources`: given more than once; list every source in one sources=1,2,5-7",
            ),
            (
                "sources=70000",
                "invalid filter parameter `sources`: source id 70000 is out of range; source ids are 0 to 65535",
            ),
            (
                "sources=5-2",
                "invalid filter parameter `sources`: source range 5-2 is reversed; write the smaller id first (2-5)",
            ),
            (
                "sources=a",
                "invalid filter parameter `sources`: source id \"a\" is not a number; write a non-negative decimal number",
            ),
            (
                "sources=1,,2",
                "invalid filter parameter `sources`: empty item in source id list \"1,,2\"",
            ),
            (
                "partition=mod:8:9",
                "invalid filter parameter `partition`: bucket 9 is out of range for 8 buckets; buckets are numbered 0 to 7",
            ),
            (
                "partition=mod:0:0",
                "invalid filter parameter `partition`: num_buckets 0 is out of bounds; use mod:<num_buckets>:<buckets> with num_buckets from 1 to 1000000",
            ),
            (
                "partition.x=all",
                "invalid filter parameter `partition.x`: \"x\" is not a source id (0 to 65535); write partition.<source id>, e.g. partition.2=mod:4:1",
            ),
            (
                "partition.70000=all",
                "invalid filter parameter `partition.70000`: \"70000\" is not a source id",
            ),
            (
                "partition.=all",
                "invalid filter parameter `partition.`: \"\" is not a source id",
            ),
            (
                "partition.+1=all",
                "invalid filter parameter `partition. 1`: \" 1\" is not a source id",
            ),
            (
                "partitions=mod:2:0",
                "invalid filter query: unknown filter parameter \"partitions\"; use sources, partition or partition.<source id>",
            ),
            (
                "Source=1",
                "invalid filter query: unknown filter parameter \"Source\"; use sources, partition or partition.<source id>",
            ),
            (
                "sources=1&partition.2=mod:4:1",
                "invalid filter parameter `partition.2`: source 2 is not in sources; add 2 to sources or drop partition.2",
            ),
            (
                "partition=mod%3",
                "invalid filter parameter `partition`: bad percent-encoding in \"mod%3\"; write % as %25",
            ),
            (
                "partition=mod%zz",
                "invalid filter parameter `partition`: bad percent-encoding",
            ),
            (
                "partition=%ff",
                "invalid filter parameter `partition`: \"%ff\" does not decode to UTF-8 text",
            ),
            (
                "part%ition=1",
                "invalid filter query: bad percent-encoding in \"part%ition\"",
            ),
            (
                "partition=all&partition=mod:2:1",
                "invalid filter parameter `partition`: `all` cannot be combined with other partition specs",
            ),
            (
                "partition=hash:2:1",
                "invalid filter parameter `partition`: unknown partition kind \"hash\"; use all, mod:<num_buckets>:<buckets> or range:<range_size>:<ids>, e.g. mod:8:0,2-3",
            ),
        ];
        for (query, want) in cases {
            let got = err(query);
            assert!(
                got.starts_with(want),
                "{query:?}:\n got {got:?}\nwant {want:?}"
            );
        }
    }

    #[test]
    fn absurd_queries_are_bounded() {
        let long = format!("partition=mod:8:{}", "1".repeat(MAX_QUERY_LEN));
        assert_eq!(
            err(&long),
            "invalid filter query: query string is 65552 bytes, over the limit of 65536; send large \
             filters in the JSON form"
        );
        let repeated = "partition=mod:2:0&".repeat(1000);
        assert!(
            err(&repeated).starts_with(
                "invalid filter parameter `partition`: 65 partition specs, over the limit of 64"
            ),
            "{}",
            err(&repeated)
        );
        let long_value = "1".repeat(MAX_QUERY_LEN + 1);
        let e = FilterSpec::from_pairs([("sources", long_value.as_str())]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid filter parameter `sources`: value is 65537 bytes, over the limit of 65536"
        );
        let everything = FilterSpec::from_query("sources=0-65535").unwrap();
        assert_eq!(everything.sources().unwrap().len(), 65536);
        // Overlapping ranges are cheap (a bitmap), and merge.
        let overlapping = format!("sources={}", vec!["0-65535"; 1024].join(","));
        assert_eq!(FilterSpec::from_query(&overlapping).unwrap(), everything);
        let odd = FilterSpec::from_query("sources=63-64,1,130-200,128").unwrap();
        assert_eq!(odd.to_query(), "sources=1,63-64,128,130-200");
    }

    #[test]
    fn from_pairs_reads_decoded_pairs() {
        let spec = FilterSpec::from_pairs(vec![
            ("scn".to_owned(), "9".to_owned()),
            ("sources".to_owned(), "4".to_owned()),
            ("partition.4".to_owned(), "mod:3:2".to_owned()),
        ])
        .unwrap();
        assert_eq!(spec.to_query(), "sources=4&partition.4=mod:3:2");
    }
}
