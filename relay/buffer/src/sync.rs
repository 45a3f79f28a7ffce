//! The atomics the buffer uses, swapped for loom's under `cfg(loom)` (as tokio's `src/loom/` does) so the
//! publish/evict/read protocol can be model-checked by `tests/loom.rs`.

#[cfg(loom)]
pub(crate) use loom::sync::Arc;
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, AtomicUsize, Ordering, fence};

#[cfg(not(loom))]
pub(crate) use std::sync::Arc;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering, fence};
