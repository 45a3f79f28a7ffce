//! The in-memory store: the reference implementation (plain maps, filters evaluated in memory with
//! [`databus_filters::Filter`]). Used by tests as the model the SQLite store must agree with.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use databus_core::{Key, Opcode, Scn, SourceId};
use databus_filters::{Filter, FilterSpec};

use super::{
    LogRow, LogStatus, LogStore, LogWindow, SeedProgress, SeedWrite, SnapshotQuery, SnapshotRow,
    SnapshotStatus, SnapshotStore, SourceInfo, StoredEvent, StoredSchema, TrimOutcome, WindowInfo,
    take_bytes,
};
use crate::BootstrapError;

#[derive(Debug, Default)]
struct Inner {
    floor: Option<Scn>,
    windows: BTreeMap<Scn, WindowInfo>,
    events: BTreeMap<u64, StoredEvent>,
    /// Bytes of the frames the log holds (kept by append and trim: a status sums nothing).
    log_bytes: u64,
    next_seq: u64,
    /// Start SCN -> (expiry, deadline), Unix ms.
    pins: BTreeMap<Scn, (u64, u64)>,
    sources: BTreeMap<SourceId, String>,
    rows: BTreeMap<u64, (StoredEvent, bool)>,
    by_key: HashMap<(SourceId, Key), u64>,
    next_row: u64,
    applied: Option<Scn>,
    base: Option<Scn>,
    seeded: bool,
    seed: Option<SeedProgress>,
    schemas: BTreeMap<databus_core::SchemaId, StoredSchema>,
    roles: BTreeMap<super::Role, super::RoleReport>,
}

impl Inner {
    /// The SCN of `source`'s truncate marker (its row with no key).
    fn marker(&self, source: SourceId) -> Option<Scn> {
        self.by_key
            .get(&(source, Key::None))
            .map(|row| self.rows[row].0.scn)
    }

    fn upsert(&mut self, events: &[StoredEvent]) {
        for e in events {
            if e.opcode == Opcode::SchemaChange {
                continue;
            }
            if self.marker(e.source).is_some_and(|m| e.scn < m) {
                continue; // older than the source's last truncate
            }
            if e.opcode == Opcode::Truncate {
                let gone: Vec<u64> = self
                    .rows
                    .iter()
                    .filter(|(_, (r, _))| r.source == e.source && r.scn <= e.scn)
                    .map(|(&row, _)| row)
                    .collect();
                for row in gone {
                    if let Some((r, _)) = self.rows.remove(&row) {
                        self.by_key.remove(&(r.source, r.key));
                    }
                }
            }
            let key = (e.source, e.key.clone());
            let deleted = !e.opcode.writes_row();
            match self.by_key.get(&key) {
                Some(&row) => {
                    let slot = self.rows.get_mut(&row).expect("indexed row exists");
                    if e.scn >= slot.0.scn {
                        *slot = (e.clone(), deleted);
                    }
                }
                None => {
                    self.next_row += 1;
                    self.rows.insert(self.next_row, (e.clone(), deleted));
                    self.by_key.insert(key, self.next_row);
                }
            }
        }
    }
}

/// Both stores in memory. See the [module docs](self).
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Inner) -> Result<T, BootstrapError>,
    ) -> Result<T, BootstrapError> {
        let mut inner = self
            .inner
            .lock()
            .map_err(|_| BootstrapError::Storage("memory store poisoned".into()))?;
        f(&mut inner)
    }
}

impl LogStore for MemoryStore {
    fn start_log(&self, floor: Scn) -> Result<(), BootstrapError> {
        self.with(|i| {
            i.floor.get_or_insert(floor);
            Ok(())
        })
    }

    fn append(&self, windows: &[LogWindow]) -> Result<(), BootstrapError> {
        self.with(|i| {
            let Some(floor) = i.floor else {
                return Err(BootstrapError::LogNotStarted);
            };
            // Check everything first: a refused append changes nothing.
            let mut last = i.windows.keys().next_back().copied().unwrap_or(floor);
            for w in windows {
                if w.scn <= last || w.scn.get() > i64::MAX as u64 {
                    return Err(BootstrapError::ScnRegression { last, got: w.scn });
                }
                if let Some(e) = w.events.iter().find(|e| e.scn != w.scn) {
                    return Err(BootstrapError::Corrupt(format!(
                        "event of SCN {} inside window {}",
                        e.scn, w.scn
                    )));
                }
                last = w.scn;
            }
            if i.next_seq == 0 {
                i.next_seq = 1;
            }
            for w in windows {
                let first_seq = i.next_seq;
                let mut bytes = 0;
                for e in &w.events {
                    bytes += e.frame.len() as u64;
                    i.events.insert(i.next_seq, e.clone());
                    i.next_seq += 1;
                }
                i.log_bytes += bytes;
                i.windows.insert(
                    w.scn,
                    WindowInfo {
                        scn: w.scn,
                        timestamp_ns: w.timestamp_ns,
                        first_seq,
                        events: w.events.len() as u32,
                        bytes,
                    },
                );
            }
            Ok(())
        })
    }

