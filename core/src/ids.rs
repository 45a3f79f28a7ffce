//! Newtypes for the domain numbers that travel through every signature.

use std::fmt;
use std::num::ParseIntError;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The error returned when an id or SCN does not parse from text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {input:?}: {source}")]
pub struct ParseIdError {
    what: &'static str,
    input: String,
    #[source]
    source: ParseIntError,
}

macro_rules! id_newtype {
    ($(#[$meta:meta])* $name:ident($inner:ty), $what:literal) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name($inner);

        impl $name {
            /// Wraps a raw value.
            pub const fn new(value: $inner) -> Self {
                Self(value)
            }

            /// The raw value.
            pub const fn get(self) -> $inner {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.trim().parse::<$inner>().map(Self).map_err(|source| ParseIdError {
                    what: $what,
                    input: s.to_owned(),
                    source,
                })
            }
        }

        impl From<$inner> for $name {
            fn from(value: $inner) -> Self {
                Self(value)
            }
        }
    };
}

id_newtype!(
    /// System change number: the commit sequence number of a source transaction.
    ///
    /// SCNs only grow along a stream; every event of one window carries its window's SCN. They are sparse:
    /// a reader asking for an SCN that never existed continues at the next window after it.
    Scn(u64),
    "SCN"
);

id_newtype!(
    /// Identifies a logical source (usually one captured table) inside a relay.
    SourceId(u16),
    "source id"
);

id_newtype!(
    /// Identifies a physical partition of a source (e.g. a database shard).
    PartitionId(u16),
    "partition id"
);

id_newtype!(
    /// Identifies an Avro writer schema: the 64-bit Rabin fingerprint (CRC-64-AVRO) of its canonical
    /// form (Avro's parsing canonical form keeping logical types and `databus.*` attributes; see
    /// `databus_serde_formats::fingerprint`). Control events carry [`SchemaId::NONE`].
    SchemaId(u64),
    "schema id"
);

impl Scn {
    /// The SCN before every real transaction: "from the beginning".
    pub const ZERO: Scn = Scn(0);

    /// The largest SCN.
    pub const MAX: Scn = Scn(u64::MAX);
}

impl SchemaId {
    /// No schema: control events and events without a payload.
    pub const NONE: SchemaId = SchemaId(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scn_orders_and_round_trips_through_text_and_json() {
        assert!(Scn::new(1) < Scn::new(2));
        assert_eq!("42".parse::<Scn>().unwrap(), Scn::new(42));
        assert_eq!(Scn::new(42).to_string(), "42");
        assert_eq!(serde_json::to_string(&Scn::new(9)).unwrap(), "9");
        assert_eq!(serde_json::from_str::<Scn>("9").unwrap(), Scn::new(9));
    }

    #[test]
    fn bad_text_is_a_clear_error() {
        let err = "-3".parse::<Scn>().unwrap_err();
        assert!(err.to_string().starts_with("invalid SCN \"-3\""), "{err}");
        let err = "70000".parse::<SourceId>().unwrap_err();
        assert!(err.to_string().contains("source id"), "{err}");
    }
}
