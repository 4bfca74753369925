//! Service wiring: where things live and how to reach the peers.
//!
//! Precedence is `defaults < orch.toml < ORCH_* environment`. Policy (stages, grace, state
//! mappings, switches) is *not* configuration: it lives in `rules/`. The few `ORCH_RECONCILE_*`
//! values kept here are operator overrides that win over the rules, because they came from
//! the original service and an operator must be able to stop the sweep from the environment.
//!
//! Loading never reads the process environment directly: callers pass a lookup function, so
//! tests exercise precedence without mutating global state.
//!
//! This file holds the types, the defaults and the public API; the overlays that change a
//! [`Config`] live beside it, one per source, in the order they apply (`file.rs`, then
//! `env.rs`), and `parse.rs` holds the value parsers both share.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::secret::Secret;

mod env;
mod file;
mod parse;

pub use env::{GraceOverridesError, parse_grace_overrides_json};
pub use parse::{line_col, parse_bool, parse_duration};

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
    /// `postgres://…`: the data lives in PostgreSQL and `db_path` is not used.
    pub db_url: Option<String>,
    pub repos_dir: PathBuf,
    pub listen: SocketAddr,
    pub rules_dir: PathBuf,
    /// A candidate rule set evaluated beside the live one, never acting (`rules.shadow_dir`).
    pub shadow_rules_dir: Option<PathBuf>,
    /// How long the decision log and the shadow divergences are kept (`decisions.retention`).
    pub decision_retention: Duration,
    pub gitea: GiteaConfig,
    pub plane: PlaneConfig,
    pub telegram: TelegramConfig,
    pub reconcile: ReconcileConfig,
    pub worker: WorkerConfig,
    pub http: HttpConfig,
    /// This process among the replicas sharing one database (`[replicas]`).
    pub replicas: ReplicasConfig,
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
    /// Accept deliveries without a signature when no `webhook_secret` is set. Off by
    /// default: an unsigned endpoint lets anyone who can reach it approve or start work.
    pub allow_unsigned: bool,
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
    /// Accept deliveries without a signature when no `webhook_secret` is set (see
    /// [`GiteaConfig::allow_unsigned`]).
    pub allow_unsigned: bool,
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
    /// The oldest Plane change the Plane-side sweep may replay; `None`: the database's first
    /// start, so a new install never starts agents on the whole backlog.
    pub plane_since: Option<PlaneSince>,
    /// How many gate checks a sweep runs at once (`reconcile.gate_concurrency`).
    pub gate_concurrency: usize,
    /// At most this many gate checks per sweep, oldest-due first; the rest wait for the next
    /// sweep (`reconcile.max_gate_checks`). The default, 1,000, takes about 5 s against a
    /// forge answering in 20 ms at the default concurrency of 4: well inside the 60 s interval.
    pub max_gate_checks: usize,
}

/// `reconcile.plane_since` / `ORCH_RECONCILE_PLANE_SINCE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaneSince {
    /// This start of the process.
    Now,
    At(crate::clock::Timestamp),
}

impl PlaneSince {
    /// `now` or an RFC 3339 time.
    pub fn parse(key: &str, value: &str) -> Result<PlaneSince, ConfigError> {
        if value.trim().eq_ignore_ascii_case("now") {
            return Ok(PlaneSince::Now);
        }
        crate::clock::Timestamp::parse_rfc3339(value.trim())
            .map(PlaneSince::At)
            .map_err(|_| ConfigError::Invalid {
                key: key.to_string(),
                value: value.to_string(),
                expected: "an RFC 3339 time such as 2026-11-30T09:00:00Z, or now",
            })
    }
}

/// Several `orch serve` processes on one PostgreSQL database (issue 15).
#[derive(Debug, Clone)]
pub struct ReplicasConfig {
    /// The readable part of this replica's id (`replicas.name`; default: the host name).
    pub name: Option<String>,
    /// How long a silent replica keeps its leases and running jobs before another replica
    /// takes them over (`replicas.lease_ttl`); heartbeats and renewals run every third of it.
    pub lease_ttl: Duration,
}

/// 15 s: a `kill -9` of a lease holder is taken over in about that long.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(15);

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// How many agent jobs run at once.
    pub concurrency: usize,
    /// How long a git command may take before it is killed.
    pub git_timeout: Duration,
}

/// HTTP: outbound requests to Plane, Gitea and Telegram, and who may read orch's own API.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// When set, every endpoint but `/health`, `/ready` and the webhooks (which carry their
    /// own signatures) requires `Authorization: Bearer <token>`: `/queue` and `/explain`
    /// show work items, branches and agents' questions, which are not for anyone on the
    /// network.
    pub token: Option<Secret>,
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

pub const DEFAULT_TELEGRAM_API_URL: &str = "https://api.telegram.org";
/// Where the rules are looked for when nobody said; the only rules directory that may be
/// missing (the embedded defaults are used then).
pub const DEFAULT_RULES_DIR: &str = "./rules";
/// 30 days: long enough for a monthly audit, short enough that the log stays small.
pub const DEFAULT_DECISION_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
const DEFAULT_AGENT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

impl Default for Config {
    fn default() -> Self {
        Config {
            db_path: PathBuf::from("./orch.db"),
            db_url: None,
            repos_dir: PathBuf::from("./repos"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            rules_dir: PathBuf::from(DEFAULT_RULES_DIR),
            shadow_rules_dir: None,
            decision_retention: DEFAULT_DECISION_RETENTION,
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
                plane_since: None,
                gate_concurrency: 4,
                max_gate_checks: 1000,
            },
            worker: WorkerConfig {
                concurrency: 2,
                git_timeout: Duration::from_secs(120),
            },
            http: HttpConfig {
                token: None,
                retries: 3,
                retry_base_delay: Duration::from_millis(200),
                timeout: Duration::from_secs(15),
            },
            replicas: ReplicasConfig {
                name: None,
                lease_ttl: DEFAULT_LEASE_TTL,
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
            file::overlay(&mut cfg, &path)?;
        }
        env::overlay(&mut cfg, env)?;
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

    #[cfg_attr(orch_audit, allow(dead_code))]
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
