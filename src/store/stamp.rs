//! A cheap summary of everything the board shows from the database: when it is the same as
//! a page's, the page is still current and nothing needs rendering again.
//!
//! Each number grows or changes whenever a row it covers is written: a task created, moved
//! or touched; a job queued, started, finished or retried; a delivery received or processed;
//! an effect owed or delivered. Gate readings are covered by the sweep's own stamp (the
//! caller adds the last sweep time) and by the stage or job change that goes with most.


use super::db::Conn;
use super::StoreError;

/// The database's change stamp: a handful of aggregates, one query.
pub fn changes(conn: &Conn<'_>) -> Result<Vec<i64>, StoreError> {
    conn.query_row(
        "SELECT
            (SELECT COUNT(*) FROM tasks),
            (SELECT COALESCE(MAX(updated_at), 0) FROM tasks),
            (SELECT COALESCE(MAX(id), 0) FROM task_history),
            (SELECT COALESCE(MAX(id), 0) FROM jobs),
            (SELECT COALESCE(CASE WHEN s >= f AND s >= n THEN s WHEN f >= n THEN f ELSE n END, 0)
               FROM (SELECT MAX(COALESCE(started_at, 0)) AS s, MAX(COALESCE(finished_at, 0)) AS f,
                            MAX(COALESCE(not_before, 0)) AS n FROM jobs) AS latest),
            (SELECT COUNT(*) FROM jobs WHERE status IN ('queued', 'running')),
            (SELECT COALESCE(MAX(id), 0) FROM inbox),
            (SELECT COUNT(*) FROM inbox WHERE processed_at IS NULL),
            (SELECT CAST(COALESCE(SUM(attempts), 0) AS BIGINT) FROM inbox WHERE processed_at IS NULL),
            (SELECT COALESCE(MAX(id), 0) FROM outbox),
            (SELECT COUNT(*) FROM outbox WHERE status IN ('pending', 'sending', 'dead')),
            (SELECT COUNT(*) FROM verdicts)",
        args![],
        |r| (0..12).map(|i| r.get::<i64>(i)).collect(),
    )
}
