//! The backend-neutral connection the store functions run on: one SQL text per statement,
//! parameters as [`Param`]s (`?N` placeholders), rows read back as owned [`Row`]s.
//!
//! A [`Conn`] is lent to a [`super::Store::call`] closure for the duration of one call. Every
//! store function takes `&Conn`; a function that owes several writes together runs them in
//! [`Conn::write`], which nests: inside an open transaction it runs inline.

use super::StoreError;
use super::leases::Fence;
use crate::clock::Timestamp;

pub(crate) mod pg;
mod tls;
mod sqlite;

/// A statement parameter, borrowed from the caller for the statement's duration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Param<'a> {
    Null,
    Int(i64),
    Text(&'a str),
    Blob(&'a [u8]),
}

/// A value that binds as a statement parameter; see [`args!`](crate::args) (defined in
/// `lib.rs`, where a `#[macro_export]` macro can be named by path).
pub trait ToParam {
    fn to_param(&self) -> Param<'_>;
}

impl ToParam for i64 {
    fn to_param(&self) -> Param<'_> {
        Param::Int(*self)
    }
}

impl ToParam for i32 {
    fn to_param(&self) -> Param<'_> {
        Param::Int(i64::from(*self))
    }
}

impl ToParam for u32 {
    fn to_param(&self) -> Param<'_> {
        Param::Int(i64::from(*self))
    }
}

impl ToParam for bool {
    fn to_param(&self) -> Param<'_> {
        Param::Int(i64::from(*self))
    }
}

impl ToParam for str {
    fn to_param(&self) -> Param<'_> {
        Param::Text(self)
    }
}

impl ToParam for String {
    fn to_param(&self) -> Param<'_> {
        Param::Text(self)
    }
}

impl ToParam for [u8] {
    fn to_param(&self) -> Param<'_> {
        Param::Blob(self)
    }
}

impl ToParam for Vec<u8> {
    fn to_param(&self) -> Param<'_> {
        Param::Blob(self)
    }
}

impl ToParam for Timestamp {
    fn to_param(&self) -> Param<'_> {
        Param::Int(self.as_millis())
    }
}

impl<T: ToParam> ToParam for Option<T> {
    fn to_param(&self) -> Param<'_> {
        self.as_ref().map_or(Param::Null, ToParam::to_param)
    }
}

impl<T: ToParam + ?Sized> ToParam for &T {
    fn to_param(&self) -> Param<'_> {
        (**self).to_param()
    }
}

impl<'a> ToParam for Param<'a> {
    fn to_param(&self) -> Param<'_> {
        *self
    }
}

/// A value read back from a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
    Blob(Vec<u8>),
    Bool(bool),
}

/// One row of a result, owned: orch reads small rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    values: Vec<Value>,
}

impl Row {
    /// Column `i` (from 0) as a `T`; a missing column or another type is `Corrupt`.
    pub fn get<T: FromValue>(&self, i: usize) -> Result<T, StoreError> {
        let v = self
            .values
            .get(i)
            .ok_or_else(|| StoreError::Corrupt(format!("no column {i} in the row")))?;
        T::from_value(v).map_err(|e| StoreError::Corrupt(format!("column {i}: {e}")))
    }

    /// Column `i` as text, borrowed: for a value parsed on the spot (JSON) rather than kept.
    pub fn text(&self, i: usize) -> Result<&str, StoreError> {
        match self.values.get(i) {
            Some(Value::Text(s)) => Ok(s),
            Some(other) => Err(StoreError::Corrupt(format!(
                "column {i}: expected text, found {}",
                kind(other)
            ))),
            None => Err(StoreError::Corrupt(format!("no column {i} in the row"))),
        }
    }
}

/// A Rust type a [`Value`] converts to.
pub trait FromValue: Sized {
    fn from_value(v: &Value) -> Result<Self, String>;
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "NULL",
        Value::Int(_) => "an integer",
        Value::Text(_) => "text",
        Value::Blob(_) => "a blob",
        Value::Bool(_) => "a boolean",
    }
}

impl FromValue for i64 {
    fn from_value(v: &Value) -> Result<Self, String> {
        match v {
            Value::Int(i) => Ok(*i),
            other => Err(format!("expected an integer, found {}", kind(other))),
        }
    }
}

impl FromValue for bool {
    fn from_value(v: &Value) -> Result<Self, String> {
        match v {
            Value::Bool(b) => Ok(*b),
            Value::Int(i) => Ok(*i != 0),
            other => Err(format!("expected a boolean, found {}", kind(other))),
        }
    }
}

