//! Recognises the DDL statements that change a captured table as a whole, from the text of a binlog
//! QUERY event (ROW format logs DDL as statements).
//!
//! Only the statement's head is read: the verb, the object kind and the table names. Comments
//! (`/* */`, `-- `, `#`) are skipped, identifiers may be quoted with backquotes, names without a
//! database take the event's default database.

use crate::source::TableName;

/// What a statement does to tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ddl {
    /// `TRUNCATE [TABLE] t`.
    Truncate(TableName),
    /// `DROP [TEMPORARY] TABLE [IF EXISTS] a, b, ...`.
    Drop(Vec<TableName>),
    /// `CREATE [OR REPLACE] TABLE [IF NOT EXISTS] t ...` (OR REPLACE drops the old table first).
    Create { table: TableName, replace: bool },
    /// `ALTER [ONLINE] [IGNORE] TABLE t ...`, with the new name when it renames the table.
    Alter {
        table: TableName,
        renamed_to: Option<TableName>,
    },
    /// `RENAME TABLE a TO b, c TO d`.
    Rename(Vec<(TableName, TableName)>),
    /// `DROP DATABASE|SCHEMA [IF EXISTS] d`: every table of `d` is dropped.
    DropDatabase(String),
}

/// A token of the statement head.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// A bare word, upper-cased (keywords) — `raw` keeps the original spelling (identifiers).
    Word {
        upper: String,
        raw: String,
    },
    /// A backquoted identifier.
    Quoted(String),
    Dot,
    Comma,
    Other,
}

fn tokens(sql: &str) -> Vec<Token> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() && out.len() < 4096 {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            i = sql[i + 2..].find("*/").map_or(b.len(), |e| i + 2 + e + 2);
        } else if c == b'#' || (c == b'-' && b.get(i + 1) == Some(&b'-')) {
            i = sql[i..].find('\n').map_or(b.len(), |e| i + e + 1);
        } else if c == b'`' {
            let mut name = String::new();
            i += 1;
            loop {
                match sql[i..].find('`') {
                    None => {
                        name.push_str(&sql[i..]);
                        i = b.len();
                        break;
                    }
                    Some(e) => {
                        name.push_str(&sql[i..i + e]);
                        i += e + 1;
                        // A doubled backquote is a backquote inside the name.
                        if b.get(i) == Some(&b'`') {
                            name.push('`');
                            i += 1;
                        } else {
                            break;
                        }
                    }
                }
            }
            out.push(Token::Quoted(name));
        } else if c == b'.' {
            out.push(Token::Dot);
            i += 1;
        } else if c == b',' {
            out.push(Token::Comma);
            i += 1;
        } else if c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80 {
            let start = i;
            while i < b.len()
                && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'$' || b[i] >= 0x80)
            {
                i += 1;
            }
            let raw = sql[start..i].to_owned();
            out.push(Token::Word {
                upper: raw.to_ascii_uppercase(),
                raw,
            });
        } else {
            out.push(Token::Other);
            i += 1;
        }
    }
    out
}

struct Parser<'a> {
    tokens: Vec<Token>,
    at: usize,
    default_db: &'a str,
}

impl Parser<'_> {
    fn keyword(&mut self, word: &str) -> bool {
        match self.tokens.get(self.at) {
            Some(Token::Word { upper, .. }) if upper == word => {
                self.at += 1;
                true
            }
            _ => false,
        }
    }

    fn keywords(&mut self, words: &[&str]) -> bool {
        let save = self.at;
        if words.iter().all(|w| self.keyword(w)) {
            true
        } else {
            self.at = save;
            false
        }
    }

    fn identifier(&mut self) -> Option<String> {
        let id = match self.tokens.get(self.at)? {
            Token::Word { raw, .. } => raw.clone(),
            Token::Quoted(name) => name.clone(),
            _ => return None,
        };
        self.at += 1;
        Some(id)
    }

    fn table(&mut self) -> Option<TableName> {
        let first = self.identifier()?;
        if self.tokens.get(self.at) == Some(&Token::Dot) {
            self.at += 1;
            let second = self.identifier()?;
            Some(TableName::new(first, second))
        } else {
            Some(TableName::new(self.default_db, first))
        }
    }

    fn comma(&mut self) -> bool {
        if self.tokens.get(self.at) == Some(&Token::Comma) {
            self.at += 1;
            true
        } else {
            false
        }
    }
}

