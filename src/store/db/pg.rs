//! [`Conn::Pg`](super::Conn::Pg): PostgreSQL through tokio-postgres and a deadpool pool,
//! called from the store's synchronous closures.
//!
//! The pool's connections live on a runtime of the store's own, driven by one thread
//! (`orch-pg-io`), so a closure on any blocking thread runs each statement with
//! `Handle::block_on` while that thread does the socket IO. A closure must not run on an async
//! worker thread (`Store::call` uses the blocking pool; `Store::call_sync` is for threads
//! outside a runtime).

use std::borrow::Cow;
use std::cell::Cell;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Timeouts};
use tokio::runtime::Handle;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

use super::{Conn, Param, Row, Value};
use crate::store::StoreError;

/// The pool and the runtime its connections run on; dropping it stops the IO thread.
pub(crate) struct PgPool {
    pool: Pool,
    handle: Handle,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// How long a session may sit idle inside a transaction before the server ends it. orch's
/// transactions run synchronous closures and last milliseconds; a session idle in one for this
/// long belongs to a paused or cut-off process, and while it lives it holds its row locks —
/// among them a lease row (`FOR SHARE`), which would keep every other replica from taking the
/// lease over. Ending it rolls the paused holder's transaction back.
const IDLE_IN_TRANSACTION: &str = "15s";

/// Settings every session gets, after any the URL's `options` set (theirs win for other keys),
/// plus TCP keepalives so a vanished peer is noticed, and orch's name in `pg_stat_activity`.
fn session_settings(config: &mut tokio_postgres::Config, read_only: bool) {
    let mut options = format!("-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION}");
    if read_only {
        // The server refuses every write of these sessions, whatever a caller tries.
        options.push_str(" -c default_transaction_read_only=on");
    }
    if let Some(theirs) = config.get_options().filter(|o| !o.trim().is_empty()) {
        options = format!("{options} {theirs}");
    }
    config.options(&options);
    if config.get_application_name().is_none() {
        config.application_name("orch");
    }
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(30));
}

impl PgPool {
    /// Connects lazily: the first checkout opens the first connection. `read_only`: every
    /// session refuses writes (`default_transaction_read_only`).
    pub(crate) fn new(url: &str, max_size: usize, read_only: bool) -> Result<PgPool, StoreError> {
        let (url, tls) = super::tls::Tls::split(url)?;
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| StoreError::Url(with_causes(&e)))?;
        session_settings(&mut config, read_only);
        let tls = tls.connector()?;
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("orch-pg-io".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = tx.send(Ok(rt.handle().clone()));
                // Drives the connections' IO and the pool's timers until the store goes.
                let _ = rt.block_on(stopped);
            })
            .map_err(|e| StoreError::Pool(format!("cannot start the PostgreSQL IO thread: {e}")))?;
        let handle = rx
            .recv()
            .map_err(|e| StoreError::Pool(e.to_string()))?
            .map_err(StoreError::Pool)?;
        let recycling = || ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match tls {
            Some(tls) => Manager::from_config(config, tls, recycling()),
            None => Manager::from_config(config, tokio_postgres::NoTls, recycling()),
        };
        let timeout = Some(Duration::from_secs(5));
        let pool = Pool::builder(manager)
            .max_size(max_size)
            .timeouts(Timeouts {
                wait: timeout,
                create: timeout,
                recycle: timeout,
            })
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Pool(e.to_string()))?;
        Ok(PgPool {
            pool,
            handle,
            _stop: stop,
        })
    }

    /// A pooled connection for one call.
    pub(crate) fn session(&self) -> Result<Session, StoreError> {
        let pool = self.pool.clone();
        let client = self
            .handle
            .block_on(async move { pool.get().await })
            .map_err(|e| StoreError::Pool(with_causes(&e)))?;
        Ok(Session {
            client: Some(client),
            handle: self.handle.clone(),
            in_tx: Cell::new(false),
        })
    }
}

/// One pooled connection lent to one store call.
pub struct Session {
    client: Option<Object>,
    handle: Handle,
    in_tx: Cell<bool>,
}

impl Session {
    fn client(&self) -> Result<&Object, StoreError> {
        self.client
            .as_ref()
            .ok_or_else(|| StoreError::Pool("the connection was given up".into()))
    }

