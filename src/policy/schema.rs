//! The rule files as written: TOML deserialized with spans, so every validation error can
//! point at `file:line:col`. Unknown keys are errors (a typo must fail, not be ignored).

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// One rule file. Every section is optional in a file; the set as a whole must define
/// each section exactly once.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFile {
    #[serde(default)]
    pub stage: Vec<RawStage>,
    pub agents: Option<Spanned<BTreeMap<String, RawAgent>>>,
    pub reconcile: Option<Spanned<RawReconcile>>,
    pub grace: Option<Spanned<RawGrace>>,
    pub plane: Option<Spanned<RawPlane>>,
    pub templates: Option<Spanned<BTreeMap<String, String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStage {
    pub name: Spanned<String>,
    pub agent: Option<Spanned<String>>,
    pub gate: Option<Spanned<String>>,
    pub next: Option<Spanned<String>>,
    pub on_reject: Option<Spanned<String>>,
    #[serde(default)]
    pub human_gate: bool,
    /// May the sweep advance this stage? Defaults to `!human_gate`; `true` on a human gate is
    /// rejected by validation.
    pub sweep: Option<Spanned<bool>>,
    #[serde(default)]
    pub terminal: bool,
    /// Where the `cancel` action sends a task (from any stage); must be terminal.
    pub cancel: Option<Spanned<bool>>,
    #[serde(default)]
    pub gitea_reviews: bool,
    /// Former names of this stage: a reload that renames a stage moves its tasks here.
    #[serde(default)]
    pub renamed_from: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAgent {
    pub max_attempts: Option<u32>,
    pub start_attempts: Option<u32>,
    pub backoff: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawReconcile {
    pub enabled: Option<bool>,
    pub plane_enabled: Option<bool>,
    pub notify_unblock: Option<bool>,
    /// The longest the sweep waits before reading a red gate again.
    pub red_backoff_cap: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGrace {
    pub default: Option<Spanned<String>>,
    #[serde(default)]
    pub stages: BTreeMap<String, Spanned<String>>,
    pub expr: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPlane {
    pub inbound: Option<RawInbound>,
    pub outbound: Option<RawOutbound>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawInbound {
    #[serde(default)]
    pub states: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    pub groups: BTreeMap<String, Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOutbound {
    pub awaiting_human: Option<String>,
    pub needs_input: Option<String>,
    pub blocked: Option<String>,
    #[serde(default)]
    pub entered: BTreeMap<String, Spanned<String>>,
}