    fn log_status(&self) -> Result<LogStatus, BootstrapError> {
        self.with(|i| {
            Ok(LogStatus {
                floor_scn: i.floor,
                first_scn: i.windows.keys().next().copied(),
                last_scn: i.windows.keys().next_back().copied().or(i.floor),
                windows: i.windows.len() as u64,
                events: i.events.len() as u64,
                bytes: i.log_bytes,
            })
        })
    }

    fn windows(
        &self,
        after: Scn,
        upto: Scn,
        limit: usize,
    ) -> Result<Vec<WindowInfo>, BootstrapError> {
        self.with(|i| {
            if after >= upto {
                return Ok(Vec::new());
            }
            Ok(i.windows
                .range((
                    std::ops::Bound::Excluded(after),
                    std::ops::Bound::Included(upto),
                ))
                .take(limit)
                .map(|(_, w)| *w)
                .collect())
        })
    }

    fn events(
        &self,
        first_seq: u64,
        last_seq: u64,
        filter: &FilterSpec,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<LogRow>, BootstrapError> {
        let filter = Filter::new(filter);
        self.with(|i| {
            if first_seq > last_seq {
                return Ok(Vec::new());
            }
            let rows = i
                .events
                .range(first_seq..=last_seq)
                .filter(|(_, e)| filter.matches_opcode(e.opcode, e.source, e.key.as_ref()))
                .take(limit)
                .map(|(&seq, e)| {
                    Ok::<_, BootstrapError>(LogRow {
                        seq,
                        frame: e.frame.clone(),
                    })
                });
            take_bytes(rows, max_bytes, |r| r.frame.len())
        })
    }

    fn trim(&self, upto: Scn, max_windows: usize) -> Result<TrimOutcome, BootstrapError> {
        self.with(|i| {
            let doomed: Vec<WindowInfo> = i
                .windows
                .range(..=upto)
                .take(max_windows)
                .map(|(_, w)| *w)
                .collect();
            let mut out = TrimOutcome::default();
            for w in &doomed {
                i.windows.remove(&w.scn);
                i.log_bytes -= w.bytes;
                for seq in w.first_seq..w.first_seq + u64::from(w.events) {
                    i.events.remove(&seq);
                }
                out.windows += 1;
                out.events += u64::from(w.events);
            }
            if let Some(last) = doomed.last() {
                i.floor = Some(i.floor.map_or(last.scn, |f| f.max(last.scn)));
            }
            Ok(out)
        })
    }

    fn trim_point_for_bytes(&self, max_bytes: u64) -> Result<Option<Scn>, BootstrapError> {
        self.with(|i| {
            let mut tail = 0u64;
            for (scn, w) in i.windows.iter().rev() {
                tail += w.bytes;
                if tail > max_bytes {
                    return Ok(Some(*scn));
                }
            }
            Ok(None)
        })
    }

    fn last_window_before(&self, timestamp_ns: u64) -> Result<Option<Scn>, BootstrapError> {
        self.with(|i| {
            Ok(i.windows
                .values()
                .filter(|w| w.timestamp_ns <= timestamp_ns)
                .map(|w| w.scn)
                .max())
        })
    }

    fn pin_until(
        &self,
        start_scn: Scn,
        expires_ms: u64,
        deadline_ms: u64,
    ) -> Result<(), BootstrapError> {
        self.with(|i| {
            let e = i.pins.entry(start_scn).or_insert((expires_ms, deadline_ms));
            e.0 = e.0.max(expires_ms);
            Ok(())
        })
    }

    fn min_pin(&self, now_ms: u64) -> Result<Option<Scn>, BootstrapError> {
        self.with(|i| {
            i.pins.retain(|_, &mut (exp, _)| exp >= now_ms);
            Ok(i.pins
                .iter()
                .find(|(_, (_, deadline))| *deadline > now_ms)
                .map(|(&s, _)| s))
        })
    }

    fn pins(&self, now_ms: u64) -> Result<Vec<(Scn, u64)>, BootstrapError> {
        self.with(|i| {
            i.pins.retain(|_, &mut (exp, _)| exp >= now_ms);
            Ok(i.pins
                .iter()
                .filter(|(_, (_, deadline))| *deadline > now_ms)
                .map(|(&s, &(e, _))| (s, e))
                .collect())
        })
    }

    fn drop_pins(&self) -> Result<u64, BootstrapError> {
        self.with(|i| {
            let n = i.pins.len() as u64;
            i.pins.clear();
            Ok(n)
        })
    }

    fn set_sources(&self, sources: &[SourceInfo]) -> Result<(), BootstrapError> {
        self.with(|i| {
            for s in sources {
                i.sources.insert(s.id, s.name.clone());
            }
            Ok(())
        })
    }

    fn sources(&self) -> Result<Vec<SourceInfo>, BootstrapError> {
        self.with(|i| {
            Ok(i.sources
                .iter()
                .map(|(&id, name)| SourceInfo {
                    id,
                    name: name.clone(),
                })
                .collect())
        })
    }
}

impl SnapshotStore for MemoryStore {
    fn snapshot_status(&self) -> Result<SnapshotStatus, BootstrapError> {
        self.with(|i| {
            Ok(SnapshotStatus {
                applied_scn: i.applied,
                base_scn: i.base,
                rows: i.rows.len() as u64,
                seeded: i.seeded,
            })
        })
    }

