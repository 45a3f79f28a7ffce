//! The bucket function: one hash of a key, the same in the relay, the client and the bootstrap server.
//!
//! # Algorithm (version 1, frozen)
//!
//! 1. Encode the key as bytes. The first byte is the key type, as in the event frame:
//!
//!    | key | encoding |
//!    |-----|----------|
//!    | no key ([`KeyRef::None`]) | `0x00` (1 byte) |
//!    | integer `v` ([`KeyRef::Int`]) | `0x01` followed by `v` as 8 bytes, little-endian two's complement (9 bytes) |
//!    | bytes `b` ([`KeyRef::Bytes`]) | `0x02` followed by `b` unchanged (1 + len bytes) |
//!
//! 2. Hash the encoding with **XXH3-64** (xxHash 0.8, `XXH3_64bits`, which is `XXH3_64bits_withSeed` with
//!    seed 0, the default secret).
//! 3. Shift right by one bit: `key_hash = XXH3_64(encoding) >> 1`. The result is in `0 ..= 2^63 - 1`, so
//!    it is a non-negative SQLite `INTEGER` (signed 64-bit) and a non-negative `i64`/`long` everywhere.
//! 4. The bucket among `n` buckets (`n >= 1`) is `key_hash % n`. Both operands are non-negative, so the
//!    remainder is the same in every language, and in SQL: `bucket_hash % n` over a column holding
//!    `key_hash` gives the same bucket as [`KeyHash::bucket`].
//!
//! Why this design:
//!
//! - *One function for every key type.* Integer keys are hashed rather than taken modulo `n` directly, so
//!   negative keys need no special case (Java Databus used `abs(key) % n` in one place and `key % n` in
//!   another, and they disagreed) and sequential ids spread evenly for any `n`.
//! - *XXH3-64 is specified and everywhere*: a published, frozen algorithm (xxHash >= 0.8.0) with
//!   implementations in C (`libxxhash`), Java, Go, Python (`xxhash.xxh3_64_intdigest`), and others. It is
//!   also among the fastest hashes for the short inputs keys are (a 9-byte integer encoding hashes in a
//!   few nanoseconds), which matters because the relay evaluates it for every event it scans.
//! - *The type byte* keeps an integer key and an 8-byte byte key with the same bytes in different
//!   buckets only by design, not by accident of encoding: the integer `v` and the byte key
//!   `v.to_le_bytes()` are different keys.
//! - *The shift* trades one bit of hash (irrelevant for bucketing) for a value SQL can store and take
//!   the remainder of without sign problems.
//!
//! The test vectors in this module's tests were computed with the reference C library (`libxxhash`
//! 0.8.1) and pin the function: if they ever fail, the change is a breaking change to every stored
//! bootstrap database and every client cluster.

use std::fmt;
use std::num::NonZeroU32;

use databus_core::KeyRef;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::{Xxh3Default, xxh3_64};

/// Key type byte for "no key" in the hash encoding (same value as in the event frame).
const TAG_NONE: u8 = 0x00;
/// Key type byte for integer keys.
const TAG_INT: u8 = 0x01;
/// Key type byte for byte keys.
const TAG_BYTES: u8 = 0x02;

/// Byte keys up to this length are encoded on the stack and hashed in one call; longer ones are
/// streamed. Both give the same hash (XXH3 streaming is defined to equal one-shot hashing).
const INLINE_KEY_LEN: usize = 128;

/// The 63-bit bucket hash of a key (see the [module docs](self) for the exact algorithm).
///
/// Always in `0 ..= i64::MAX`: store it as a SQLite `INTEGER` with [`KeyHash::to_i64`] and compute
/// buckets in SQL as `bucket_hash % n`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "u64", try_from = "u64")]
pub struct KeyHash(u64);

impl From<KeyHash> for u64 {
    fn from(hash: KeyHash) -> u64 {
        hash.0
    }
}

