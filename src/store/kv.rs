//! Small durable values for background loops (watermarks, counters) so a restart resumes.


use super::db::Conn;
use super::StoreError;

pub fn get(conn: &Conn<'_>, key: &str) -> Result<Option<String>, StoreError> {
    conn
        .query_opt("SELECT value FROM kv WHERE key = ?1", args![key], |r| r.get(0))
}

pub fn set(conn: &Conn<'_>, key: &str, value: &str) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO kv (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        args![key, value],
    )?;
    Ok(())
}
