//! Filter specs from arbitrary query strings and JSON: parsing never panics; a spec that parses formats
//! back to itself, compiles, matches without panicking, and pushes down to SQL with one parameter per
//! placeholder.

#![no_main]

use databus_core::{KeyRef, SourceId};
use databus_filters::{Filter, FilterSpec, SqlColumns};
use libfuzzer_sys::fuzz_target;

fn exercise(spec: &FilterSpec) {
    let query = spec.to_query();
    if query.len() <= databus_filters::MAX_QUERY_LEN {
        let again = FilterSpec::from_query(&query).expect("a formatted spec parses");
        assert_eq!(&again, spec);
    }
    let json = serde_json::to_string(spec).expect("a spec serializes");
    let again: FilterSpec = serde_json::from_str(&json).expect("a serialized spec deserializes");
    assert_eq!(&again, spec);
    let filter = Filter::new(spec);
    for source in [0, 1, 2, 7, u16::MAX] {
        for key in [
            KeyRef::Int(-1),
            KeyRef::Int(0),
            KeyRef::Int(12345),
            KeyRef::Bytes(b"k"),
            KeyRef::None,
        ] {
            let _ = filter.matches_key(SourceId::new(source), key);
        }
    }
    let sql = spec.to_sql(&SqlColumns::DEFAULT);
    assert_eq!(sql.sql.matches('?').count(), sql.params.len());
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(spec) = FilterSpec::from_query(text) {
        exercise(&spec);
    }
    if let Ok(spec) = serde_json::from_str::<FilterSpec>(text) {
        exercise(&spec);
    }
});