impl FromValue for String {
    fn from_value(v: &Value) -> Result<Self, String> {
        match v {
            Value::Text(s) => Ok(s.clone()),
            other => Err(format!("expected text, found {}", kind(other))),
        }
    }
}

impl FromValue for Vec<u8> {
    fn from_value(v: &Value) -> Result<Self, String> {
        match v {
            Value::Blob(b) => Ok(b.clone()),
            other => Err(format!("expected a blob, found {}", kind(other))),
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: &Value) -> Result<Self, String> {
        match v {
            Value::Null => Ok(None),
            other => T::from_value(other).map(Some),
        }
    }
}

/// A connection (or a transaction on one) for the duration of one `Store::call`.
pub enum Conn<'a> {
    Sqlite(&'a rusqlite::Connection),
    Pg(&'a pg::Session),
    /// A connection whose writes first check a lease's fencing token
    /// ([`Store::fenced`](super::Store::fenced)): every write transaction starts with the
    /// fence check, a write statement outside a transaction runs as a one-statement
    /// transaction, reads run as they are.
    Fenced(&'a Conn<'a>, &'a Fence),
}

impl Conn<'_> {
    /// Runs one statement; how many rows it changed.
    pub fn execute(&self, sql: &str, p: &[Param<'_>]) -> Result<usize, StoreError> {
        match self {
            Conn::Sqlite(c) => sqlite::execute(c, sql, p),
            Conn::Pg(s) => s.execute(sql, p),
            Conn::Fenced(inner, _) if inner.in_transaction() => inner.execute(sql, p),
            Conn::Fenced(..) => self.write(|tx| tx.execute(sql, p)),
        }
    }

    /// True inside a [`Conn::write`] transaction.
    fn in_transaction(&self) -> bool {
        match self {
            Conn::Sqlite(c) => !c.is_autocommit(),
            Conn::Pg(s) => s.in_transaction(),
            Conn::Fenced(inner, _) => inner.in_transaction(),
        }
    }

    /// Every row of a query, each through `f`.
    pub fn query_map<T>(
        &self,
        sql: &str,
        p: &[Param<'_>],
        f: impl FnMut(&Row) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        match self {
            Conn::Sqlite(c) => sqlite::query_map(c, sql, p, f),
            Conn::Pg(s) => s.query(sql, p)?.iter().map(f).collect(),
            Conn::Fenced(inner, _) if inner.in_transaction() || !is_write(sql) => {
                inner.query_map(sql, p, f)
            }
            Conn::Fenced(..) => self.write(|tx| tx.query_map(sql, p, f)),
        }
    }

    /// The first row of a query through `f`, if there is one.
    pub fn query_opt<T>(
        &self,
        sql: &str,
        p: &[Param<'_>],
        f: impl FnOnce(&Row) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        match self {
            Conn::Sqlite(c) => sqlite::query_opt(c, sql, p, f),
            Conn::Pg(s) => s.query(sql, p)?.first().map(f).transpose(),
            Conn::Fenced(inner, _) if inner.in_transaction() || !is_write(sql) => {
                inner.query_opt(sql, p, f)
            }
            Conn::Fenced(..) => self.write(|tx| tx.query_opt(sql, p, f)),
        }
    }

    /// The first row of a query through `f`; no row is an error.
    pub fn query_row<T>(
        &self,
        sql: &str,
        p: &[Param<'_>],
        f: impl FnOnce(&Row) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.query_opt(sql, p, f)?
            .ok_or_else(|| StoreError::NoRow(first_line(sql)))
    }

    /// Runs `f` in a write transaction (SQLite: `BEGIN IMMEDIATE`, PostgreSQL: `BEGIN`, read
    /// committed): commits when it returns
    /// `Ok`, rolls back on `Err` or a panic. Inside an open transaction `f` runs inline, so a
    /// function that writes in a transaction of its own can be part of a larger one. On a
    /// fenced connection the fence check is the transaction's first statement.
    pub fn write<R>(
        &self,
        f: impl FnOnce(&Conn<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        match self {
            Conn::Sqlite(c) => sqlite::write(c, f),
            Conn::Pg(s) => s.write(f),
            Conn::Fenced(inner, _) if inner.in_transaction() => f(self),
            Conn::Fenced(inner, fence) => {
                let fenced = |tx: &Conn<'_>| {
                    crate::store::leases::check(tx, fence)?;
                    f(&Conn::Fenced(tx, fence))
                };
                // Not `inner.write`: that would instantiate `write` for ever deeper closures.
                match inner {
                    Conn::Sqlite(c) => sqlite::write(c, fenced),
                    Conn::Pg(s) => s.write(fenced),
                    Conn::Fenced(..) => Err(StoreError::Corrupt(
                        "a fenced connection inside another one".into(),
                    )),
                }
            }
        }
    }
}

impl Conn<'_> {
    /// Locks the task's row until the transaction ends, so a transaction that reads before it
    /// writes sees no concurrent change of the task in between. PostgreSQL: `FOR UPDATE`
    /// (read committed lets another writer in otherwise); SQLite: nothing to do, `BEGIN
    /// IMMEDIATE` already excludes every other writer. Call it first in such a transaction.
    pub fn lock_task(&self, task_id: i64) -> Result<(), StoreError> {
        match self {
            Conn::Sqlite(_) => Ok(()),
            Conn::Fenced(inner, _) => inner.lock_task(task_id),
            Conn::Pg(s) => s
                .execute("SELECT 1 FROM tasks WHERE id = ?1 FOR UPDATE", args![task_id])
                .map(|_| ()),
        }
    }

    /// Serialises the transactions that owe effects for one subject until they end, so a
    /// subject's effects commit in the order of their ids (an id is taken at insert, not at
    /// commit, in PostgreSQL) and its dispatcher never sends a later one first. PostgreSQL: a
    /// transaction-scoped advisory lock; SQLite: nothing to do (one writer at a time).
    pub fn lock_subject(&self, subject: &str) -> Result<(), StoreError> {
        match self {
            Conn::Sqlite(_) => Ok(()),
            Conn::Fenced(inner, _) => inner.lock_subject(subject),
            Conn::Pg(s) => s
                .execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended('outbox:' || ?1, 0))",
                    args![subject],
                )
                .map(|_| ()),
        }
    }
}

impl Conn<'_> {
    /// The database's clock in epoch milliseconds, as an SQL expression. The one exception to
    /// "the store never reads a clock": lease and heartbeat times are compared across hosts,
    /// and only the database's clock is common to all of them.
    pub fn now_ms_sql(&self) -> &'static str {
        match self {
            Conn::Sqlite(_) => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
            Conn::Pg(_) => "(extract(epoch from clock_timestamp()) * 1000)::BIGINT",
            Conn::Fenced(inner, _) => inner.now_ms_sql(),
        }
    }

    /// The row lock a lease's fence check takes: PostgreSQL `FOR SHARE`, which conflicts with
    /// the lock a takeover's upsert needs (`FOR KEY SHARE` would not: the upsert changes no
    /// key), so a takeover waits for the holder's fenced transaction in progress; SQLite
    /// nothing (`BEGIN IMMEDIATE` already excludes every other writer).
    pub(crate) fn share_lock_sql(&self) -> &'static str {
        match self {
            Conn::Sqlite(_) => "",
            Conn::Pg(_) => " FOR SHARE",
            Conn::Fenced(inner, _) => inner.share_lock_sql(),
        }
    }
}

