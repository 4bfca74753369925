//! The `ORCH_*` environment overlay, applied last so the environment wins over `orch.toml`.
//!
//! The variable names come from the original service and are part of the contract: renaming
//! one would silently drop a setting an operator relies on, kill switches included. Every
//! variable is read here, through the `get` closure with its name as a literal, and nowhere
//! else: `tests/config.rs` checks the README's configuration table against exactly those
//! calls, and a variable read any other way would escape that check.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::parse::{nonzero_env, parse_bool, parse_duration, parse_listen, parse_positive};
use super::{Config, ConfigError};
use crate::secret::Secret;

pub(super) fn overlay(
    cfg: &mut Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    // An empty variable counts as unset: `ORCH_X=` in a unit file should not be an error.
    let get = |k: &str| env(k).filter(|v| !v.trim().is_empty());

    overlay_service(cfg, &get)?;
    if let Some(v) = get("ORCH_GITEA_URL") {
        cfg.gitea.url = Some(v);
    }
    if let Some(v) = get("ORCH_GITEA_TOKEN") {
        cfg.gitea.token = Some(Secret::new(v));
    }
    if let Some(v) = get("ORCH_GITEA_WEBHOOK_SECRET") {
        cfg.gitea.webhook_secret = Some(Secret::new(v));
    }
    if let Some(v) = get("ORCH_GITEA_ALLOW_UNSIGNED") {
        cfg.gitea.allow_unsigned = parse_bool("ORCH_GITEA_ALLOW_UNSIGNED", &v)?;
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
    if let Some(v) = get("ORCH_PLANE_ALLOW_UNSIGNED") {
        cfg.plane.allow_unsigned = parse_bool("ORCH_PLANE_ALLOW_UNSIGNED", &v)?;
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
    if let Some(v) = get("ORCH_RECONCILE_PLANE_SINCE") {
        cfg.reconcile.plane_since =
            Some(super::PlaneSince::parse("ORCH_RECONCILE_PLANE_SINCE", &v)?);
    }
    if let Some(v) = get("ORCH_RECONCILE_GATE_CONCURRENCY") {
        cfg.reconcile.gate_concurrency = parse_positive("ORCH_RECONCILE_GATE_CONCURRENCY", &v)?;
    }
    if let Some(v) = get("ORCH_RECONCILE_MAX_GATE_CHECKS") {
        cfg.reconcile.max_gate_checks = parse_positive("ORCH_RECONCILE_MAX_GATE_CHECKS", &v)?;
    }
    if let Some(v) = get("ORCH_RECONCILE_GRACE_OVERRIDES_JSON") {
        match parse_grace_overrides_json(&v) {
            Ok(map) => cfg.reconcile.grace_overrides = map,
            // A number too large for a duration is not a typo to shrug off: ignoring it would
            // silently replace a grace the operator meant to be long with the default.
            Err(GraceOverridesError::OutOfRange { stage, value }) => {
                return Err(super::parse::invalid(
                    &format!("ORCH_RECONCILE_GRACE_OVERRIDES_JSON.{stage}"),
                    &value,
                    "a number of seconds small enough for a duration",
                ));
            }
            Err(GraceOverridesError::Malformed(why)) => {
                // The original service treated a bad value as "no overrides": keep that, loudly.
                cfg.reconcile.grace_overrides.clear();
                cfg.warnings.push(format!(
                    "ORCH_RECONCILE_GRACE_OVERRIDES_JSON ignored ({why}); using the default grace for every stage"
                ));
            }
        }
    }
    if let Some(v) = get("ORCH_HTTP_TOKEN") {
        cfg.http.token = Some(Secret::new(v));
    }
    if let Some(v) = get("ORCH_HTTP_TIMEOUT") {
        cfg.http.timeout = nonzero_env("ORCH_HTTP_TIMEOUT", &v, false)?;
    }
    if let Some(v) = get("ORCH_WORKER_CONCURRENCY") {
        cfg.worker.concurrency = parse_positive("ORCH_WORKER_CONCURRENCY", &v)?;
    }
    Ok(())
}

/// Where orch keeps its data, listens and finds its rules, and who it is among replicas.
fn overlay_service(
    cfg: &mut Config,
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    if let Some(v) = get("ORCH_DB_PATH") {
        cfg.db_path = PathBuf::from(v);
    }
    if let Some(v) = get("ORCH_DB_URL") {
        cfg.db_url = Some(v);
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
    if let Some(v) = get("ORCH_RULES_SHADOW_DIR") {
        cfg.shadow_rules_dir = Some(PathBuf::from(v));
    }
    if let Some(v) = get("ORCH_DECISIONS_RETENTION") {
        cfg.decision_retention = nonzero_env("ORCH_DECISIONS_RETENTION", &v, false)?;
    }
    if let Some(v) = get("ORCH_REPLICA_NAME") {
        cfg.replicas.name = Some(v);
    }
    if let Some(v) = get("ORCH_LEASE_TTL") {
        cfg.replicas.lease_ttl = nonzero_env("ORCH_LEASE_TTL", &v, false)?;
    }
    Ok(())
}

/// Why `ORCH_RECONCILE_GRACE_OVERRIDES_JSON` could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraceOverridesError {
    /// Not the expected shape; the contract says this falls back to the default grace.
    #[error("{0}")]
    Malformed(String),
    /// A number of seconds that no duration can hold (e.g. `1e30`): a configuration error.
    #[error("grace for {stage:?} is {value}, too large for a duration")]
    OutOfRange { stage: String, value: String },
}

/// Parses `{"development": 30, "review": "2h"}`: seconds as numbers or duration strings.
pub fn parse_grace_overrides_json(
    text: &str,
) -> Result<BTreeMap<String, Duration>, GraceOverridesError> {
    use GraceOverridesError::Malformed;
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| Malformed(format!("not valid JSON: {e}")))?;
    let obj = value
        .as_object()
        .ok_or_else(|| Malformed("expected a JSON object of stage -> seconds".to_string()))?;
    let mut out = BTreeMap::new();
    for (stage, v) in obj {
        let d = match v {
            serde_json::Value::Number(n) => match n.as_u64() {
                Some(secs) => Duration::from_secs(secs),
                None => {
                    let f = n.as_f64().filter(|f| *f >= 0.0).ok_or_else(|| {
                        Malformed(format!(
                            "grace for {stage:?} must be a non-negative number of seconds"
                        ))
                    })?;
                    // Checked: `from_secs_f64` panics on a value like 1e30.
                    Duration::try_from_secs_f64(f).map_err(|_| GraceOverridesError::OutOfRange {
                        stage: stage.clone(),
                        value: n.to_string(),
                    })?
                }
            },
            serde_json::Value::String(s) => {
                parse_duration(stage, s, true).map_err(|e| Malformed(e.to_string()))?
            }
            _ => {
                return Err(Malformed(format!(
                    "grace for {stage:?} must be a number of seconds"
                )));
            }
        };
        out.insert(stage.clone(), d);
    }
    Ok(out)
}
