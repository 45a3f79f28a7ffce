//! What each role reports about itself, so that the server (possibly another process on the same
//! file) can tell on `/health` whether the producer and the applier are doing their job.
//!
//! Each role writes its [`RoleReport`] when its state changes and at least once per
//! [`HEARTBEAT`] while it runs; [`crate::health`] judges the reports.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::BootstrapError;

/// How often a running role rewrites its report (its heartbeat).
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// A role that reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Copies the relay into the log.
    Producer,
    /// Copies the log into the snapshot.
    Applier,
}

impl Role {
    /// Its name, as in reports and commands.
    pub fn name(self) -> &'static str {
        match self {
            Role::Producer => "producer",
            Role::Applier => "applier",
        }
    }
}

/// What a role is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoleState {
    /// Working normally (possibly catching up).
    Running,
    /// Retrying something it cannot fix by itself (the message says what to do); still alive.
    Blocked,
    /// Re-seeding into a new store generation (the log could not be continued); the current
    /// generation is served meanwhile, behind the source.
    Reseeding,
    /// Stopped on a definite error (the message names it and the fix).
    Failed,
    /// Stopped cleanly (shut down).
    Stopped,
}

/// One role's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleReport {
    /// The role.
    pub role: Role,
    /// Its state.
    pub state: RoleState,
    /// Why (for every state but `running`), naming the fix.
    pub message: Option<String>,
    /// When the report was written (Unix ms): a running role's heartbeat.
    pub updated_ms: u64,
    /// When the role entered this state (Unix ms).
    pub since_ms: u64,
    /// The last time the role had nothing left to do (the producer at the relay's newest window, the
    /// applier at the log's last window), Unix ms; `None`: not yet in this state.
    pub caught_up_ms: Option<u64>,
}

/// Where role reports are kept (one per role, the last written wins).
pub trait RoleStore: Send + Sync + std::fmt::Debug {
    /// Records `report`, replacing the role's previous one.
    fn put_role(&self, report: &RoleReport) -> Result<(), BootstrapError>;
    /// Every role's last report, by role.
    fn roles(&self) -> Result<Vec<RoleReport>, BootstrapError>;
}
