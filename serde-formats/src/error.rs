//! The crate's error type.

use std::path::PathBuf;

use databus_core::SchemaId;

/// Everything that can go wrong in this crate.
///
/// All variants are *definite*: retrying the same call with the same input gives the same error, except
/// [`Error::Io`], which may be transient (a full disk, a permission fixed by an operator).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A table schema cannot be mapped to Avro (e.g. DECIMAL scale larger than its precision).
    #[error("table {table}: {reason}")]
    InvalidSchema {
        /// `database.table`.
        table: String,
        /// What is wrong and how to fix it.
        reason: String,
    },

    /// apache-avro rejected a schema or a value.
    #[error("avro: {context}: {source}")]
    Avro {
        /// What we were doing.
        context: String,
        /// The library's error.
        #[source]
        source: Box<apache_avro::Error>,
    },

    /// A row has a different number of values than the table has columns.
    #[error(
        "row has {found} values but table {table} has {expected} columns; the row and schema are out of step"
    )]
    RowLength {
        /// `database.table`.
        table: String,
        /// Number of columns.
        expected: usize,
        /// Number of values in the row.
        found: usize,
    },

    /// A value's variant does not fit its column's type.
    #[error("column {column}: a {found} value does not fit a column of type {expected}")]
    TypeMismatch {
        /// Column name.
        column: String,
        /// The column type.
        expected: &'static str,
        /// The value's variant.
        found: &'static str,
    },

    /// A value has the right variant but is outside the column type's domain.
    #[error("column {column}: {reason}")]
    OutOfRange {
        /// Column name.
        column: String,
        /// What is wrong with the value.
        reason: String,
    },

    /// SQL NULL in a NOT NULL column.
    #[error("column {column} is NOT NULL but the row holds NULL")]
    NullInNotNull {
        /// Column name.
        column: String,
    },

    /// The table has no primary key and the caller did not opt in to full-row keys.
    #[error(
        "table {table} has no primary key; add one or use NoPkPolicy::FullRow to key by the whole row"
    )]
    NoPrimaryKey {
        /// `database.table`.
        table: String,
    },

    /// A payload does not decode with its writer schema.
    #[error("decode: {reason}")]
    Decode {
        /// What is wrong.
        reason: String,
    },

    /// A filesystem operation of the schema registry failed.
    #[error("schema registry: {op} {path}: {source}")]
    Io {
        /// The operation.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// A schema registry file cannot be read back.
    #[error(
        "schema registry file {path} is corrupt: {reason}; restore it from a backup or remove it if no event uses that schema"
    )]
    CorruptSchemaFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// Two different schemas have the same 64-bit fingerprint (practically impossible; reported, never
    /// silently merged).
    #[error(
        "schema id {id} already belongs to {existing}, cannot register a different schema for {new} under it"
    )]
    IdCollision {
        /// The id.
        id: SchemaId,
        /// `database.table` of the registered schema.
        existing: String,
        /// `database.table` of the rejected schema.
        new: String,
    },
}

impl Error {
    pub(crate) fn avro(context: impl Into<String>, source: apache_avro::Error) -> Self {
        Error::Avro {
            context: context.into(),
            source: Box::new(source),
        }
    }

    pub(crate) fn decode(reason: impl Into<String>) -> Self {
        Error::Decode {
            reason: reason.into(),
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
