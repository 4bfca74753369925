//! Service wiring: where things live and how to reach the peers.
//!
//! Precedence is `defaults < orch.toml < ORCH_* environment`. Policy (stages, grace, state
//! mappings, switches) is *not* configuration: it lives in `rules/`. The few `ORCH_RECONCILE_*`
//! values kept here are operator overrides that win over the rules, because they came from
//! the original service and an operator must be able to stop the sweep from the environment.
//!
//! Loading never reads the process environment directly: callers pass a lookup function, so
//! tests exercise precedence without mutating global state.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::secret::Secret;

/// A configuration problem. Every variant names the key or variable that is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `location` is `line:col` when known, so the message reads `file:line:col: message`.
    #[error("{}{}: {message}", path.display(), location.as_deref().map(|l| format!(":{l}")).unwrap_or_default())]
    Parse {
        path: PathBuf,
        location: Option<String>,
        message: String,
    },
    #[error("invalid value for {key}: {value:?} ({expected})")]
    Invalid {
        key: String,
        value: String,
        expected: &'static str,
    },
}

/// The whole service configuration after every source has been applied.
#[derive(Debug, Clone)]
pub struct Config {
    pub db_path: PathBuf,
    pub repos_dir: PathBuf,
    pub listen: SocketAddr,
    pub rules_dir: PathBuf,
    pub gitea: GiteaConfig,
    pub plane: PlaneConfig,
    pub telegram: TelegramConfig,
    pub reconcile: ReconcileConfig,
    pub worker: WorkerConfig,
    pub http: HttpConfig,
    pub projects: Vec<Project>,
    pub agents: BTreeMap<String, AgentConfig>,
    /// Non-fatal problems found while loading (e.g. unparsable grace overrides JSON).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct GiteaConfig {
    pub url: Option<String>,
    pub token: Option<Secret>,
    pub webhook_secret: Option<Secret>,
}

#[derive(Debug, Clone, Default)]
pub struct PlaneConfig {
    pub url: Option<String>,
    pub api_token: Option<Secret>,
    pub workspace: Option<String>,
    pub webhook_secret: Option<Secret>,
    /// Plane allows 60 requests/minute per API key; stay under it.
    pub requests_per_minute: u32,
    /// The Plane user id of orch's API key; webhooks caused by that user are ignored.
    pub actor_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct TelegramConfig {
    pub bot_token: Option<Secret>,
    pub chat_id: Option<String>,
    pub api_url: String,
}

/// Operator overrides for the reconciler. `None` means "the rules decide".
#[derive(Debug, Clone)]
pub struct ReconcileConfig {
    pub enabled: Option<bool>,
    pub plane_enabled: Option<bool>,
    pub notify_unblock: Option<bool>,
    pub interval: Duration,
    pub grace_default: Option<Duration>,
    pub grace_overrides: BTreeMap<String, Duration>,
}

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// How many agent jobs run at once.
    pub concurrency: usize,
    /// How long a git command may take before it is killed.
    pub git_timeout: Duration,
}

/// Outbound HTTP to Plane, Gitea and Telegram.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Retries after a network error, 5xx or 429 (with exponential backoff).
    pub retries: usize,
    /// The first backoff delay; it doubles per retry up to 5 s.
    pub retry_base_delay: Duration,
    /// One attempt's limit (connect, send, read the reply).
    pub timeout: Duration,
}

/// One Plane project and the Gitea repository its work items are built in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    pub plane_project_id: String,
    /// Plane's project identifier, e.g. `ET` for `ET-42`.
    pub identifier: String,
    /// Gitea `owner/name`.
    pub repo: String,
    pub clone_url: Option<String>,
}

/// How to run one agent. The rules name agents; this says which program each one is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// argv; run without a shell.
    pub command: Vec<String>,
    pub timeout: Duration,
    /// Push the task branch after a successful job.
    pub push: bool,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_TELEGRAM_API_URL: &str = "https://api.telegram.org";
