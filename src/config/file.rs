//! The `orch.toml` overlay: the file as written, and how it is applied over the defaults.
//!
//! Invariant: unknown keys are errors (`deny_unknown_fields` on every table). A typo must
//! fail, not be silently ignored: a misspelt key would otherwise leave its value, perhaps a
//! kill switch, at the default without a word. Values are checked as they are applied, and
//! each error names the key as it is written in the file (`reconcile.interval`,
//! `projects[2].repo`) so the operator can find it; a file that is not valid TOML is reported
//! with its line and column.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::parse::{invalid, line_col, nonzero, parse_duration, parse_listen, positive};
use super::{
    AgentConfig, Config, ConfigError, DEFAULT_AGENT_TIMEOUT, GiteaConfig, HttpConfig, PlaneConfig,
    Project, ReconcileConfig, TelegramConfig, WorkerConfig,
};
use crate::secret::Secret;

pub(super) fn overlay(cfg: &mut Config, path: &Path) -> Result<(), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let raw: FileConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        location: e.span().map(|s| {
            let (line, col) = line_col(&text, s.start);
            format!("{line}:{col}")
        }),
        message: e.message().trim().to_string(),
    })?;
    raw.apply(cfg)
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    db_path: Option<PathBuf>,
    db_url: Option<String>,
    repos_dir: Option<PathBuf>,
    listen: Option<String>,
    rules_dir: Option<PathBuf>,
    rules: Option<FileRules>,
    decisions: Option<FileDecisions>,
    gitea: Option<FileGitea>,
    plane: Option<FilePlane>,
    telegram: Option<FileTelegram>,
    reconcile: Option<FileReconcile>,
    worker: Option<FileWorker>,
    http: Option<FileHttp>,
    replicas: Option<FileReplicas>,
    #[serde(default)]
    projects: Vec<FileProject>,
    #[serde(default)]
    agents: BTreeMap<String, FileAgent>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileReplicas {
    name: Option<String>,
    lease_ttl: Option<TomlDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRules {
    shadow_dir: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDecisions {
    retention: Option<TomlDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileGitea {
    url: Option<String>,
    token: Option<Secret>,
    webhook_secret: Option<Secret>,
    allow_unsigned: Option<bool>,
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
    allow_unsigned: Option<bool>,
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
    plane_since: Option<String>,
    gate_concurrency: Option<usize>,
    max_gate_checks: Option<usize>,
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
    token: Option<Secret>,
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
        if let Some(v) = self.db_url.filter(|v| !v.trim().is_empty()) {
            cfg.db_url = Some(v);
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
        if let Some(v) = self.rules.and_then(|r| r.shadow_dir) {
            cfg.shadow_rules_dir = Some(v);
        }
        if let Some(d) = self.decisions.and_then(|d| d.retention) {
            cfg.decision_retention =
                nonzero("decisions.retention", d.resolve("decisions.retention")?)?;
        }
        if let Some(g) = self.gitea {
            g.apply(&mut cfg.gitea);
        }
        if let Some(p) = self.plane {
            p.apply(&mut cfg.plane)?;
        }
        if let Some(t) = self.telegram {
            t.apply(&mut cfg.telegram);
        }
        if let Some(r) = self.reconcile {
            r.apply(&mut cfg.reconcile)?;
        }
        if let Some(w) = self.worker {
            w.apply(&mut cfg.worker)?;
        }
        if let Some(h) = self.http {
            h.apply(&mut cfg.http)?;
        }
        if let Some(r) = self.replicas {
            if let Some(n) = r.name.filter(|n| !n.trim().is_empty()) {
                cfg.replicas.name = Some(n);
            }
            if let Some(d) = r.lease_ttl {
                cfg.replicas.lease_ttl =
                    nonzero("replicas.lease_ttl", d.resolve("replicas.lease_ttl")?)?;
            }
        }
        for (i, p) in self.projects.into_iter().enumerate() {
            cfg.projects.push(p.resolve(i)?);
        }
        for (name, a) in self.agents {
            let agent = a.resolve(&name)?;
            cfg.agents.insert(name, agent);
        }
        Ok(())
    }
}

impl FileGitea {
    fn apply(self, gitea: &mut GiteaConfig) {
        gitea.url = self.url.or(gitea.url.take());
        gitea.token = self.token.or(gitea.token.take());
        gitea.webhook_secret = self.webhook_secret.or(gitea.webhook_secret.take());
        gitea.allow_unsigned = self.allow_unsigned.unwrap_or(gitea.allow_unsigned);
    }
}

impl FilePlane {
    fn apply(self, plane: &mut PlaneConfig) -> Result<(), ConfigError> {
        plane.url = self.url.or(plane.url.take());
        plane.api_token = self.api_token.or(plane.api_token.take());
        plane.workspace = self.workspace.or(plane.workspace.take());
        plane.webhook_secret = self.webhook_secret.or(plane.webhook_secret.take());
        plane.actor_id = self.actor_id.or(plane.actor_id.take());
        plane.allow_unsigned = self.allow_unsigned.unwrap_or(plane.allow_unsigned);
        if let Some(n) = self.requests_per_minute {
            plane.requests_per_minute = positive("plane.requests_per_minute", n)?;
        }
        Ok(())
    }
}

impl FileTelegram {
    fn apply(self, telegram: &mut TelegramConfig) {
        telegram.bot_token = self.bot_token.or(telegram.bot_token.take());
        if let Some(c) = self.chat_id {
            telegram.chat_id = Some(match c {
                TomlScalar::Int(i) => i.to_string(),
                TomlScalar::Text(s) => s,
            });
        }
        if let Some(u) = self.api_url {
            telegram.api_url = u;
        }
    }
}

impl FileReconcile {
    fn apply(self, reconcile: &mut ReconcileConfig) -> Result<(), ConfigError> {
        reconcile.enabled = self.enabled.or(reconcile.enabled);
        reconcile.plane_enabled = self.plane_enabled.or(reconcile.plane_enabled);
        reconcile.notify_unblock = self.notify_unblock.or(reconcile.notify_unblock);
        if let Some(d) = self.interval {
            reconcile.interval = nonzero("reconcile.interval", d.resolve("reconcile.interval")?)?;
        }
        if let Some(d) = self.grace_default {
            reconcile.grace_default = Some(d.resolve("reconcile.grace_default")?);
        }
        for (stage, d) in self.grace_overrides {
            let key = format!("reconcile.grace_overrides.{stage}");
            let d = d.resolve(&key)?;
            reconcile.grace_overrides.insert(stage, d);
        }
        if let Some(v) = self.plane_since {
            reconcile.plane_since = Some(super::PlaneSince::parse("reconcile.plane_since", &v)?);
        }
        if let Some(n) = self.gate_concurrency {
            reconcile.gate_concurrency = positive("reconcile.gate_concurrency", n)?;
        }
        if let Some(n) = self.max_gate_checks {
            reconcile.max_gate_checks = positive("reconcile.max_gate_checks", n)?;
        }
        Ok(())
    }
}

impl FileWorker {
    fn apply(self, worker: &mut WorkerConfig) -> Result<(), ConfigError> {
        if let Some(n) = self.concurrency {
            worker.concurrency = positive("worker.concurrency", n)?;
        }
        if let Some(d) = self.git_timeout {
            worker.git_timeout = nonzero("worker.git_timeout", d.resolve("worker.git_timeout")?)?;
        }
        Ok(())
    }
}

impl FileHttp {
    fn apply(self, http: &mut HttpConfig) -> Result<(), ConfigError> {
        http.token = self.token.or(http.token.take());
        if let Some(n) = self.retries {
            http.retries = n;
        }
        if let Some(d) = self.retry_base_delay {
            http.retry_base_delay = d.resolve("http.retry_base_delay")?;
        }
        if let Some(d) = self.timeout {
            http.timeout = nonzero("http.timeout", d.resolve("http.timeout")?)?;
        }
        Ok(())
    }
}

impl FileProject {
    /// `index` is the project's place in `[[projects]]`, for the error's key.
    fn resolve(self, index: usize) -> Result<Project, ConfigError> {
        let key = format!("projects[{index}]");
        if self.identifier.trim().is_empty() {
            return Err(invalid(
                &format!("{key}.identifier"),
                &self.identifier,
                "a Plane project identifier such as \"ET\"",
            ));
        }
        if !self.repo.contains('/') {
            return Err(invalid(
                &format!("{key}.repo"),
                &self.repo,
                "a Gitea repository as \"owner/name\"",
            ));
        }
        Ok(Project {
            plane_project_id: self.plane_project_id,
            identifier: self.identifier.trim().to_ascii_uppercase(),
            repo: self.repo,
            clone_url: self.clone_url,
        })
    }
}

impl FileAgent {
    fn resolve(self, name: &str) -> Result<AgentConfig, ConfigError> {
        let key = format!("agents.{name}");
        if self.command.is_empty() || self.command[0].trim().is_empty() {
            return Err(invalid(
                &format!("{key}.command"),
                "[]",
                "a non-empty argv list",
            ));
        }
        let timeout = match self.timeout {
            Some(d) => nonzero(
                &format!("{key}.timeout"),
                d.resolve(&format!("{key}.timeout"))?,
            )?,
            None => DEFAULT_AGENT_TIMEOUT,
        };
        Ok(AgentConfig {
            command: self.command,
            timeout,
            push: self.push,
        })
    }
}