    fn init_base(&self, base: Scn) -> Result<(), BootstrapError> {
        self.with(|i| {
            i.base.get_or_insert(base);
            Ok(())
        })
    }

    fn apply(&self, events: &[StoredEvent], applied_scn: Scn) -> Result<(), BootstrapError> {
        self.with(|i| {
            i.upsert(events);
            i.applied = Some(i.applied.map_or(applied_scn, |a| a.max(applied_scn)));
            Ok(())
        })
    }

    fn read(&self, q: &SnapshotQuery<'_>) -> Result<Vec<SnapshotRow>, BootstrapError> {
        let filter = Filter::new(q.filter);
        self.with(|i| {
            let rows = i
                .rows
                .range(q.after_row.saturating_add(1)..)
                .filter(|(_, (e, deleted))| {
                    e.source == q.source
                        && q.since.is_none_or(|s| e.scn > s)
                        && (q.tombstones || !deleted)
                        && filter.matches_opcode(e.opcode, e.source, e.key.as_ref())
                })
                .take(q.limit)
                .map(|(&row_id, (e, _))| {
                    Ok::<_, BootstrapError>(SnapshotRow {
                        row_id,
                        scn: e.scn,
                        frame: e.frame.clone(),
                    })
                });
            take_bytes(rows, q.max_bytes, |r| r.frame.len())
        })
    }

    fn seed_chunk(
        &self,
        events: &[StoredEvent],
        progress: &SeedProgress,
    ) -> Result<(), BootstrapError> {
        self.seed_chunk_with(events, progress, SeedWrite::Upsert)
    }

    fn seed_chunk_with(
        &self,
        events: &[StoredEvent],
        progress: &SeedProgress,
        write: SeedWrite,
    ) -> Result<(), BootstrapError> {
        self.with(|i| {
            if write == SeedWrite::Fresh {
                let mut seen = std::collections::BTreeSet::new();
                for e in events {
                    if i.by_key.contains_key(&(e.source, e.key.clone()))
                        || !seen.insert((e.source, &e.key))
                    {
                        return Err(BootstrapError::Storage(format!(
                            "fresh seed row for key {:?} of source {} is already stored",
                            e.key, e.source
                        )));
                    }
                }
            }
            i.upsert(events);
            i.seed = Some(progress.clone());
            Ok(())
        })
    }

    fn seed_progress(&self) -> Result<Option<SeedProgress>, BootstrapError> {
        self.with(|i| Ok(i.seed.clone()))
    }

    fn finish_seed(&self, scn: Scn) -> Result<(), BootstrapError> {
        self.with(|i| {
            i.applied = Some(i.applied.map_or(scn, |a| a.max(scn)));
            i.base = Some(scn);
            i.seeded = true;
            i.seed = None;
            Ok(())
        })
    }

    fn put_schema(&self, schema: &StoredSchema) -> Result<(), BootstrapError> {
        self.with(|i| {
            i.schemas.insert(schema.id, schema.clone());
            Ok(())
        })
    }

    fn schema(&self, id: databus_core::SchemaId) -> Result<Option<StoredSchema>, BootstrapError> {
        self.with(|i| Ok(i.schemas.get(&id).cloned()))
    }
}

impl super::RoleStore for MemoryStore {
    fn put_role(&self, report: &super::RoleReport) -> Result<(), BootstrapError> {
        self.with(|i| {
            i.roles.insert(report.role, report.clone());
            Ok(())
        })
    }

    fn roles(&self) -> Result<Vec<super::RoleReport>, BootstrapError> {
        self.with(|i| Ok(i.roles.values().cloned().collect()))
    }
}