/// Where the rules are looked for when nobody said; the only rules directory that may be
/// missing (the embedded defaults are used then).
pub const DEFAULT_RULES_DIR: &str = "./rules";
const DEFAULT_AGENT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

impl Default for Config {
    fn default() -> Self {
        Config {
            db_path: PathBuf::from("./orch.db"),
            repos_dir: PathBuf::from("./repos"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            rules_dir: PathBuf::from(DEFAULT_RULES_DIR),
            gitea: GiteaConfig::default(),
            plane: PlaneConfig {
                requests_per_minute: 50,
                ..PlaneConfig::default()
            },
            telegram: TelegramConfig {
                bot_token: None,
                chat_id: None,
                api_url: DEFAULT_TELEGRAM_API_URL.to_string(),
            },
            reconcile: ReconcileConfig {
                enabled: None,
                plane_enabled: None,
                notify_unblock: None,
                interval: Duration::from_secs(60),
                grace_default: None,
                grace_overrides: BTreeMap::new(),
            },
            worker: WorkerConfig {
                concurrency: 2,
                git_timeout: Duration::from_secs(120),
            },
            http: HttpConfig {
                retries: 3,
                retry_base_delay: Duration::from_millis(200),
                timeout: Duration::from_secs(15),
            },
            projects: Vec::new(),
            agents: BTreeMap::new(),
            warnings: Vec::new(),
        }
    }
}

impl Config {
    /// Loads the configuration from the process environment and an optional file.
    ///
    /// `file` is `Some` when the operator named a file (it must then exist); otherwise
    /// `./orch.toml` is read if present.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_from(file, &|k| std::env::var(k).ok())
    }

    /// Like [`Config::load`], with the environment supplied by the caller.
    pub fn load_from(
        file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut cfg = Config::default();
        let file = match file {
            Some(p) => Some(p.to_path_buf()),
            None => env("ORCH_CONFIG")
                .map(PathBuf::from)
                .or_else(|| Some(PathBuf::from("orch.toml")).filter(|p| p.is_file())),
        };
        if let Some(path) = file {
            let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            let raw: FileConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
                path: path.clone(),
                location: e.span().map(|s| {
                    let (line, col) = line_col(&text, s.start);
                    format!("{line}:{col}")
                }),
                message: e.message().trim().to_string(),
            })?;
            raw.apply(&mut cfg)?;
        }
        apply_env(&mut cfg, env)?;
        for w in &cfg.warnings {
            tracing::warn!("{w}");
        }
        Ok(cfg)
    }

    /// The clone URL for a project: explicit, or derived from the Gitea base URL.
    pub fn clone_url(&self, project: &Project) -> Option<String> {
        project.clone_url.clone().or_else(|| {
            self.gitea
                .url
                .as_deref()
                .map(|u| format!("{}/{}.git", u.trim_end_matches('/'), project.repo))
        })
    }

    pub fn project_by_identifier(&self, identifier: &str) -> Option<&Project> {
        self.projects
            .iter()
            .find(|p| p.identifier.eq_ignore_ascii_case(identifier))
    }

    pub fn project_by_plane_id(&self, plane_project_id: &str) -> Option<&Project> {
        self.projects
            .iter()
            .find(|p| p.plane_project_id == plane_project_id)
    }
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

