//! [`Conn::Sqlite`](super::Conn::Sqlite): statements through rusqlite's statement cache.

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ToSql, Transaction, TransactionBehavior};

use super::{Conn, Param, Row, Value};
use crate::store::StoreError;

impl ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Param::Null => ValueRef::Null,
            Param::Int(i) => ValueRef::Integer(*i),
            Param::Text(s) => ValueRef::Text(s.as_bytes()),
            Param::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

pub(super) fn execute(c: &Connection, sql: &str, p: &[Param<'_>]) -> Result<usize, StoreError> {
    let mut stmt = c.prepare_cached(sql)?;
    Ok(stmt.execute(rusqlite::params_from_iter(p))?)
}

pub(super) fn query_map<T>(
    c: &Connection,
    sql: &str,
    p: &[Param<'_>],
    mut f: impl FnMut(&Row) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut stmt = c.prepare_cached(sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(p))?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(f(&row(r)?)?);
    }
    Ok(out)
}

pub(super) fn query_opt<T>(
    c: &Connection,
    sql: &str,
    p: &[Param<'_>],
    f: impl FnOnce(&Row) -> Result<T, StoreError>,
) -> Result<Option<T>, StoreError> {
    let mut stmt = c.prepare_cached(sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(p))?;
    match rows.next()? {
        Some(r) => Ok(Some(f(&row(r)?)?)),
        None => Ok(None),
    }
}

pub(super) fn write<R>(
    c: &Connection,
    f: impl FnOnce(&Conn<'_>) -> Result<R, StoreError>,
) -> Result<R, StoreError> {
    if !c.is_autocommit() {
        return f(&Conn::Sqlite(c));
    }
    // Dropped without `commit` (an error or a panic in `f`), the transaction rolls back.
    let tx = Transaction::new_unchecked(c, TransactionBehavior::Immediate)?;
    let result = f(&Conn::Sqlite(&tx))?;
    tx.commit()?;
    Ok(result)
}

fn row(r: &rusqlite::Row<'_>) -> Result<Row, StoreError> {
    let n = r.as_ref().column_count();
    let mut values = Vec::with_capacity(n);
    for i in 0..n {
        values.push(match r.get_ref(i)? {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(n) => Value::Int(n),
            ValueRef::Text(t) => Value::Text(
                String::from_utf8(t.to_vec())
                    .map_err(|e| StoreError::Corrupt(format!("column {i} is not UTF-8: {e}")))?,
            ),
            ValueRef::Blob(b) => Value::Blob(b.to_vec()),
            ValueRef::Real(x) => {
                return Err(StoreError::Corrupt(format!(
                    "column {i} is a real number ({x}); orch stores integers"
                )));
            }
        });
    }
    Ok(Row { values })
}