/// True for a statement that changes rows (`INSERT`, `UPDATE`, `DELETE`, also with
/// `RETURNING`): on a fenced connection it is fenced even when run as a query.
fn is_write(sql: &str) -> bool {
    let first = sql.split_whitespace().next().unwrap_or_default();
    ["INSERT", "UPDATE", "DELETE", "REPLACE"]
        .iter()
        .any(|w| first.eq_ignore_ascii_case(w))
}

impl Conn<'_> {
    /// The end of a row-taking subquery (`SELECT id … LIMIT 1`) whose row the statement then
    /// changes: PostgreSQL skips the rows other transactions are taking (`FOR UPDATE SKIP
    /// LOCKED`) instead of waiting for them; SQLite has one writer at a time, nothing to add.
    pub fn skip_locked_sql(&self) -> &'static str {
        match self {
            Conn::Sqlite(_) => "",
            Conn::Pg(_) => "FOR UPDATE SKIP LOCKED",
            Conn::Fenced(inner, _) => inner.skip_locked_sql(),
        }
    }

    /// Whether this is PostgreSQL (a database other replicas may share).
    pub fn is_postgres(&self) -> bool {
        match self {
            Conn::Sqlite(_) => false,
            Conn::Pg(_) => true,
            Conn::Fenced(inner, _) => inner.is_postgres(),
        }
    }
}

fn first_line(sql: &str) -> String {
    sql.trim().lines().next().unwrap_or_default().to_string()
}

#[cfg(test)]
mod tests;
