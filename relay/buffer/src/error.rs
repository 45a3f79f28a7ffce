//! The buffer's errors: one enum per operation, so a caller matches only what can happen to it.

use databus_core::{FrameError, Scn};

/// A [`BufferConfig`](crate::BufferConfig) that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BufferError {
    /// The configuration is out of range.
    #[error("invalid event buffer config: {0}")]
    InvalidConfig(String),
}

/// Why [`BufferWriter::append`](crate::BufferWriter::append) or
/// [`BufferWriter::end_window`](crate::BufferWriter::end_window) refused an event.
///
/// All of these are definite for the event given: retrying the same call fails the same way. Only
/// [`AppendError::WindowTooLarge`] and [`AppendError::WindowTooManyFrames`] discard the open window (it
/// can never fit); after any other error the
/// open window is as it was before the call, and the caller chooses to fix the event or
/// [`rollback`](crate::BufferWriter::rollback).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// The window would need more bytes than the whole buffer has. The open window was discarded.
    #[error(
        "window {scn} needs at least {window_bytes} bytes but the event buffer holds only {capacity_bytes} bytes; \
         raise the buffer capacity or split the transaction"
    )]
    WindowTooLarge {
        /// The refused window.
        scn: Scn,
        /// Bytes the window spans so far, including the refused event and alignment/wrap padding.
        window_bytes: u64,
        /// The buffer's capacity.
        capacity_bytes: u64,
    },
    /// The window would need more side index entries (one per frame, its end marker included) than the
    /// side index holds. The open window was discarded.
    #[error(
        "window {scn} needs at least {frames} frames but the event buffer's side index holds only {entries}; \
         raise the buffer capacity or split the transaction"
    )]
    WindowTooManyFrames {
        /// The refused window.
        scn: Scn,
        /// Frames the window needs so far: its events, the refused one and its end marker.
        frames: u64,
        /// Entries of the side index.
        entries: u64,
    },
    /// A new window whose SCN is not greater than the last window's.
    #[error(
        "window SCN {got} is not after the last window {last}; SCNs must increase from window to window"
    )]
    ScnRegression {
        /// The last window written (0 before the first).
        last: Scn,
        /// The SCN given.
        got: Scn,
    },
    /// A window opened in a buffer that awaits its origin ([`BufferWriter::anchor`](crate::BufferWriter::anchor)).
    #[error(
        "window {scn} cannot be published before the buffer is anchored; call anchor with the SCN the stream continues from"
    )]
    NotAnchored {
        /// The refused window.
        scn: Scn,
    },
    /// [`BufferWriter::anchor`](crate::BufferWriter::anchor) after a window was published or opened.
    #[error("the buffer cannot be re-anchored: window {last} is already written")]
    AlreadyPublished {
        /// The last window published or open.
        last: Scn,
    },
    /// An event or end marker whose SCN differs from the open window's.
    #[error("window {open} is open but got SCN {got}; end or roll back window {open} first")]
    ScnMismatch {
        /// The open window.
        open: Scn,
        /// The SCN given.
        got: Scn,
    },
    /// A control event given to `append`.
    #[error("append takes data events only; close a window with end_window")]
    ControlEvent,
    /// More events in one window than a checkpoint offset can count.
    #[error("window {scn} has {max} events, the most one window may hold; split the transaction")]
    TooManyEvents {
        /// The open window.
        scn: Scn,
        /// The limit.
        max: u32,
    },
    /// The event does not fit the frame format.
    #[error("event cannot be framed: {0}")]
    Frame(#[from] FrameError),
}

/// Why [`EventBuffer::read`](crate::EventBuffer::read) returned no events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// Events after the checkpoint are no longer in the buffer (they were evicted, or were evicted while
    /// this reader copied them). Definite for this relay: the client must bootstrap.
    #[error(
        "SCN {requested} is no longer in the event buffer (buffer holds {}..={} after prev_scn {}); \
         the consumer must bootstrap",
        fmt_opt(.min_scn), fmt_opt(.max_scn), fmt_opt(.prev_scn)
    )]
    ScnNotFound {
        /// The checkpoint's window SCN.
        requested: Scn,
        /// The oldest window held, `None` when empty.
        min_scn: Option<Scn>,
        /// The newest window held, `None` when empty.
        max_scn: Option<Scn>,
        /// The last evicted window, `None` if nothing was ever evicted.
        prev_scn: Option<Scn>,
    },
    /// The buffer has no origin yet (it awaits [`BufferWriter::anchor`](crate::BufferWriter::anchor)): it
    /// can neither serve nor refuse a checkpoint. Transient: retry later, or ask another relay.
    #[error("the event buffer has no origin yet (its source is not positioned); retry shortly")]
    NotAnchored,
    /// The writer overtook this reader on every one of several attempts without the checkpoint falling
    /// out of the buffer. Transient: retry; if it persists the buffer is too small for the write rate.
    #[error(
        "overtaken by the writer {attempts} times in a row; retry, or enlarge the event buffer"
    )]
    Overtaken {
        /// Attempts made.
        attempts: u32,
    },
    /// Bytes inside the published range that are not a frame although the writer did not overtake the
    /// reader: a bug in this crate, never expected.
    #[error(
        "event buffer corrupt at position {position}: {reason}; this is a bug, please report it"
    )]
    Corrupt {
        /// Logical position of the bad frame.
        position: u64,
        /// What is wrong.
        reason: String,
    },
}

fn fmt_opt(scn: &Option<Scn>) -> String {
    scn.map_or_else(|| "none".to_owned(), |s| s.to_string())
}
