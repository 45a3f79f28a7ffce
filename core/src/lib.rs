//! Shared vocabulary of databus-rs.
//!
//! Every other crate speaks in these types:
//!
//! - [`Scn`], [`SourceId`], [`PartitionId`], [`SchemaId`]: newtypes for the numbers that travel everywhere.
//! - [`Key`] / [`KeyRef`]: an event's key, an integer or bytes.
//! - [`Opcode`]: upsert, delete, a table event (truncate, schema change: [`table_event`]) or a control
//!   event such as the end of a window.
//! - [`frame`]: the versioned binary event frame, read as a zero-copy [`EventView`] and written by an
//!   [`EventBuilder`]. Decoding arbitrary bytes never panics.
//! - [`Event`]: an owned event, for tests, clients and anything that is not on the hot path.
//! - [`Checkpoint`]: where a consumer is in the stream, persisted as versioned JSON.
//!
//! A *window* is one source transaction: all its events carry the transaction's SCN and an end-of-window
//! control event closes it. A window holding only its end marker is a heartbeat.
//!
//! ```
//! use databus_core::{EventBuilder, EventView, Key, Opcode, Scn, SourceId};
//!
//! let mut buf = Vec::new();
//! EventBuilder::new(Scn::new(7), Opcode::Upsert)
//!     .source(SourceId::new(1))
//!     .key(Key::Int(42).as_ref())
//!     .payload(b"avro bytes")
//!     .write_to_vec(&mut buf);
//! let (view, used) = EventView::parse(&buf).unwrap();
//! assert_eq!(used, buf.len());
//! assert_eq!(view.scn(), Scn::new(7));
//! assert_eq!(view.payload(), b"avro bytes");
//! ```

#![forbid(unsafe_code)]

pub mod checkpoint;
pub mod event;
pub mod frame;
mod ids;
pub mod json;
mod key;
pub mod table_event;

pub use checkpoint::{BootstrapProgress, Checkpoint, CheckpointError, ConsumptionMode};
pub use event::{ControlKind, Event, Opcode};
pub use frame::{EventBuilder, EventView, FrameError, FrameHeader};
pub use ids::{ParseIdError, PartitionId, SchemaId, Scn, SourceId};
pub use key::{Key, KeyRef};
pub use table_event::{TableChange, TableChangeCause, TableChangeError};
