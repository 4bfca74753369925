//! Configuration precedence (defaults < file < environment) and bad values.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use orch::config::{Config, ConfigError};

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

fn load(file: Option<&Path>, pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::load_from(file, &env_of(pairs))
}

fn write(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
    let p = dir.path().join("orch.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn nothing_configured_gives_working_defaults() {
    let cfg = load(None, &[]).unwrap();
    assert_eq!(cfg.db_path, Path::new("./orch.db"));
    assert_eq!(cfg.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(cfg.rules_dir, Path::new("./rules"));
    assert_eq!(cfg.telegram.api_url, "https://api.telegram.org");
    assert!(cfg.plane.api_token.is_none() && cfg.gitea.token.is_none());
    assert_eq!(
        cfg.reconcile.enabled, None,
        "the rules decide unless an operator overrides"
    );
    assert!(cfg.warnings.is_empty());
}

#[test]
fn file_overrides_defaults_and_environment_overrides_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        &dir,
        r#"
db_path = "/var/lib/orch/file.db"
listen = "0.0.0.0:9000"

[plane]
url = "https://plane.example.com"
workspace = "acme"

[reconcile]
interval = "5m"
grace_default = 900
enabled = true

[replicas]
name = "orch-a"
lease_ttl = "30s"

[[projects]]
plane_project_id = "4f1c"
identifier = "et"
repo = "acme/enduro-trails"

[agents.developer]
command = ["claude", "-p", "implement"]
timeout = "45m"
push = true
"#,
    );
    let cfg = load(Some(&file), &[]).unwrap();
    assert_eq!(cfg.db_path, Path::new("/var/lib/orch/file.db"));
    assert_eq!(cfg.listen.to_string(), "0.0.0.0:9000");
    assert_eq!(cfg.reconcile.interval, Duration::from_secs(300));
    assert_eq!(cfg.replicas.name.as_deref(), Some("orch-a"));
    assert_eq!(cfg.replicas.lease_ttl, Duration::from_secs(30));
    assert_eq!(cfg.reconcile.grace_default, Some(Duration::from_secs(900)));
    assert_eq!(cfg.projects[0].identifier, "ET");
    let dev = &cfg.agents["developer"];
    assert_eq!(dev.timeout, Duration::from_secs(45 * 60));
    assert!(dev.push);

    let cfg = load(
        Some(&file),
        &[
            ("ORCH_DB_PATH", "/tmp/env.db"),
            ("ORCH_RECONCILE_INTERVAL_S", "30"),
            ("ORCH_RECONCILE_ENABLED", "no"),
            ("ORCH_PLANE_WORKSPACE", "other"),
        ],
    )
    .unwrap();
    assert_eq!(cfg.db_path, Path::new("/tmp/env.db"));
    assert_eq!(cfg.reconcile.interval, Duration::from_secs(30));
    assert_eq!(cfg.reconcile.enabled, Some(false));
    assert_eq!(cfg.plane.workspace.as_deref(), Some("other"));
    assert_eq!(
        cfg.plane.url.as_deref(),
        Some("https://plane.example.com"),
        "untouched keys keep the file's value"
    );
    assert_eq!(cfg.listen.to_string(), "0.0.0.0:9000");
}

