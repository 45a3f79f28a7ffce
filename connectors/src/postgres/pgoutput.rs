//! Decoding of the pgoutput messages (protocol version 1) carried in XLogData.
//!
//! [`pgwire_replication`] already turns Begin, Commit and logical Message into events; the rest
//! (Relation, Insert, Update, Delete, Truncate; Type and Origin are skipped) is decoded here, from bytes,
//! without panicking on malformed input.

/// One column of a Relation message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RelColumn {
    pub(crate) name: String,
    pub(crate) type_oid: u32,
    pub(crate) typmod: i32,
}

/// One value of a TupleData.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Datum {
    Null,
    /// An unchanged TOASTed value (`u`): not sent.
    Unchanged,
    Text(String),
}

/// A decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Message {
    Relation {
        oid: u32,
        namespace: String,
        name: String,
        /// `d` default, `n` nothing, `f` full, `i` index.
        replica_identity: u8,
        columns: Vec<RelColumn>,
    },
    Insert {
        oid: u32,
        new: Vec<Datum>,
    },
    Update {
        oid: u32,
        /// `Some((b'O', tuple))` with REPLICA IDENTITY FULL, `Some((b'K', key))` when the key changed
        /// under another identity, `None` otherwise.
        old: Option<(u8, Vec<Datum>)>,
        new: Vec<Datum>,
    },
    Delete {
        oid: u32,
        /// `b'O'` (full old row) or `b'K'` (key columns only).
        kind: u8,
        old: Vec<Datum>,
    },
    Truncate {
        /// Bit 1: CASCADE, bit 2: RESTART IDENTITY.
        options: u8,
        oids: Vec<u32>,
    },
    /// Type, Origin, and anything this connector does not need.
    Other(u8),
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.buf.len() < n {
            return Err(format!(
                "truncated pgoutput message: wanted {n} bytes, {} left",
                self.buf.len()
            ));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn cstr(&mut self) -> Result<String, String> {
        let end = self
            .buf
            .iter()
            .position(|&b| b == 0)
            .ok_or("unterminated string in pgoutput message")?;
        let s = String::from_utf8(self.buf[..end].to_vec())
            .map_err(|_| "non-UTF-8 name in pgoutput message".to_string())?;
        self.buf = &self.buf[end + 1..];
        Ok(s)
    }
    fn tuple(&mut self) -> Result<Vec<Datum>, String> {
        let n = self.u16()? as usize;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(match self.u8()? {
                b'n' => Datum::Null,
                b'u' => Datum::Unchanged,
                b't' => {
                    let len = self.u32()? as usize;
                    let bytes = self.take(len)?;
                    Datum::Text(
                        String::from_utf8(bytes.to_vec())
                            .map_err(|_| "a text value is not UTF-8 (use a UTF8 database)")?,
                    )
                }
                b'b' => return Err("binary tuple values were not requested".into()),
                k => return Err(format!("unknown tuple value kind {:?}", k as char)),
            });
        }
        Ok(out)
    }
}

/// Decodes one pgoutput message.
pub(crate) fn parse(data: &[u8]) -> Result<Message, String> {
    let mut r = Reader { buf: data };
    let tag = r.u8()?;
    Ok(match tag {
        b'R' => {
            let oid = r.u32()?;
            let namespace = r.cstr()?;
            let name = r.cstr()?;
            let replica_identity = r.u8()?;
            let n = r.u16()? as usize;
            let mut columns = Vec::with_capacity(n);
            for _ in 0..n {
                let _flags = r.u8()?;
                let name = r.cstr()?;
                let type_oid = r.u32()?;
                let typmod = r.u32()? as i32;
                columns.push(RelColumn {
                    name,
                    type_oid,
                    typmod,
                });
            }
            Message::Relation {
                oid,
                namespace,
                name,
                replica_identity,
                columns,
            }
        }
        b'I' => {
            let oid = r.u32()?;
            match r.u8()? {
                b'N' => Message::Insert {
                    oid,
                    new: r.tuple()?,
                },
                k => return Err(format!("insert: expected N, got {:?}", k as char)),
            }
        }
        b'U' => {
            let oid = r.u32()?;
            let mut kind = r.u8()?;
            let mut old = None;
            if kind == b'K' || kind == b'O' {
                old = Some((kind, r.tuple()?));
                kind = r.u8()?;
            }
            if kind != b'N' {
                return Err(format!("update: expected N, got {:?}", kind as char));
            }
            Message::Update {
                oid,
                old,
                new: r.tuple()?,
            }
        }
        b'D' => {
            let oid = r.u32()?;
            let kind = r.u8()?;
            if kind != b'K' && kind != b'O' {
                return Err(format!("delete: expected K or O, got {:?}", kind as char));
            }
            Message::Delete {
                oid,
                kind,
                old: r.tuple()?,
            }
        }
        b'T' => {
            let n = r.u32()? as usize;
            let options = r.u8()?;
            let oids = (0..n).map(|_| r.u32()).collect::<Result<_, _>>()?;
            Message::Truncate { options, oids }
        }
        other => Message::Other(other),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        for bytes in [
            &b""[..],
            b"R",
            b"I\0\0\0\x01N\0\x02t\0\0\0\x09ab",
            b"U\0\0\0\x01X",
        ] {
            assert!(parse(bytes).is_err(), "{bytes:?}");
        }
    }

    #[test]
    fn insert_with_null_text_and_unchanged() {
        let msg = b"I\0\0\0\x07N\0\x03nt\0\0\0\x02hiu";
        assert_eq!(
            parse(msg).unwrap(),
            Message::Insert {
                oid: 7,
                new: vec![Datum::Null, Datum::Text("hi".into()), Datum::Unchanged]
            }
        );
    }
}