    fn run<T>(
        &self,
        sql: &str,
        p: &[Param<'_>],
        f: impl FnOnce(&Object, &tokio_postgres::Statement, &[&(dyn ToSql + Sync)]) -> T,
    ) -> Result<T, StoreError> {
        let client = self.client()?;
        let sql = pg_sql(sql);
        let params: Vec<PgParam<'_>> = p.iter().copied().map(PgParam).collect();
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let stmt = self.handle.block_on(client.prepare_cached(&sql))?;
        Ok(f(client, &stmt, &refs))
    }

    pub(super) fn execute(&self, sql: &str, p: &[Param<'_>]) -> Result<usize, StoreError> {
        let n = self.run(sql, p, |c, st, ps| self.handle.block_on(c.execute(st, ps)))??;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    pub(super) fn query(&self, sql: &str, p: &[Param<'_>]) -> Result<Vec<Row>, StoreError> {
        let rows = self.run(sql, p, |c, st, ps| self.handle.block_on(c.query(st, ps)))??;
        rows.iter().map(row).collect()
    }

    /// True inside [`Session::write`]'s transaction.
    pub(super) fn in_transaction(&self) -> bool {
        self.in_tx.get()
    }

    pub(super) fn write<R>(
        &self,
        f: impl FnOnce(&Conn<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        if self.in_tx.get() {
            return f(&Conn::Pg(self));
        }
        self.batch("BEGIN")?;
        self.in_tx.set(true);
        let result = f(&Conn::Pg(self));
        let end = match &result {
            Ok(_) => self.batch("COMMIT"),
            Err(_) => self.batch("ROLLBACK"),
        };
        self.in_tx.set(false);
        end?;
        result
    }

    fn batch(&self, sql: &str) -> Result<(), StoreError> {
        let client = self.client()?;
        Ok(self.handle.block_on(client.batch_execute(sql))?)
    }

    /// Runs DDL (a migration) as one batch.
    pub(crate) fn batch_execute(&self, sql: &str) -> Result<(), StoreError> {
        self.batch(sql)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // A panic inside `write` left a transaction open: the connection must not go back to
        // the pool mid-transaction, so it is detached and closed instead.
        if self.in_tx.get() {
            if let Some(client) = self.client.take() {
                drop(Object::take(client));
            }
        }
    }
}

/// A value that cannot be bound to a parameter of type `ty`: refused before it is sent, as
/// its bytes would be read as that type (an INT8's as a FLOAT8, say).
fn wrong_kind(what: &str, ty: &Type) -> Box<dyn std::error::Error + Sync + Send> {
    format!("{what} cannot be bound to a parameter of type {ty}: cast the parameter in the SQL")
        .into()
}

/// `e` and its causes, "a: b: c" (a TLS failure's reason is only in the causes), each
/// message once.
pub(crate) fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// A parameter bound to whatever type PostgreSQL inferred for it.
#[derive(Debug)]
struct PgParam<'a>(Param<'a>);

impl ToSql for PgParam<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self.0 {
            Param::Null => Ok(IsNull::Yes),
            Param::Int(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(i)?.to_sql(ty, out),
                Type::BOOL => (i != 0).to_sql(ty, out),
                // As SQLite converts: a float or a text of the same value.
                Type::FLOAT8 => (i as f64).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
                    i.to_string().to_sql(ty, out)
                }
                _ => Err(wrong_kind("an integer", ty)),
            },
            Param::Text(s) => match *ty {
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                    s.to_sql(ty, out)
                }
                _ => Err(wrong_kind("text", ty)),
            },
            Param::Blob(b) => match *ty {
                Type::BYTEA => b.to_sql(ty, out),
                _ => Err(wrong_kind("a blob", ty)),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn row(r: &tokio_postgres::Row) -> Result<Row, StoreError> {
    let mut values = Vec::with_capacity(r.len());
    for (i, col) in r.columns().iter().enumerate() {
        let ty = col.type_();
        let v = match *ty {
            Type::INT8 => r.try_get::<_, Option<i64>>(i)?.map(Value::Int),
            Type::INT4 => r.try_get::<_, Option<i32>>(i)?.map(|v| Value::Int(v.into())),
            Type::INT2 => r.try_get::<_, Option<i16>>(i)?.map(|v| Value::Int(v.into())),
            Type::BOOL => r.try_get::<_, Option<bool>>(i)?.map(Value::Bool),
            Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR => {
                r.try_get::<_, Option<String>>(i)?.map(Value::Text)
            }
            Type::BYTEA => r.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Blob),
            _ => {
                return Err(StoreError::Corrupt(format!(
                    "column {} is {ty}: cast it AS BIGINT or TEXT",
                    col.name()
                )));
            }
        };
        values.push(v.unwrap_or(Value::Null));
    }
    Ok(Row { values })
}

/// `?N` placeholders as PostgreSQL's `$N`, outside quoted text and comments.
pub(crate) fn pg_sql(sql: &str) -> Cow<'_, str> {
    if !sql.contains('?') {
        return Cow::Borrowed(sql);
    }
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                out.push(c);
                for d in chars.by_ref() {
                    out.push(d);
                    if d == c {
                        break;
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                out.push(c);
                for d in chars.by_ref() {
                    out.push(d);
                    if d == '\n' {
                        break;
                    }
                }
            }
            '?' => {
                debug_assert!(
                    chars.peek().is_some_and(char::is_ascii_digit),
                    "every placeholder is numbered: {sql}"
                );
                out.push('$');
            }
            _ => out.push(c),
        }
    }
    Cow::Owned(out)
}