#[test]
fn every_orch_variable_is_read() {
    let cfg = load(
        None,
        &[
            ("ORCH_DB_PATH", "/d/orch.db"),
            ("ORCH_REPOS_DIR", "/d/repos"),
            ("ORCH_LISTEN", "127.0.0.1:0"),
            ("ORCH_RULES_DIR", "/d/rules"),
            ("ORCH_GITEA_URL", "http://gitea"),
            ("ORCH_GITEA_TOKEN", "gt"),
            ("ORCH_GITEA_WEBHOOK_SECRET", "gs"),
            ("ORCH_PLANE_URL", "http://plane"),
            ("ORCH_PLANE_API_TOKEN", "pt"),
            ("ORCH_PLANE_WORKSPACE", "ws"),
            ("ORCH_PLANE_WEBHOOK_SECRET", "ps"),
            ("ORCH_TELEGRAM_BOT_TOKEN", "tt"),
            ("ORCH_TELEGRAM_CHAT_ID", "-100"),
            ("ORCH_TELEGRAM_API_URL", "http://tg"),
            ("ORCH_RECONCILE_ENABLED", "1"),
            ("ORCH_RECONCILE_PLANE_ENABLED", "0"),
            ("ORCH_RECONCILE_INTERVAL_S", "2m"),
            ("ORCH_RECONCILE_GRACE_DEFAULT_S", "120"),
            (
                "ORCH_RECONCILE_GRACE_OVERRIDES_JSON",
                r#"{"development": 30, "review": 7200}"#,
            ),
            ("ORCH_RECONCILE_NOTIFY_UNBLOCK", "yes"),
            ("ORCH_HTTP_TIMEOUT", "40s"),
            ("ORCH_REPLICA_NAME", "orch-b"),
            ("ORCH_LEASE_TTL", "20s"),
        ],
    )
    .unwrap();
    assert_eq!(cfg.replicas.name.as_deref(), Some("orch-b"));
    assert_eq!(cfg.replicas.lease_ttl, Duration::from_secs(20));
    assert_eq!(cfg.http.timeout, Duration::from_secs(40));
    assert_eq!(cfg.repos_dir, Path::new("/d/repos"));
    assert_eq!(cfg.rules_dir, Path::new("/d/rules"));
    assert_eq!(cfg.gitea.url.as_deref(), Some("http://gitea"));
    assert_eq!(cfg.gitea.token.as_ref().unwrap().expose(), "gt");
    assert_eq!(cfg.gitea.webhook_secret.as_ref().unwrap().expose(), "gs");
    assert_eq!(cfg.plane.api_token.as_ref().unwrap().expose(), "pt");
    assert_eq!(cfg.plane.webhook_secret.as_ref().unwrap().expose(), "ps");
    assert_eq!(cfg.telegram.bot_token.as_ref().unwrap().expose(), "tt");
    assert_eq!(cfg.telegram.chat_id.as_deref(), Some("-100"));
    assert_eq!(cfg.telegram.api_url, "http://tg");
    assert_eq!(cfg.reconcile.enabled, Some(true));
    assert_eq!(cfg.reconcile.plane_enabled, Some(false));
    assert_eq!(cfg.reconcile.notify_unblock, Some(true));
    assert_eq!(cfg.reconcile.interval, Duration::from_secs(120));
    assert_eq!(cfg.reconcile.grace_default, Some(Duration::from_secs(120)));
}

// The seed's test_config cases: overrides parsed; invalid JSON falls back with a warning.
#[test]
fn grace_overrides_json_is_parsed() {
    let cfg = load(
        None,
        &[(
            "ORCH_RECONCILE_GRACE_OVERRIDES_JSON",
            r#"{"development": 30, "review": 7200}"#,
        )],
    )
    .unwrap();
    assert_eq!(
        cfg.reconcile.grace_overrides["development"],
        Duration::from_secs(30)
    );
    assert_eq!(
        cfg.reconcile.grace_overrides["review"],
        Duration::from_secs(7200)
    );
    assert!(!cfg.reconcile.grace_overrides.contains_key("testing"));
}

#[test]
fn invalid_grace_overrides_json_falls_back_with_a_warning() {
    for bad in [
        "{not valid json",
        "[1, 2]",
        r#"{"development": "soon"}"#,
        r#"{"development": -5}"#,
    ] {
        let cfg = load(None, &[("ORCH_RECONCILE_GRACE_OVERRIDES_JSON", bad)]).unwrap();
        assert!(cfg.reconcile.grace_overrides.is_empty(), "{bad}");
        assert_eq!(cfg.warnings.len(), 1, "{bad}");
        assert!(cfg.warnings[0].contains("ORCH_RECONCILE_GRACE_OVERRIDES_JSON"));
    }
}

#[test]
fn bad_environment_values_name_the_variable_and_the_value() {
    let cases = [
        ("ORCH_RECONCILE_ENABLED", "maybe"),
        ("ORCH_RECONCILE_PLANE_ENABLED", "2"),
        ("ORCH_RECONCILE_NOTIFY_UNBLOCK", "yep"),
        ("ORCH_RECONCILE_INTERVAL_S", "fast"),
        ("ORCH_RECONCILE_INTERVAL_S", "0"),
        ("ORCH_RECONCILE_GRACE_DEFAULT_S", "-1"),
        ("ORCH_LISTEN", "localhost"),
        ("ORCH_WORKER_CONCURRENCY", "0"),
        ("ORCH_HTTP_TIMEOUT", "soon"),
        ("ORCH_HTTP_TIMEOUT", "0s"),
        ("ORCH_LEASE_TTL", "0s"),
        ("ORCH_LEASE_TTL", "a while"),
    ];
    for (key, value) in cases {
        let err = load(None, &[(key, value)]).unwrap_err().to_string();
        assert!(err.contains(key), "{key}={value}: {err}");
        assert!(err.contains(value), "{key}={value}: {err}");
    }
}

