use super::*;

fn memory() -> rusqlite::Connection {
    let c = rusqlite::Connection::open_in_memory().expect("in-memory database");
    c.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER, s TEXT, b BLOB)")
        .expect("table");
    c
}

#[test]
fn args_bind_and_rows_read_back_every_kind() {
    let raw = memory();
    let c = Conn::Sqlite(&raw);
    let text = String::from("héllo");
    let none: Option<&str> = None;
    let changed = c
        .execute(
            "INSERT INTO t (n, s, b) VALUES (?1, ?2, ?3)",
            args![Timestamp::from_millis(42), text, vec![1u8, 2]],
        )
        .unwrap();
    assert_eq!(changed, 1);
    c.execute(
        "INSERT INTO t (n, s, b) VALUES (?1, ?2, NULL)",
        args![true, none],
    )
    .unwrap();
    let rows = c
        .query_map("SELECT n, s, b FROM t ORDER BY id", args![], |r| {
            Ok((
                r.get::<i64>(0)?,
                r.get::<Option<String>>(1)?,
                r.get::<Option<Vec<u8>>>(2)?,
            ))
        })
        .unwrap();
    assert_eq!(
        rows,
        vec![
            (42, Some("héllo".to_string()), Some(vec![1, 2])),
            (1, None, None)
        ]
    );
    let flag: bool = c
        .query_row("SELECT EXISTS(SELECT 1 FROM t WHERE n = ?1)", args![42], |r| r.get(0))
        .unwrap();
    assert!(flag);
}

#[test]
fn a_wrong_type_or_a_missing_row_is_an_error_not_a_panic() {
    let raw = memory();
    let c = Conn::Sqlite(&raw);
    c.execute("INSERT INTO t (n, s) VALUES (1, 'x')", args![]).unwrap();
    let err = c
        .query_row("SELECT s FROM t", args![], |r| r.get::<i64>(0))
        .unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(ref m) if m.contains("expected an integer")), "{err}");
    let err = c
        .query_row("SELECT n FROM t WHERE n = 2", args![], |r| r.get::<i64>(0))
        .unwrap_err();
    assert!(matches!(err, StoreError::NoRow(_)), "{err}");
    let none = c
        .query_opt("SELECT n FROM t WHERE n = 2", args![], |r| r.get::<i64>(0))
        .unwrap();
    assert_eq!(none, None);
}

#[test]
fn write_commits_on_ok_rolls_back_on_err_and_nests_inline() {
    let raw = memory();
    let c = Conn::Sqlite(&raw);
    c.write(|tx| {
        tx.execute("INSERT INTO t (n) VALUES (1)", args![])?;
        // A nested write joins the outer transaction instead of failing to begin.
        tx.write(|inner| inner.execute("INSERT INTO t (n) VALUES (2)", args![]))
    })
    .unwrap();
    let failed: Result<(), StoreError> = c.write(|tx| {
        tx.execute("INSERT INTO t (n) VALUES (3)", args![])?;
        Err(StoreError::Corrupt("stop".into()))
    });
    assert!(failed.is_err());
    let count: i64 = c
        .query_row("SELECT COUNT(*) FROM t", args![], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 2, "the failed transaction left nothing behind");
    assert!(raw.is_autocommit(), "no transaction is left open");
}

#[test]
fn placeholders_become_dollar_numbers_outside_quotes_and_comments() {
    use super::pg::pg_sql;
    assert_eq!(pg_sql("SELECT 1"), "SELECT 1");
    assert_eq!(
        pg_sql("UPDATE t SET a = ?1, b = ?10 WHERE c = ?1"),
        "UPDATE t SET a = $1, b = $10 WHERE c = $1"
    );
    assert_eq!(
        pg_sql("SELECT '?1', \"a?2\" -- ?3\n FROM t WHERE x = ?4"),
        "SELECT '?1', \"a?2\" -- ?3\n FROM t WHERE x = $4"
    );
}

#[test]
fn a_boolean_column_reads_from_either_backend_form() {
    let row = Row {
        values: vec![Value::Bool(true), Value::Int(0), Value::Text("x".into())],
    };
    assert!(row.get::<bool>(0).unwrap());
    assert!(!row.get::<bool>(1).unwrap());
    assert!(matches!(row.get::<bool>(2), Err(StoreError::Corrupt(_))));
    assert!(matches!(row.get::<i64>(5), Err(StoreError::Corrupt(_))));
}