/// The table-level effect of `statement` (run with default database `default_db`), if it has one.
pub(crate) fn parse(statement: &str, default_db: &str) -> Option<Ddl> {
    let mut p = Parser {
        tokens: tokens(statement),
        at: 0,
        default_db,
    };
    if p.keyword("TRUNCATE") {
        p.keyword("TABLE");
        return p.table().map(Ddl::Truncate);
    }
    if p.keyword("DROP") {
        if p.keyword("DATABASE") || p.keyword("SCHEMA") {
            p.keywords(&["IF", "EXISTS"]);
            return p.identifier().map(Ddl::DropDatabase);
        }
        p.keyword("TEMPORARY");
        if !p.keyword("TABLE") {
            return None;
        }
        p.keywords(&["IF", "EXISTS"]);
        let mut tables = vec![p.table()?];
        while p.comma() {
            tables.push(p.table()?);
        }
        return Some(Ddl::Drop(tables));
    }
    if p.keyword("CREATE") {
        let replace = p.keywords(&["OR", "REPLACE"]);
        p.keyword("TEMPORARY");
        if !p.keyword("TABLE") {
            return None;
        }
        p.keywords(&["IF", "NOT", "EXISTS"]);
        return p.table().map(|table| Ddl::Create { table, replace });
    }
    if p.keyword("ALTER") {
        p.keyword("ONLINE");
        p.keyword("IGNORE");
        if !p.keyword("TABLE") {
            return None;
        }
        p.keywords(&["IF", "EXISTS"]);
        let table = p.table()?;
        // `RENAME [TO|AS] name` anywhere in the alter specification (never inside a column clause:
        // `RENAME COLUMN`/`RENAME INDEX`/`RENAME KEY` are not table renames).
        let mut renamed_to = None;
        while p.at < p.tokens.len() {
            if p.keyword("RENAME") {
                if p.keyword("COLUMN") || p.keyword("INDEX") || p.keyword("KEY") {
                    continue;
                }
                if !p.keyword("TO") {
                    p.keyword("AS");
                }
                renamed_to = p.table();
            } else {
                p.at += 1;
            }
        }
        return Some(Ddl::Alter { table, renamed_to });
    }
    if p.keyword("RENAME") {
        if !p.keyword("TABLE") {
            return None;
        }
        let mut pairs = Vec::new();
        loop {
            let from = p.table()?;
            if !p.keyword("TO") {
                return None;
            }
            pairs.push((from, p.table()?));
            if !p.comma() {
                break;
            }
        }
        return Some(Ddl::Rename(pairs));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(db: &str, table: &str) -> TableName {
        TableName::new(db, table)
    }

    #[test]
    fn statements_heads_are_recognised() {
        assert_eq!(
            parse("TRUNCATE TABLE t", "shop"),
            Some(Ddl::Truncate(t("shop", "t")))
        );
        assert_eq!(
            parse("truncate `sh op`.`t``x`", "d"),
            Some(Ddl::Truncate(t("sh op", "t`x")))
        );
        assert_eq!(
            parse(
                "DROP TABLE IF EXISTS `a`,shop.b /* generated by server */",
                "x"
            ),
            Some(Ddl::Drop(vec![t("x", "a"), t("shop", "b")]))
        );
        assert_eq!(
            parse(
                "/* c */ CREATE OR REPLACE TABLE t (id INT PRIMARY KEY)",
                "s"
            ),
            Some(Ddl::Create {
                table: t("s", "t"),
                replace: true
            })
        );
        assert_eq!(
            parse(
                "ALTER TABLE s.t ADD COLUMN w INT, RENAME COLUMN a TO b",
                "x"
            ),
            Some(Ddl::Alter {
                table: t("s", "t"),
                renamed_to: None
            })
        );
        assert_eq!(
            parse("ALTER TABLE t RENAME TO u", "s"),
            Some(Ddl::Alter {
                table: t("s", "t"),
                renamed_to: Some(t("s", "u"))
            })
        );
        assert_eq!(
            parse("RENAME TABLE a TO b, s.c TO d.e", "s"),
            Some(Ddl::Rename(vec![
                (t("s", "a"), t("s", "b")),
                (t("s", "c"), t("d", "e"))
            ]))
        );
        assert_eq!(parse("CREATE DATABASE shop", "s"), None);
        assert_eq!(
            parse("DROP DATABASE shop", "s"),
            Some(Ddl::DropDatabase("shop".into()))
        );
        assert_eq!(
            parse("DROP SCHEMA IF EXISTS `sh op`", "s"),
            Some(Ddl::DropDatabase("sh op".into()))
        );
        assert_eq!(parse("CREATE INDEX i ON t (a)", "s"), None);
        assert_eq!(parse("", "s"), None);
        assert_eq!(parse("TRUNCATE", "s"), None);
    }
}
