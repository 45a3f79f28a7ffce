//! Server-side source and key-partition filters (MOD/RANGE) and the shared bucket function.
//!
//! A consumer asks a relay or a bootstrap server for a subset of the stream: some sources, and within a
//! source some keys. The same subset must come out of the relay's buffer scan, the bootstrap server's
//! SQL and the client's own bookkeeping, so this crate holds all three ends:
//!
//! - [`KeyHash`] / [`bucket_of`]: the one bucket function for integer and byte keys (XXH3-64 over a
//!   documented encoding, shifted to 63 bits so SQL can store it and take `% n`). The exact algorithm is
//!   in the [`hash`] module docs; pinned test vectors keep it from ever changing.
//! - [`FilterSpec`]: what a consumer asks for, parsed from query parameters
//!   ([`FilterSpec::from_query`]) or serde, validated and bounded on the way in.
//! - [`Filter`]: the compiled form; [`Filter::matches`] runs in the relay's buffer scan without
//!   allocating.
//! - [`FilterSpec::to_sql`]: a parameterized SQL `WHERE` expression selecting the same events.
//!
//! # Query syntax
//!
//! ```text
//! sources=1,2,5-7              only these sources (default: every source)
//! partition=mod:8:0,2-3        keys whose bucket among 8 is 0, 2 or 3 (every key type)
//! partition=range:1000:0-4     integer keys 0 <= k < 5000 (ids 0..=4 of ranges of 1000 keys)
//! partition=all                every key (the default)
//! partition.2=mod:4:1          the key filter of source 2, replacing `partition` for it
//! ```
//!
//! Repeating `partition` (or `partition.<source>`) ORs the specs; the source filter and the key filter
//! AND together. Control events (end of window) always pass. RANGE only ever accepts non-negative
//! integer keys: byte keys and keyless events are in no range (split those with MOD). Limits
//! ([`MAX_NUM_BUCKETS`], [`MAX_LIST_ITEMS`], [`MAX_PARTS`], [`MAX_PER_SOURCE`], [`MAX_TOTAL_ITEMS`],
//! [`MAX_QUERY_LEN`]) are enforced with errors that name the parameter and the fix. See the
//! [`query`] module for the details and `docs/filters.md` for the full reference.
//!
//! # Example
//!
//! ```
//! use std::num::NonZeroU32;
//!
//! use databus_core::{KeyRef, SourceId};
//! use databus_filters::{bucket_of, Filter, FilterSpec, KeyHash, SqlColumns};
//!
//! // Member 1 of a 4-member client cluster, for source 1 only; source 2 unfiltered.
//! let spec = FilterSpec::from_query("sources=1,2&partition.1=mod:4:1").unwrap();
//! let filter = Filter::new(&spec);
//! let four = NonZeroU32::new(4).unwrap();
//! let key = KeyRef::Bytes(b"user-17");
//! assert_eq!(filter.matches_key(SourceId::new(1), key), bucket_of(key, four) == 1);
//! assert!(filter.matches_key(SourceId::new(2), key));
//!
//! // The bootstrap server stores KeyHash::of(key).to_i64() and filters in SQL.
//! let hash = KeyHash::of(KeyRef::Int(-42));
//! assert_eq!(hash.to_i64(), 1182668207609626807);
//! let sql = spec.to_sql(&SqlColumns::DEFAULT);
//! assert_eq!(sql.params, vec![1, 4, 1, 2]);
//!
//! // Clients send the spec as JSON.
//! let json = serde_json::to_string(&spec).unwrap();
//! assert_eq!(json, r#"{"sources":[1,2],"per_source":{"1":["mod:4:1"]}}"#);
//! ```

#![forbid(unsafe_code)]

mod error;
mod filter;
pub mod hash;
pub mod query;
pub mod spec;
pub mod sql;

pub use error::FilterError;
pub use filter::{Filter, HashMatcher, OneRun};
pub use hash::{KeyHash, bucket_of};
pub use spec::{
    FilterSpec, IdRange, MAX_LIST_ITEMS, MAX_NUM_BUCKETS, MAX_PARTS, MAX_PER_SOURCE, MAX_QUERY_LEN,
    MAX_TOTAL_ITEMS, ModSpec, PartitionSpec, RangeSpec,
};
pub use sql::{SqlColumns, SqlWhere};

/// `docs/filters.md`: its Rust samples are compiled (and run) as doc tests of this crate.
#[cfg(doctest)]
#[doc = include_str!("../../docs/filters.md")]
pub struct FiltersGuide;