impl TryFrom<u64> for KeyHash {
    type Error = String;

    /// Accepts only values a [`KeyHash`] can have (below `2^63`).
    fn try_from(value: u64) -> Result<Self, Self::Error> {
        i64::try_from(value)
            .ok()
            .and_then(KeyHash::from_i64)
            .ok_or_else(|| {
                format!("key hash {value} is not below 2^63; it was not made by KeyHash::of")
            })
    }
}

impl KeyHash {
    /// Hashes a key.
    #[inline]
    pub fn of(key: KeyRef<'_>) -> KeyHash {
        let raw = match key {
            KeyRef::None => xxh3_64(&[TAG_NONE]),
            KeyRef::Int(v) => {
                let mut enc = [0u8; 9];
                enc[0] = TAG_INT;
                enc[1..].copy_from_slice(&v.to_le_bytes());
                xxh3_64(&enc)
            }
            KeyRef::Bytes(b) if b.len() <= INLINE_KEY_LEN => {
                let mut enc = [0u8; INLINE_KEY_LEN + 1];
                enc[0] = TAG_BYTES;
                enc[1..=b.len()].copy_from_slice(b);
                xxh3_64(&enc[..=b.len()])
            }
            KeyRef::Bytes(b) => {
                let mut hasher = Xxh3Default::new();
                hasher.update(&[TAG_BYTES]);
                hasher.update(b);
                hasher.digest()
            }
        };
        KeyHash(raw >> 1)
    }

    /// Rebuilds a hash read back from storage; `None` if `value` is negative (not a hash this crate made).
    pub const fn from_i64(value: i64) -> Option<KeyHash> {
        if value < 0 {
            None
        } else {
            Some(KeyHash(value as u64))
        }
    }

    /// The hash, in `0 ..= 2^63 - 1`.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The hash as a non-negative `i64`: the value to store in a SQLite `INTEGER` column.
    pub const fn to_i64(self) -> i64 {
        // The shift in `of` clears the top bit, so this never wraps.
        self.0 as i64
    }

    /// The bucket among `num_buckets`: `hash % num_buckets`.
    #[inline]
    pub const fn bucket(self, num_buckets: NonZeroU32) -> u32 {
        // The remainder is below num_buckets, which is a u32.
        (self.0 % num_buckets.get() as u64) as u32
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash({:#018x})", self.0)
    }
}

impl fmt::Display for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// [`KeyHash::bucket`] for one fixed number of buckets, without a division: a compiled filter buckets
/// every event it decides, and a 64-bit division is most of that cost. Barrett reduction with the
/// reciprocal `m = floor((2^64 - 1) / n)`: `q = floor(h * m / 2^64)` is `floor(h / n)` or at most two
/// less (the error of `m` is below `1 + 1/n`, times `h / 2^64 < 1`), so `h - q * n` is the remainder
/// after at most two subtractions of `n`. Exact for every 64-bit `h` (checked against `%` by a
/// property test); one multiplication, where Lemire's `fastmod_u64` takes four.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BucketDivisor {
    n: NonZeroU32,
    /// `u64::MAX / n`.
    m: u64,
}

impl BucketDivisor {
    pub(crate) fn new(n: NonZeroU32) -> BucketDivisor {
        BucketDivisor {
            n,
            m: u64::MAX / u64::from(n.get()),
        }
    }

    /// The number of buckets.
    pub(crate) fn n(&self) -> NonZeroU32 {
        self.n
    }

