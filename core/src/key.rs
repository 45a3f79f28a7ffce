//! Event keys.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The key of an event: an integer (a single integer primary key) or bytes (anything else, in the
/// documented byte encoding of the primary-key columns).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Key {
    /// An integer key.
    Int(i64),
    /// A byte key.
    Bytes(Vec<u8>),
    /// No key: control events.
    None,
}

/// A borrowed [`Key`], as read from a frame without copying.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyRef<'a> {
    /// An integer key.
    Int(i64),
    /// A byte key.
    Bytes(&'a [u8]),
    /// No key: control events.
    None,
}

impl Key {
    /// Borrows this key.
    pub fn as_ref(&self) -> KeyRef<'_> {
        match self {
            Key::Int(v) => KeyRef::Int(*v),
            Key::Bytes(b) => KeyRef::Bytes(b),
            Key::None => KeyRef::None,
        }
    }
}

impl KeyRef<'_> {
    /// Copies this key into an owned [`Key`].
    pub fn to_owned(self) -> Key {
        match self {
            KeyRef::Int(v) => Key::Int(v),
            KeyRef::Bytes(b) => Key::Bytes(b.to_vec()),
            KeyRef::None => Key::None,
        }
    }
}

impl From<i64> for Key {
    fn from(value: i64) -> Self {
        Key::Int(value)
    }
}

impl From<Vec<u8>> for Key {
    fn from(value: Vec<u8>) -> Self {
        Key::Bytes(value)
    }
}

impl fmt::Display for KeyRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyRef::Int(v) => write!(f, "{v}"),
            KeyRef::Bytes(b) => match std::str::from_utf8(b) {
                Ok(s) => write!(f, "{s:?}"),
                Err(_) => {
                    f.write_str("0x")?;
                    b.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
                }
            },
            KeyRef::None => f.write_str("-"),
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_ref().fmt(f)
    }
}
