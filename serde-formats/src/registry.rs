//! The schema registry: every version of every captured table's schema, by id and by table.
//!
//! [`SchemaRegistry::register`] maps a [`TableSchema`] to Avro, computes its [`SchemaId`] and, the first
//! time it sees that id, gives it the next version number of its table (`database.table`, starting at 1)
//! and persists it. Registering is idempotent: the same table schema always gets the same id and version
//! back — also a schema identical to an older version (an ALTER that was reverted) gets that older
//! version back rather than a new one. Any change of the table schema (a column added, dropped, renamed,
//! retyped, made nullable, a primary-key change, a new ENUM value) gives a new id and version.
//!
//! # Files
//!
//! A registry opened with [`SchemaRegistry::open`] keeps one JSON file per schema version in its
//! directory, named `<database>.<table>.v<version>.<id as 16 hex digits>.json` (names sanitized):
//!
//! ```json
//! {"format": 1, "id": 1234567890123, "version": 2,
//!  "table": { …the TableSchema… }, "avro": { …the Avro schema… }}
//! ```
//!
//! Files are written atomically (a temporary file in the same directory, fsync, rename, fsync of the
//! directory), never changed afterwards, and all read back on open, so every historical version still
//! decodes after a restart. A file that does not parse, whose id does not match its schemas, or whose
//! version clashes with another file is an [`Error::CorruptSchemaFile`] naming it. Other files (not
//! ending in `.json`, or starting with `.`) are ignored.
//!
//! # Concurrency
//!
//! Lookups take a read lock and clone `Arc`s; registration prepares the schema and encoder outside any
//! lock, serializes writers on a mutex while the file is written, and takes the write lock only to insert.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use apache_avro::Schema;
use databus_core::SchemaId;
use serde::{Deserialize, Serialize};

use crate::avro_schema::{avro_schema_json, sanitize_name};
use crate::encode::RowEncoder;
use crate::error::{Error, Result};
use crate::fingerprint::schema_id;
use crate::model::TableSchema;

const FORMAT: u32 = 1;

/// One registered schema version.
#[derive(Debug, Clone)]
pub struct RegisteredSchema {
    /// The schema id (fingerprint of the Avro schema).
    pub id: SchemaId,
    /// The version of the table's schema, from 1.
    pub version: u32,
    /// The Avro writer schema.
    pub avro: Arc<Schema>,
    /// The Avro schema as JSON text (with logical types and `databus.*` attributes), for serving it.
    pub avro_json: Arc<str>,
    /// The compiled encoder.
    pub encoder: Arc<RowEncoder>,
    /// The table schema.
    pub table: Arc<TableSchema>,
}

impl RegisteredSchema {
    /// Appends the Avro binary datum of `row` to `out` (see [`RowEncoder::encode`]).
    pub fn encode(&self, row: &[crate::model::Value], out: &mut Vec<u8>) -> Result<()> {
        self.encoder.encode(row, out)
    }

    /// Decodes a payload written with this schema into JSON for humans (see [`crate::decode`]).
    pub fn decode_json(&self, payload: &[u8]) -> Result<serde_json::Value> {
        crate::decode::decode_json(payload, &self.avro, None)
    }