// ---------------------------------------------------------------------------------------------
// The file format. Unknown keys are errors: a typo must fail, not be silently ignored.

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    db_path: Option<PathBuf>,
    repos_dir: Option<PathBuf>,
    listen: Option<String>,
    rules_dir: Option<PathBuf>,
    gitea: Option<FileGitea>,
    plane: Option<FilePlane>,
    telegram: Option<FileTelegram>,
    reconcile: Option<FileReconcile>,
    worker: Option<FileWorker>,
    http: Option<FileHttp>,
    #[serde(default)]
    projects: Vec<FileProject>,
    #[serde(default)]
    agents: BTreeMap<String, FileAgent>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileGitea {
    url: Option<String>,
    token: Option<Secret>,
    webhook_secret: Option<Secret>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePlane {
    url: Option<String>,
    api_token: Option<Secret>,
    workspace: Option<String>,
    webhook_secret: Option<Secret>,
    requests_per_minute: Option<u32>,
    actor_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTelegram {
    bot_token: Option<Secret>,
    chat_id: Option<TomlScalar>,
    api_url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileReconcile {
    enabled: Option<bool>,
    plane_enabled: Option<bool>,
    notify_unblock: Option<bool>,
    interval: Option<TomlDuration>,
    grace_default: Option<TomlDuration>,
    #[serde(default)]
    grace_overrides: BTreeMap<String, TomlDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileWorker {
    concurrency: Option<usize>,
    git_timeout: Option<TomlDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileHttp {
    retries: Option<usize>,
    retry_base_delay: Option<TomlDuration>,
    timeout: Option<TomlDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileProject {
    plane_project_id: String,
    identifier: String,
    repo: String,
    clone_url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAgent {
    command: Vec<String>,
    timeout: Option<TomlDuration>,
    #[serde(default)]
    push: bool,
}

/// A duration in TOML: an integer number of seconds or a string such as `"90s"`, `"10m"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum TomlDuration {
    Seconds(u64),
    Text(String),
}

/// Telegram chat ids are numbers, but `@channel` names are strings: accept both.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum TomlScalar {
    Int(i64),
    Text(String),
}

impl TomlDuration {
    fn resolve(&self, key: &str) -> Result<Duration, ConfigError> {
        match self {
            TomlDuration::Seconds(s) => Ok(Duration::from_secs(*s)),
            TomlDuration::Text(t) => parse_duration(key, t, false),
        }
    }
}

impl FileConfig {
    fn apply(self, cfg: &mut Config) -> Result<(), ConfigError> {
        if let Some(v) = self.db_path {
            cfg.db_path = v;
        }
        if let Some(v) = self.repos_dir {
            cfg.repos_dir = v;
        }
        if let Some(v) = self.listen {
            cfg.listen = parse_listen("listen", &v)?;
        }
        if let Some(v) = self.rules_dir {
            cfg.rules_dir = v;
        }
        if let Some(g) = self.gitea {
            cfg.gitea.url = g.url.or(cfg.gitea.url.take());
            cfg.gitea.token = g.token.or(cfg.gitea.token.take());
            cfg.gitea.webhook_secret = g.webhook_secret.or(cfg.gitea.webhook_secret.take());
        }
        if let Some(p) = self.plane {
            cfg.plane.url = p.url.or(cfg.plane.url.take());
            cfg.plane.api_token = p.api_token.or(cfg.plane.api_token.take());
            cfg.plane.workspace = p.workspace.or(cfg.plane.workspace.take());
            cfg.plane.webhook_secret = p.webhook_secret.or(cfg.plane.webhook_secret.take());
            cfg.plane.actor_id = p.actor_id.or(cfg.plane.actor_id.take());
            if let Some(n) = p.requests_per_minute {
                cfg.plane.requests_per_minute = positive("plane.requests_per_minute", n)?;
            }
        }
        if let Some(t) = self.telegram {
            cfg.telegram.bot_token = t.bot_token.or(cfg.telegram.bot_token.take());
            if let Some(c) = t.chat_id {
                cfg.telegram.chat_id = Some(match c {
                    TomlScalar::Int(i) => i.to_string(),
                    TomlScalar::Text(s) => s,
                });
            }
            if let Some(u) = t.api_url {
                cfg.telegram.api_url = u;
            }
        }
        if let Some(r) = self.reconcile {
            cfg.reconcile.enabled = r.enabled.or(cfg.reconcile.enabled);
            cfg.reconcile.plane_enabled = r.plane_enabled.or(cfg.reconcile.plane_enabled);
            cfg.reconcile.notify_unblock = r.notify_unblock.or(cfg.reconcile.notify_unblock);
            if let Some(d) = r.interval {
                cfg.reconcile.interval =
                    nonzero("reconcile.interval", d.resolve("reconcile.interval")?)?;
            }
            if let Some(d) = r.grace_default {
                cfg.reconcile.grace_default = Some(d.resolve("reconcile.grace_default")?);
            }
            for (stage, d) in r.grace_overrides {
                let key = format!("reconcile.grace_overrides.{stage}");
                let d = d.resolve(&key)?;
                cfg.reconcile.grace_overrides.insert(stage, d);
            }
        }
        if let Some(w) = self.worker {
            if let Some(n) = w.concurrency {
                cfg.worker.concurrency = positive("worker.concurrency", n)?;
            }
            if let Some(d) = w.git_timeout {
                cfg.worker.git_timeout =
                    nonzero("worker.git_timeout", d.resolve("worker.git_timeout")?)?;
            }
        }
        if let Some(h) = self.http {
            if let Some(n) = h.retries {
                cfg.http.retries = n;
            }
            if let Some(d) = h.retry_base_delay {
                cfg.http.retry_base_delay = d.resolve("http.retry_base_delay")?;
            }
            if let Some(d) = h.timeout {
                cfg.http.timeout = nonzero("http.timeout", d.resolve("http.timeout")?)?;
            }
        }
        for (i, p) in self.projects.into_iter().enumerate() {
            let key = format!("projects[{i}]");
            if p.identifier.trim().is_empty() {
                return Err(invalid(
                    &format!("{key}.identifier"),
                    &p.identifier,
                    "a Plane project identifier such as \"ET\"",
                ));
            }
            if !p.repo.contains('/') {
                return Err(invalid(
                    &format!("{key}.repo"),
                    &p.repo,
                    "a Gitea repository as \"owner/name\"",
                ));
            }
            cfg.projects.push(Project {
                plane_project_id: p.plane_project_id,
                identifier: p.identifier.trim().to_ascii_uppercase(),
                repo: p.repo,
                clone_url: p.clone_url,
            });
        }
        for (name, a) in self.agents {
            let key = format!("agents.{name}");
            if a.command.is_empty() || a.command[0].trim().is_empty() {
                return Err(invalid(
                    &format!("{key}.command"),
                    "[]",
                    "a non-empty argv list",
                ));
            }
            let timeout = match a.timeout {
                Some(d) => nonzero(
                    &format!("{key}.timeout"),
                    d.resolve(&format!("{key}.timeout"))?,
                )?,
                None => DEFAULT_AGENT_TIMEOUT,
            };
            cfg.agents.insert(
                name,
                AgentConfig {
                    command: a.command,
                    timeout,
                    push: a.push,
                },
            );
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The environment. Names come from the original service and are part of the contract.

fn apply_env(cfg: &mut Config, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
    // An empty variable counts as unset: `ORCH_X=` in a unit file should not be an error.
    let get = |k: &str| env(k).filter(|v| !v.trim().is_empty());

    if let Some(v) = get("ORCH_DB_PATH") {
        cfg.db_path = PathBuf::from(v);
    }
    if let Some(v) = get("ORCH_REPOS_DIR") {
        cfg.repos_dir = PathBuf::from(v);
    }
    if let Some(v) = get("ORCH_LISTEN") {
        cfg.listen = parse_listen("ORCH_LISTEN", &v)?;
    }
    if let Some(v) = get("ORCH_RULES_DIR") {
        cfg.rules_dir = PathBuf::from(v);
    }
    if let Some(v) = get("ORCH_GITEA_URL") {
        cfg.gitea.url = Some(v);
    }
    if let Some(v) = get("ORCH_GITEA_TOKEN") {
        cfg.gitea.token = Some(Secret::new(v));
    }
    if let Some(v) = get("ORCH_GITEA_WEBHOOK_SECRET") {
        cfg.gitea.webhook_secret = Some(Secret::new(v));
    }
    if let Some(v) = get("ORCH_PLANE_URL") {
        cfg.plane.url = Some(v);
    }
    if let Some(v) = get("ORCH_PLANE_API_TOKEN") {
        cfg.plane.api_token = Some(Secret::new(v));
    }
    if let Some(v) = get("ORCH_PLANE_WORKSPACE") {
        cfg.plane.workspace = Some(v);
    }
    if let Some(v) = get("ORCH_PLANE_WEBHOOK_SECRET") {
        cfg.plane.webhook_secret = Some(Secret::new(v));
    }
    if let Some(v) = get("ORCH_PLANE_ACTOR_ID") {
        cfg.plane.actor_id = Some(v);
    }
    if let Some(v) = get("ORCH_PLANE_REQUESTS_PER_MINUTE") {
        cfg.plane.requests_per_minute = parse_positive("ORCH_PLANE_REQUESTS_PER_MINUTE", &v)?;
    }
    if let Some(v) = get("ORCH_TELEGRAM_BOT_TOKEN") {
        cfg.telegram.bot_token = Some(Secret::new(v));
    }
    if let Some(v) = get("ORCH_TELEGRAM_CHAT_ID") {
        cfg.telegram.chat_id = Some(v);
    }
    if let Some(v) = get("ORCH_TELEGRAM_API_URL") {
        cfg.telegram.api_url = v;
    }
    if let Some(v) = get("ORCH_RECONCILE_ENABLED") {
        cfg.reconcile.enabled = Some(parse_bool("ORCH_RECONCILE_ENABLED", &v)?);
    }
    if let Some(v) = get("ORCH_RECONCILE_PLANE_ENABLED") {
        cfg.reconcile.plane_enabled = Some(parse_bool("ORCH_RECONCILE_PLANE_ENABLED", &v)?);
    }
    if let Some(v) = get("ORCH_RECONCILE_NOTIFY_UNBLOCK") {
        cfg.reconcile.notify_unblock = Some(parse_bool("ORCH_RECONCILE_NOTIFY_UNBLOCK", &v)?);
    }
    if let Some(v) = get("ORCH_RECONCILE_INTERVAL_S") {
        cfg.reconcile.interval = nonzero_env("ORCH_RECONCILE_INTERVAL_S", &v, true)?;
    }
    if let Some(v) = get("ORCH_RECONCILE_GRACE_DEFAULT_S") {
        cfg.reconcile.grace_default =
            Some(parse_duration("ORCH_RECONCILE_GRACE_DEFAULT_S", &v, true)?);
    }
    if let Some(v) = get("ORCH_RECONCILE_GRACE_OVERRIDES_JSON") {
        match parse_grace_overrides_json(&v) {
            Ok(map) => cfg.reconcile.grace_overrides = map,
            Err(why) => {
                // The original service treated a bad value as "no overrides": keep that, loudly.
                cfg.reconcile.grace_overrides.clear();
                cfg.warnings.push(format!(
                    "ORCH_RECONCILE_GRACE_OVERRIDES_JSON ignored ({why}); using the default grace for every stage"
                ));
            }
        }
    }
    if let Some(v) = get("ORCH_HTTP_TIMEOUT") {
        cfg.http.timeout = nonzero_env("ORCH_HTTP_TIMEOUT", &v, false)?;
    }
    if let Some(v) = get("ORCH_WORKER_CONCURRENCY") {
        cfg.worker.concurrency = parse_positive("ORCH_WORKER_CONCURRENCY", &v)?;
    }
    Ok(())
}

/// Parses `{"development": 30, "review": "2h"}`: seconds as numbers or duration strings.
pub fn parse_grace_overrides_json(text: &str) -> Result<BTreeMap<String, Duration>, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let obj = value
        .as_object()
        .ok_or_else(|| "expected a JSON object of stage -> seconds".to_string())?;
    let mut out = BTreeMap::new();
    for (stage, v) in obj {
        let d = match v {
            serde_json::Value::Number(n) => n
                .as_u64()
                .map(Duration::from_secs)
                .or_else(|| {
                    n.as_f64()
                        .filter(|f| *f >= 0.0 && f.is_finite())
                        .map(Duration::from_secs_f64)
                })
                .ok_or_else(|| {
                    format!("grace for {stage:?} must be a non-negative number of seconds")
                })?,
            serde_json::Value::String(s) => {
                parse_duration(stage, s, true).map_err(|e| e.to_string())?
            }
            _ => return Err(format!("grace for {stage:?} must be a number of seconds")),
        };
        out.insert(stage.clone(), d);
    }
    Ok(out)
}

fn invalid(key: &str, value: &str, expected: &'static str) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        value: value.to_string(),
        expected,
    }
}

/// Booleans as operators write them: true/false, 1/0, yes/no, on/off (any case).
pub fn parse_bool(key: &str, v: &str) -> Result<bool, ConfigError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(invalid(key, v, "one of true/false/1/0/yes/no")),
    }
}

/// `90s`, `10m`, `2h`, `1h 30m`; plain digits are seconds when `plain_seconds` is set
/// (variables whose name ends in `_S`).
pub fn parse_duration(key: &str, v: &str, plain_seconds: bool) -> Result<Duration, ConfigError> {
    let t = v.trim();
    if plain_seconds && !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| invalid(key, v, "a number of seconds"));
    }
    humantime::parse_duration(t).map_err(|_| {
        invalid(
            key,
            v,
            if plain_seconds {
                "seconds, or a duration such as 90s, 10m, 2h"
            } else {
                "a duration such as 90s, 10m, 2h"
            },
        )
    })
}

fn parse_listen(key: &str, v: &str) -> Result<SocketAddr, ConfigError> {
    v.trim()
        .parse()
        .map_err(|_| invalid(key, v, "host:port, e.g. 127.0.0.1:8080"))
}

fn parse_positive<T: std::str::FromStr + PartialOrd + Default>(
    key: &str,
    v: &str,
) -> Result<T, ConfigError> {
    match v.trim().parse::<T>() {
        Ok(n) if n > T::default() => Ok(n),
        _ => Err(invalid(key, v, "a positive whole number")),
    }
}

fn positive<T: PartialOrd + Default + ToString>(key: &str, n: T) -> Result<T, ConfigError> {
    if n > T::default() {
        Ok(n)
    } else {
        Err(invalid(key, &n.to_string(), "a positive whole number"))
    }
}

/// A duration from the environment that must be positive; the error quotes the value as set.
fn nonzero_env(key: &str, raw: &str, plain_seconds: bool) -> Result<Duration, ConfigError> {
    let d = parse_duration(key, raw, plain_seconds)?;
    if d.is_zero() {
        Err(invalid(key, raw, "a duration greater than zero"))
    } else {
        Ok(d)
    }
}

fn nonzero(key: &str, d: Duration) -> Result<Duration, ConfigError> {
    if d.is_zero() {
        Err(invalid(key, "0", "a duration greater than zero"))
    } else {
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_is_one_based() {
        assert_eq!(line_col("a\nbc", 3), (2, 2));
        assert_eq!(line_col("abc", 0), (1, 1));
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("k", "90s", false).unwrap(),
            Duration::from_secs(90)
        );
        assert_eq!(
            parse_duration("k", "10m", false).unwrap(),
            Duration::from_secs(600)
        );
        assert_eq!(
            parse_duration("k", "2h", false).unwrap(),
            Duration::from_secs(7200)
        );
        assert_eq!(
            parse_duration("k", "45", true).unwrap(),
            Duration::from_secs(45)
        );
        assert!(parse_duration("k", "45", false).is_err());
        assert!(parse_duration("k", "soon", true).is_err());
    }
}
