//! The run's PostgreSQL database: a schema of its own (`orch_sim_<pid>_<seed>_<n>`) in the
//! database the URL names, reached with `search_path`, and dropped at the end unless kept.
//!
//! A schema rather than `CREATE DATABASE`: it needs only the right to create schemas (which
//! `.ci/pg`'s and most development roles have), and it works the same with either URL form.

use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::Context;

/// A schema created for one run.
pub(super) struct RunSchema {
    /// The URL the engines use: the given one, with `search_path` set to the schema.
    pub url: String,
    admin_url: String,
    pub schema: String,
}

impl RunSchema {
    /// Creates the schema for a run with `seed` in the database `url` names.
    pub(super) async fn create(url: &str, seed: u64) -> anyhow::Result<RunSchema> {
        static N: AtomicU32 = AtomicU32::new(0);
        let schema = format!(
            "orch_sim_{}_{}_{}",
            std::process::id(),
            seed,
            N.fetch_add(1, Ordering::Relaxed)
        );
        admin(url, &format!("CREATE SCHEMA {schema}"))
            .await
            .with_context(|| {
                format!(
                    "creating schema {schema} in {}",
                    crate::store::redact_url(url)
                )
            })?;
        Ok(RunSchema {
            url: with_search_path(url, &schema),
            admin_url: url.to_string(),
            schema,
        })
    }

    /// Drops the schema and everything in it; a failure is reported, not raised (the run's
    /// result matters more than its cleanup).
    pub(super) async fn drop_now(&self) {
        let sql = format!(
            "SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS {} CASCADE",
            self.schema
        );
        if let Err(e) = admin(&self.admin_url, &sql).await {
            tracing::warn!(error = %e, schema = %self.schema, "could not drop the simulation's schema");
        }
    }
}

/// `url` with `search_path` set to `schema`, in the URL's own form (`postgres://…` or
/// `key=value …`).
fn with_search_path(url: &str, schema: &str) -> String {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}options=-c%20search_path%3D{schema}")
    } else {
        format!("{url} options='-c search_path={schema}'")
    }
}

/// Runs `sql` on a connection of its own.
async fn admin(url: &str, sql: &str) -> anyhow::Result<()> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    let driver = tokio::spawn(conn);
    let done = client.batch_execute(sql).await;
    drop(client);
    let _ = driver.await;
    Ok(done?)
}

#[cfg(test)]
mod tests {
    use super::with_search_path;

    #[test]
    fn the_search_path_goes_into_either_url_form() {
        assert_eq!(
            with_search_path("postgres://u@h:5432/orch", "s1"),
            "postgres://u@h:5432/orch?options=-c%20search_path%3Ds1"
        );
        assert_eq!(
            with_search_path("postgres://u@h/orch?sslmode=disable", "s1"),
            "postgres://u@h/orch?sslmode=disable&options=-c%20search_path%3Ds1"
        );
        assert_eq!(
            with_search_path("host=h dbname=orch", "s1"),
            "host=h dbname=orch options='-c search_path=s1'"
        );
    }
}