// Issue 11: `1e30` seconds panicked in `Duration::from_secs_f64` at startup. A number no
// duration can hold is a configuration error naming the key (and stage) and the value, not a
// crash and not a silent fallback.
#[test]
fn a_grace_override_too_large_for_a_duration_is_a_config_error() {
    for (json, value) in [
        (r#"{"review": 1e30}"#, "1e+30"),
        (
            r#"{"review": 1.8446744073709552e19}"#,
            "1.8446744073709552e+19",
        ),
    ] {
        let err = load(None, &[("ORCH_RECONCILE_GRACE_OVERRIDES_JSON", json)])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ORCH_RECONCILE_GRACE_OVERRIDES_JSON.review"),
            "{json}: {err}"
        );
        assert!(err.contains(value), "{json}: {err}");
    }
    // The largest whole number JSON carries still fits: seconds are u64.
    let cfg = load(
        None,
        &[(
            "ORCH_RECONCILE_GRACE_OVERRIDES_JSON",
            r#"{"review": 18446744073709551615}"#,
        )],
    )
    .unwrap();
    assert_eq!(
        cfg.reconcile.grace_overrides["review"],
        Duration::from_secs(u64::MAX)
    );
}

#[test]
fn bad_file_values_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str)] = &[
        ("listen = \"nope\"", "listen"),
        (
            "[reconcile]\ninterval = \"sometimes\"",
            "reconcile.interval",
        ),
        (
            "[reconcile]\ngrace_overrides = { review = \"x\" }",
            "reconcile.grace_overrides.review",
        ),
        ("[agents.dev]\ncommand = []", "agents.dev.command"),
        (
            "[agents.dev]\ncommand = [\"x\"]\ntimeout = \"1 fortnight\"",
            "agents.dev.timeout",
        ),
        (
            "[[projects]]\nplane_project_id = \"p\"\nidentifier = \"ET\"\nrepo = \"noslash\"",
            "projects[0].repo",
        ),
        ("[worker]\nconcurrency = 0", "worker.concurrency"),
        ("[http]\ntimeout = \"0s\"", "http.timeout"),
        ("[replicas]\nlease_ttl = \"0s\"", "replicas.lease_ttl"),
    ];
    for (text, key) in cases {
        let file = write(&dir, text);
        let err = load(Some(&file), &[]).unwrap_err().to_string();
        assert!(err.contains(key), "{text}: {err}");
    }
}

#[test]
fn unknown_keys_and_syntax_errors_point_at_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        &dir,
        "db_path = \"x.db\"\n[reconcile]\nintervall = \"5m\"\n",
    );
    let err = load(Some(&file), &[]).unwrap_err().to_string();
    assert!(err.contains("orch.toml:3:1"), "{err}");
    assert!(err.contains("intervall"), "{err}");

    let file = write(&dir, "db_path = \n");
    let err = load(Some(&file), &[]).unwrap_err().to_string();
    assert!(err.contains("orch.toml:1:"), "{err}");
}

#[test]
fn a_named_config_file_must_exist() {
    let err = load(Some(Path::new("/nonexistent/orch.toml")), &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/orch.toml"), "{err}");
}

#[test]
fn secrets_never_appear_in_debug_output() {
    let cfg = load(
        None,
        &[
            ("ORCH_GITEA_TOKEN", "gitea-token-value"),
            ("ORCH_GITEA_WEBHOOK_SECRET", "gitea-secret-value"),
            ("ORCH_PLANE_API_TOKEN", "plane-token-value"),
            ("ORCH_PLANE_WEBHOOK_SECRET", "plane-secret-value"),
            ("ORCH_TELEGRAM_BOT_TOKEN", "telegram-token-value"),
        ],
    )
    .unwrap();
    let dump = format!("{cfg:?}");
    for secret in [
        "gitea-token-value",
        "gitea-secret-value",
        "plane-token-value",
        "plane-secret-value",
        "telegram-token-value",
    ] {
        assert!(!dump.contains(secret), "{secret} leaked");
    }
}

#[test]
fn clone_url_defaults_to_the_gitea_url() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        &dir,
        "[gitea]\nurl = \"https://git.example.com/\"\n[[projects]]\nplane_project_id = \"p\"\nidentifier = \"ET\"\nrepo = \"acme/et\"\n",
    );
    let cfg = load(Some(&file), &[]).unwrap();
    assert_eq!(
        cfg.clone_url(&cfg.projects[0]).as_deref(),
        Some("https://git.example.com/acme/et.git")
    );
    assert_eq!(
        cfg.project_by_identifier("et").map(|p| p.repo.as_str()),
        Some("acme/et")
    );
}