    /// `hash.bucket(n)`.
    #[inline(always)]
    pub(crate) fn bucket(&self, hash: KeyHash) -> u32 {
        let n = u64::from(self.n.get());
        let q = ((u128::from(hash.0) * u128::from(self.m)) >> 64) as u64;
        let mut r = hash.0 - q * n;
        if r >= n {
            r -= n;
        }
        if r >= n {
            r -= n;
        }
        r as u32
    }
}

/// The bucket of `key` among `num_buckets`: `KeyHash::of(key).bucket(num_buckets)`.
///
/// This is the function MOD filters use; clients that spread keys over workers or cluster members
/// should use it too, so that the relay, the bootstrap server and the client agree on where a key goes.
#[inline]
pub fn bucket_of(key: KeyRef<'_>, num_buckets: NonZeroU32) -> u32 {
    KeyHash::of(key).bucket(num_buckets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(v: u32) -> NonZeroU32 {
        NonZeroU32::new(v).unwrap()
    }

    /// Pinned vectors: (key, XXH3-64 of the encoding, key hash, buckets for n = 2, 8, 1000).
    /// Computed with libxxhash 0.8.1's `XXH3_64bits_withSeed(encoding, len, 0)`. Never edit these.
    #[allow(clippy::type_complexity)]
    fn vectors() -> Vec<(KeyRef<'static>, u64, u64, [u32; 3])> {
        let long: &'static [u8] = Box::leak(
            (0..2)
                .flat_map(|_| 0..=255u8)
                .collect::<Vec<u8>>()
                .into_boxed_slice(),
        );
        vec![
            (
                KeyRef::None,
                0xc44bdff4074eecdb,
                7072322646937400941,
                [1, 5, 941],
            ),
            (
                KeyRef::Int(0),
                0x313c2dd2ec996e80,
                1773880495198484288,
                [0, 0, 288],
            ),
            (
                KeyRef::Int(1),
                0xa048b5cb82162577,
                5774840565028557499,
                [1, 3, 499],
            ),
            (
                KeyRef::Int(-1),
                0x53a5f4bc2fc0168c,
                3013746382698711878,
                [0, 6, 878],
            ),
            (
                KeyRef::Int(42),
                0x3d8e917a3bb2a06c,
                2217821318590058550,
                [0, 6, 550],
            ),
            (
                KeyRef::Int(-42),
                0x20d35cf00370816e,
                1182668207609626807,
                [1, 7, 807],
            ),
            (
                KeyRef::Int(i64::MAX),
                0xba0e0da8d48b9d86,
                6703334079750065859,
                [1, 3, 859],
            ),
            (
                KeyRef::Int(i64::MIN),
                0x6f16315aee313307,
                4002319827155327363,
                [1, 3, 363],
            ),
            (
                KeyRef::Int(1_000_000_007),
                0xd95117046ef72748,
                7829661343576462244,
                [0, 4, 244],
            ),
            (
                KeyRef::Bytes(b""),
                0xc9f42e6c9e93dfff,
                7276153669996376063,
                [1, 7, 63],
            ),
            (
                KeyRef::Bytes(b"a"),
                0x91346750400e332e,
                5231550714329110935,
                [1, 7, 935],
            ),
            (
                KeyRef::Bytes(b"user-17"),
                0xf7233e3dbc487c48,
                8904072893212933668,
                [0, 4, 668],
            ),
            (
                KeyRef::Bytes("h\u{e9}llo".as_bytes()),
                0x22dc34895e515e5b,
                1255970228381724461,
                [1, 5, 461],
            ),
            // 512 bytes: takes the streaming path.
            (
                KeyRef::Bytes(long),
                0x1ac9238b8b7844c6,
                965056498776154723,
                [1, 3, 723],
            ),
        ]
    }

    #[test]
    fn pinned_test_vectors_never_change() {
        for (key, xxh3, hash, buckets) in vectors() {
            assert_eq!(xxh3 >> 1, hash, "vector table is inconsistent for {key}");
            let got = KeyHash::of(key);
            assert_eq!(got.get(), hash, "key hash of {key} changed");
            assert_eq!(got.to_i64(), hash as i64);
            for (count, bucket) in [2, 8, 1000].into_iter().zip(buckets) {
                assert_eq!(
                    got.bucket(n(count)),
                    bucket,
                    "bucket of {key} among {count}"
                );
                assert_eq!(bucket_of(key, n(count)), bucket);
            }
        }
    }

    #[test]
    fn inline_and_streaming_paths_agree_around_the_boundary() {
        let data: Vec<u8> = (0..400u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in [0, 1, 127, 128, 129, 130, 240, 241, 399] {
            let key = &data[..len];
            let mut hasher = Xxh3Default::new();
            hasher.update(&[TAG_BYTES]);
            hasher.update(key);
            assert_eq!(
                KeyHash::of(KeyRef::Bytes(key)).get(),
                hasher.digest() >> 1,
                "len {len}"
            );
        }
    }

    #[test]
    fn hashes_are_non_negative_i64_and_round_trip() {
        for (key, ..) in vectors() {
            let h = KeyHash::of(key);
            assert!(h.to_i64() >= 0);
            assert_eq!(KeyHash::from_i64(h.to_i64()), Some(h));
        }
        assert_eq!(KeyHash::from_i64(-1), None);
        assert_eq!(KeyHash::from_i64(i64::MAX).unwrap().get(), i64::MAX as u64);
    }

    #[test]
    fn serde_keeps_the_63_bit_invariant() {
        let h = KeyHash::of(KeyRef::Int(42));
        assert_eq!(serde_json::to_string(&h).unwrap(), "2217821318590058550");
        assert_eq!(
            serde_json::from_str::<KeyHash>("2217821318590058550").unwrap(),
            h
        );
        let err = serde_json::from_str::<KeyHash>("9223372036854775808").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("key hash 9223372036854775808 is not below 2^63"),
            "{err}"
        );
    }

    #[test]
    fn the_bucket_divisor_is_exact() {
        let hashes = [
            0,
            1,
            2,
            999,
            1 << 32,
            (1 << 32) - 1,
            (1 << 62) + 12345,
            (1 << 63) - 1,
            1 << 63,
        ];
        for n in [
            1,
            2,
            3,
            7,
            10,
            64,
            100,
            1000,
            999_983,
            1_000_000,
            u32::MAX - 1,
            u32::MAX,
        ] {
            let divisor = BucketDivisor::new(super::NonZeroU32::new(n).unwrap());
            assert_eq!(divisor.n().get(), n);
            for h in hashes
                .iter()
                .copied()
                .chain((0..4).map(|k| u64::from(n) * (1 << 20) + k))
            {
                assert_eq!(
                    divisor.bucket(KeyHash(h)),
                    (h % u64::from(n)) as u32,
                    "{h} % {n}"
                );
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn the_bucket_divisor_agrees_with_the_remainder(h in 0u64..=u64::MAX, n in 1u32..=u32::MAX, m in 1u32..=1_000_000) {
            for n in [n, m] {
                let divisor = BucketDivisor::new(super::NonZeroU32::new(n).unwrap());
                proptest::prop_assert_eq!(divisor.bucket(KeyHash(h)), (h % u64::from(n)) as u32);
            }
        }
    }

    #[test]
    fn one_bucket_holds_everything() {
        for (key, ..) in vectors() {
            assert_eq!(bucket_of(key, n(1)), 0);
        }
    }

    #[test]
    fn integer_and_byte_keys_with_the_same_bytes_differ() {
        assert_ne!(
            KeyHash::of(KeyRef::Int(42)),
            KeyHash::of(KeyRef::Bytes(&42i64.to_le_bytes()))
        );
    }

    #[test]
    fn sequential_integer_keys_spread_evenly() {
        let buckets = n(16);
        let mut counts = [0u32; 16];
        for key in 0..16_000i64 {
            counts[bucket_of(KeyRef::Int(key), buckets) as usize] += 1;
        }
        // Expected 1000 per bucket; a binomial standard deviation is about 31, so +-20% is ~6 sigma.
        for (bucket, count) in counts.iter().enumerate() {
            assert!(
                (800..=1200).contains(count),
                "bucket {bucket} got {count} of 16000"
            );
        }
    }
}