    /// Decodes a payload written with this schema, resolved to `reader` when given.
    pub fn decode_value(
        &self,
        payload: &[u8],
        reader: Option<&Schema>,
    ) -> Result<apache_avro::types::Value> {
        crate::decode::decode_value(payload, &self.avro, reader)
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SchemaFile {
    format: u32,
    id: SchemaId,
    version: u32,
    table: TableSchema,
    avro: serde_json::Value,
}

#[derive(Debug, Default)]
struct Inner {
    by_id: HashMap<SchemaId, RegisteredSchema>,
    /// `database.table` -> versions in order.
    by_table: BTreeMap<(String, String), Vec<RegisteredSchema>>,
    /// Table schema -> id: lets `register` skip the mapping for a schema it has seen.
    by_schema: HashMap<Arc<TableSchema>, SchemaId>,
    /// `Arc` address -> (that `Arc`, id): the [`SchemaRegistry::register_shared`] fast path. Holding the
    /// `Arc` keeps its allocation alive, so no other schema can be allocated at a cached address.
    by_pointer: HashMap<usize, (Arc<TableSchema>, SchemaId)>,
}

/// At most this many `Arc`s are held by the pointer cache; it is cleared when full (a connector makes a
/// new `Arc` per table map it derives, e.g. after each reconnect).
const MAX_POINTERS: usize = 4096;

impl Inner {
    fn insert(&mut self, registered: RegisteredSchema) {
        self.by_schema
            .insert(Arc::clone(&registered.table), registered.id);
        self.by_table
            .entry((
                registered.table.database.clone(),
                registered.table.table.clone(),
            ))
            .or_default()
            .push(registered.clone());
        self.by_id.insert(registered.id, registered);
    }
}

/// A thread-safe, optionally persistent registry of table schema versions.
///
/// ```
/// use databus_serde_formats::{Column, ColumnType, TableSchema};
/// use databus_serde_formats::registry::SchemaRegistry;
///
/// let registry = SchemaRegistry::in_memory();
/// let mut table = TableSchema {
///     database: "shop".into(),
///     table: "orders".into(),
///     columns: vec![Column::new("id", ColumnType::BigInt { unsigned: false }, false)],
///     primary_key: vec![0],
/// };
/// let v1 = registry.register(&table).unwrap();
/// assert_eq!(v1.version, 1);
/// assert_eq!(registry.register(&table).unwrap().id, v1.id);
/// table.columns.push(Column::new("note", ColumnType::Text { max_chars: None }, true));
/// let v2 = registry.register(&table).unwrap();
/// assert_eq!(v2.version, 2);
/// assert_eq!(registry.get(v1.id).unwrap().version, 1);
/// assert_eq!(registry.versions("shop", "orders").len(), 2);
/// ```
#[derive(Debug)]
pub struct SchemaRegistry {
    dir: Option<PathBuf>,
    inner: RwLock<Inner>,
    writer: Mutex<()>,
    temp_counter: AtomicU64,
}

struct Prepared {
    id: SchemaId,
    avro: Arc<Schema>,
    avro_json: serde_json::Value,
    encoder: Arc<RowEncoder>,
    table: Arc<TableSchema>,
}

fn prepare(table: &TableSchema) -> Result<Prepared> {
    let avro_json = avro_schema_json(table)?;
    let avro = Schema::parse(&avro_json).map_err(|e| {
        Error::avro(
            format!("mapping table {} to an avro schema", table.qualified_name()),
            e,
        )
    })?;
    Ok(Prepared {
        id: schema_id(&avro)?,
        avro: Arc::new(avro),
        avro_json,
        encoder: Arc::new(RowEncoder::new(table)?),
        table: Arc::new(table.clone()),
    })
}

impl SchemaRegistry {
    /// A registry that keeps nothing on disk (tests, clients that fetch schemas from a relay).
    pub fn in_memory() -> Self {
        SchemaRegistry {
            dir: None,
            inner: RwLock::new(Inner::default()),
            writer: Mutex::new(()),
            temp_counter: AtomicU64::new(0),
        }
    }

    /// Opens (creating it if needed) the registry persisted in `dir` and loads every version in it.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(|source| Error::Io {
            op: "create directory",
            path: dir.clone(),
            source,
        })?;
        let entries = fs::read_dir(&dir).map_err(|source| Error::Io {
            op: "list directory",
            path: dir.clone(),
            source,
        })?;
        let mut paths = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| Error::Io {
                op: "list directory",
                path: dir.clone(),
                source,
            })?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".json") && !name.starts_with('.') {
                paths.push(entry.path());
            }
        }
        paths.sort();
        let mut inner = Inner::default();
        for path in paths {
            let registered = load_file(&path)?;
            let corrupt = |reason: String| Error::CorruptSchemaFile {
                path: path.clone(),
                reason,
            };
            if inner.by_id.contains_key(&registered.id) {
                return Err(corrupt(format!(
                    "schema id {} is also in another file",
                    registered.id
                )));
            }
            let clash = inner
                .by_table
                .get(&(
                    registered.table.database.clone(),
                    registered.table.table.clone(),
                ))
                .is_some_and(|versions| versions.iter().any(|v| v.version == registered.version));
            if clash {
                return Err(corrupt(format!(
                    "version {} of {} is also in another file",
                    registered.version,
                    registered.table.qualified_name()
                )));
            }
            inner.insert(registered);
        }
        for versions in inner.by_table.values_mut() {
            versions.sort_by_key(|v| v.version);
        }
        Ok(SchemaRegistry {
            dir: Some(dir),
            inner: RwLock::new(inner),
            writer: Mutex::new(()),
            temp_counter: AtomicU64::new(0),
        })
    }

    /// Registers `table` (see the module docs): returns the existing registration of an identical
    /// schema, or assigns the table's next version and persists it.
    pub fn register(&self, table: &TableSchema) -> Result<RegisteredSchema> {
        {
            // Fast path: a schema seen before (callers may register once per row).
            let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(found) = inner
                .by_schema
                .get(table)
                .and_then(|id| inner.by_id.get(id))
            {
                return Ok(found.clone());
            }
        }
        let prepared = prepare(table)?;
        if let Some(found) = self.existing(&prepared)? {
            return Ok(found);
        }
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = self.existing(&prepared)? {
            return Ok(found);
        }
        let version = {
            let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
            inner
                .by_table
                .get(&(table.database.clone(), table.table.clone()))
                .and_then(|versions| versions.last())
                .map_or(Some(1), |last| last.version.checked_add(1))
        };
        let version = version.ok_or_else(|| Error::InvalidSchema {
            table: table.qualified_name(),
            reason: "has u32::MAX schema versions already; no version number is left".to_owned(),
        })?;
        let avro_json: Arc<str> = prepared.avro_json.to_string().into();
        if let Some(dir) = &self.dir {
            let file = SchemaFile {
                format: FORMAT,
                id: prepared.id,
                version,
                table: table.clone(),
                avro: prepared.avro_json,
            };
            self.write_file(dir, &file)?;
        }
        let registered = RegisteredSchema {
            id: prepared.id,
            version,
            avro: prepared.avro,
            avro_json,
            encoder: prepared.encoder,
            table: prepared.table,
        };
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        inner.insert(registered.clone());
        Ok(registered)
    }

    /// [`register`](Self::register) for callers holding the schema in an `Arc` (a connector's row
    /// changes share one per table version): a schema registered through the same `Arc` before is found
    /// by its address, without hashing or comparing the schema.
    pub fn register_shared(&self, table: &Arc<TableSchema>) -> Result<RegisteredSchema> {
        let address = Arc::as_ptr(table) as usize;
        {
            let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(found) = inner
                .by_pointer
                .get(&address)
                .and_then(|(_, id)| inner.by_id.get(id))
            {
                return Ok(found.clone());
            }
        }
        let registered = self.register(table)?;
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if inner.by_pointer.len() >= MAX_POINTERS {
            inner.by_pointer.clear();
        }
        inner
            .by_pointer
            .insert(address, (Arc::clone(table), registered.id));
        Ok(registered)
    }

    fn existing(&self, prepared: &Prepared) -> Result<Option<RegisteredSchema>> {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        match inner.by_id.get(&prepared.id) {
            Some(found) if *found.table == *prepared.table => Ok(Some(found.clone())),
            Some(found) => Err(Error::IdCollision {
                id: prepared.id,
                existing: found.table.qualified_name(),
                new: prepared.table.qualified_name(),
            }),
            None => Ok(None),
        }
    }

    fn write_file(&self, dir: &Path, file: &SchemaFile) -> Result<()> {
        let name = format!(
            "{}.{}.v{}.{:016x}.json",
            sanitize_name(&file.table.database),
            sanitize_name(&file.table.table),
            file.version,
            file.id.get()
        );
        let path = dir.join(&name);
        let temp = dir.join(format!(
            ".{name}.tmp-{}-{}",
            std::process::id(),
            self.temp_counter.fetch_add(1, Ordering::Relaxed)
        ));
        let io = |op: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { op, path, source }
        };
        let mut bytes = serde_json::to_vec_pretty(file).map_err(|e| Error::InvalidSchema {
            table: file.table.qualified_name(),
            reason: format!("does not serialize to JSON: {e}"),
        })?;
        bytes.push(b'\n');
        let result = (|| {
            let mut f = fs::File::create(&temp).map_err(io("create", &temp))?;
            f.write_all(&bytes).map_err(io("write", &temp))?;
            f.sync_all().map_err(io("fsync", &temp))?;
            fs::rename(&temp, &path).map_err(io("rename into place", &path))?;
            fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io("fsync directory", dir))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result
    }

    /// The schema with id `id`.
    pub fn get(&self, id: SchemaId) -> Option<RegisteredSchema> {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        inner.by_id.get(&id).cloned()
    }

    /// All versions of `database.table`, oldest first (empty if unknown).
    pub fn versions(&self, database: &str, table: &str) -> Vec<RegisteredSchema> {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        inner
            .by_table
            .get(&(database.to_owned(), table.to_owned()))
            .cloned()
            .unwrap_or_default()
    }

    /// The newest version of `database.table`.
    pub fn latest(&self, database: &str, table: &str) -> Option<RegisteredSchema> {
        self.versions(database, table).pop()
    }

    /// Every `(database, table)` with at least one version, sorted.
    pub fn tables(&self) -> Vec<(String, String)> {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        inner.by_table.keys().cloned().collect()
    }

    /// Number of registered schema versions over all tables.
    pub fn len(&self) -> usize {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        inner.by_id.len()
    }

    /// Whether no schema is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn load_file(path: &Path) -> Result<RegisteredSchema> {
    let corrupt = |reason: String| Error::CorruptSchemaFile {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = fs::read(path).map_err(|source| Error::Io {
        op: "read",
        path: path.to_path_buf(),
        source,
    })?;
    let file: SchemaFile =
        serde_json::from_slice(&bytes).map_err(|e| corrupt(format!("not a schema file: {e}")))?;
    if file.format != FORMAT {
        return Err(corrupt(format!(
            "format {} is not {FORMAT}; it was written by another version of databus",
            file.format
        )));
    }
    if file.version == 0 {
        return Err(corrupt("version 0; versions start at 1".to_owned()));
    }
    let avro = Schema::parse(&file.avro)
        .map_err(|e| corrupt(format!("the avro schema does not parse: {e}")))?;
    let avro_id = schema_id(&avro)?;
    if avro_id != file.id {
        return Err(corrupt(format!(
            "its avro schema has id {avro_id}, the file says {}",
            file.id
        )));
    }
    let prepared = prepare(&file.table)
        .map_err(|e| corrupt(format!("its table schema does not map to avro: {e}")))?;
    if prepared.id != file.id {
        return Err(corrupt(format!(
            "its table schema maps to id {}, the file says {}",
            prepared.id, file.id
        )));
    }
    Ok(RegisteredSchema {
        id: file.id,
        version: file.version,
        avro: Arc::new(avro),
        avro_json: file.avro.to_string().into(),
        encoder: prepared.encoder,
        table: prepared.table,
    })
}