/// The README is the configuration reference: its example must load, and its table must name
/// exactly the variables the code reads.
mod readme {
    use super::*;

    const README: &str = include_str!("../README.md");
    const ENV_RS: &str = include_str!("../src/config/env.rs");

    fn orch_vars(text: &str) -> std::collections::BTreeSet<String> {
        let mut out = std::collections::BTreeSet::new();
        let mut rest = text;
        while let Some(i) = rest.find("ORCH_") {
            let name: String = rest[i..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            // `ORCH_RECONCILE_GRACE_*`-style families and prefixes are not variables.
            if !name.ends_with('_') {
                out.insert(name.clone());
            }
            rest = &rest[i + name.len()..];
        }
        out
    }

    #[test]
    fn the_example_orch_toml_loads() {
        let start = README
            .find("An example `orch.toml`")
            .expect("README has an example orch.toml");
        let block = &README[start..];
        let open = block.find("```toml\n").expect("a toml block follows") + "```toml\n".len();
        let close = block[open..].find("```").expect("the block is closed") + open;
        let dir = tempfile::tempdir().unwrap();
        let file = write(&dir, &block[open..close]);
        let cfg = load(Some(&file), &[]).unwrap();
        assert_eq!(cfg.projects.len(), 1);
        assert_eq!(cfg.projects[0].identifier, "ET");
        assert!(cfg.agents["developer"].push);
    }

    #[test]
    fn the_configuration_table_names_every_variable_the_code_reads() {
        let table: String = README
            .lines()
            .skip_while(|l| !l.starts_with("| key in `orch.toml`"))
            .take_while(|l| l.starts_with('|'))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(!table.is_empty(), "README has the configuration table");
        let documented = orch_vars(&table);
        // What the code reads: the names passed to `get("…")`. ORCH_CONFIG (the file's path,
        // read through `env`) is described in the text above the table.
        let read: std::collections::BTreeSet<String> = ENV_RS
            .match_indices("get(\"ORCH_")
            .map(|(i, m)| {
                ENV_RS[i + m.len() - "ORCH_".len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                    .collect()
            })
            .collect();
        assert!(read.len() > 20, "found the variables read: {read:?}");
        let undocumented: Vec<_> = read.difference(&documented).collect();
        let unknown: Vec<_> = documented.difference(&read).collect();
        assert!(
            undocumented.is_empty(),
            "read but not in the README table: {undocumented:?}"
        );
        assert!(
            unknown.is_empty(),
            "in the README table but never read: {unknown:?}"
        );
    }
}

#[test]
fn plane_since_is_now_or_an_rfc3339_time_and_anything_else_is_an_error_naming_it() {
    use orch::config::PlaneSince;
    let c = load(None, &[("ORCH_RECONCILE_PLANE_SINCE", "now")]).unwrap();
    assert_eq!(c.reconcile.plane_since, Some(PlaneSince::Now));
    let c = load(
        None,
        &[("ORCH_RECONCILE_PLANE_SINCE", "2026-11-01T00:00:00Z")],
    )
    .unwrap();
    assert_eq!(
        c.reconcile.plane_since,
        Some(PlaneSince::At(
            orch::clock::Timestamp::parse_rfc3339("2026-11-01T00:00:00Z").unwrap()
        ))
    );
    let err = load(None, &[("ORCH_RECONCILE_PLANE_SINCE", "yesterday")])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ORCH_RECONCILE_PLANE_SINCE") && err.contains("yesterday"),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        &dir,
        "[reconcile]\nplane_since = \"2026-11-01T00:00:00Z\"\n",
    );
    let c = load(Some(&file), &[]).unwrap();
    assert!(matches!(c.reconcile.plane_since, Some(PlaneSince::At(_))));
    assert_eq!(load(None, &[]).unwrap().reconcile.plane_since, None);
}
