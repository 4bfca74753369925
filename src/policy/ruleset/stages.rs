//! The `[[stage]]` section: each stage checked against the others and the agents, its gate
//! compiled, then the pipeline as a whole — one cancel stage, a way to finish, every stage
//! reachable — since a task in a stage nothing leads to, or one that can never finish, is
//! a pipeline that silently loses work.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use rhai::Engine;
use toml::Spanned;

use super::load::Ctx;
use super::{AgentPolicy, Gate, Stage};
use crate::policy::schema::RawStage;
use crate::policy::{KNOWN_CHECKS, RuleError};

impl Ctx<'_> {
    /// The stages in pipeline order and their compiled gates; `None` when there are no stages,
    /// as nothing else can be checked without them.
    pub(super) fn stages(
        &mut self,
        raw: &[(usize, RawStage)],
        agents: &BTreeMap<String, AgentPolicy>,
        engine: &Engine,
    ) -> Option<(Vec<Stage>, BTreeMap<String, Gate>)> {
        if raw.is_empty() {
            self.errors.push(RuleError {
                file: self.files.first().map(|f| f.0.clone()).unwrap_or_default(),
                line: 1,
                col: 1,
                message: "no [[stage]] defined".into(),
            });
            return None;
        }
        let names: Vec<&str> = raw.iter().map(|(_, s)| s.name.get_ref().as_str()).collect();
        let mut seen = HashSet::new();
        for (fi, s) in raw {
            if !seen.insert(s.name.get_ref()) {
                self.err_span(
                    *fi,
                    &s.name,
                    format!("stage {:?} is defined twice", s.name.get_ref()),
                );
            }
        }
        let mut former = HashSet::new();
        for (fi, s) in raw {
            for old in &s.renamed_from {
                if names.contains(&old.get_ref().as_str()) {
                    self.err_span(
                        *fi,
                        old,
                        format!(
                            "stage {} is renamed from {:?}, which is still a stage",
                            s.name.get_ref(),
                            old.get_ref()
                        ),
                    );
                } else if !former.insert(old.get_ref()) {
                    self.err_span(
                        *fi,
                        old,
                        format!("{:?} is named in renamed_from twice", old.get_ref()),
                    );
                }
            }
        }
        let mut stages = Vec::new();
        let mut gates = BTreeMap::new();
        for (fi, s) in raw {
            self.stage_links(*fi, s, &names, agents);
            self.stage_kind(*fi, s);
            if let Some(g) = &s.gate
                && let Some(gate) = self.gate(*fi, s.name.get_ref(), g, engine)
            {
                gates.insert(s.name.get_ref().clone(), gate);
            }
            stages.push(compiled(s));
        }
        self.pipeline(raw, &stages);
        Some((stages, gates))
    }

    /// Every stage, and agent, a stage names exists.
    fn stage_links(
        &mut self,
        fi: usize,
        s: &RawStage,
        names: &[&str],
        agents: &BTreeMap<String, AgentPolicy>,
    ) {
        let name = s.name.get_ref();
        for (what, target) in [("next", &s.next), ("on_reject", &s.on_reject)] {
            if let Some(t) = target
                && !names.contains(&t.get_ref().as_str())
            {
                self.err_span(
                    fi,
                    t,
                    format!("stage {name}: {what} names unknown stage {:?}", t.get_ref()),
                );
            }
        }
        if let Some(a) = &s.agent
            && !agents.contains_key(a.get_ref())
        {
            self.err_span(
                fi,
                a,
                format!(
                    "stage {name}: unknown agent {:?} (declare it under [agents.{}])",
                    a.get_ref(),
                    a.get_ref()
                ),
            );
        }
    }

    /// The flags a stage sets agree with each other: a terminal stage ends the pipeline, and
    /// only a person's verdict may move a task out of a human gate.
    fn stage_kind(&mut self, fi: usize, s: &RawStage) {
        let name = s.name.get_ref();
        if let Some(c) = &s.cancel
            && *c.get_ref()
            && !s.terminal
        {
            self.err_span(
                fi,
                c,
                format!(
                    "stage {name} takes cancelled tasks and must be terminal (terminal = true)"
                ),
            );
        }
        if s.terminal {
            if let Some(n) = &s.next {
                self.err_span(
                    fi,
                    n,
                    format!("stage {name} is terminal and cannot have a next stage"),
                );
            }
            if let Some(g) = &s.gate {
                self.err_span(
                    fi,
                    g,
                    format!("stage {name} is terminal and cannot have a gate"),
                );
            }
        } else if s.next.is_none() {
            self.err_span(
                fi,
                &s.name,
                format!("stage {name} is not terminal but has no next stage"),
            );
        }
        if let Some(sw) = &s.sweep
            && s.human_gate
            && *sw.get_ref()
        {
            self.err_span(fi, sw, format!("stage {name} is a human gate: the sweep must never advance it (remove sweep = true)"));
        }
        if s.human_gate {
            match &s.gate {
                None => self.err_span(fi, &s.name, format!("stage {name} is a human gate but has no gate: tasks would leave it without a person")),
                Some(g) if !identifiers(g.get_ref()).iter().any(|i| i == "analysis_approved") => self.err_span(
                    fi,
                    g,
                    format!("stage {name} is a human gate but its gate does not require analysis_approved, a person's verdict (the pipeline lets only a person's verdict leave a human gate; the gate says what that verdict must come with)"),
                ),
                _ => {}
            }
            if s.next.as_ref().is_some_and(|n| n.get_ref() == name) {
                self.err_span(
                    fi,
                    &s.name,
                    format!("stage {name} is a human gate whose next stage is itself"),
                );
            }
        }
    }

    /// A gate that names only known checks, compiled; `None` when it does not. A gate that is
    /// one check's name needs no script.
    fn gate(
        &mut self,
        fi: usize,
        name: &str,
        g: &Spanned<String>,
        engine: &Engine,
    ) -> Option<Gate> {
        let text = g.get_ref().trim();
        let ids = identifiers(text);
        let single = ids.len() == 1 && ids[0] == text;
        let mut bad = false;
        for id in &ids {
            if !KNOWN_CHECKS.contains(&id.as_str()) && id != "true" && id != "false" {
                self.err_span(
                    fi,
                    g,
                    format!(
                        "stage {name}: unknown gate check {id:?} (known: {})",
                        KNOWN_CHECKS.join(", ")
                    ),
                );
                bad = true;
            }
        }
        if bad {
            return None;
        }
        if single {
            return Some(Gate::Check(text.to_string()));
        }
        match engine.compile_expression(text) {
            Ok(ast) => {
                let mut checks: Vec<String> = ids
                    .into_iter()
                    .filter(|i| KNOWN_CHECKS.contains(&i.as_str()))
                    .collect();
                checks.sort();
                checks.dedup();
                Some(Gate::Expr {
                    ast: Arc::new(ast),
                    checks,
                })
            }
            Err(e) => {
                self.err_span(
                    fi,
                    g,
                    format!("stage {name}: gate is not a valid Rhai expression: {e}"),
                );
                None
            }
        }
    }

    /// The pipeline as a whole: one place for cancelled tasks, a way to finish, and every
    /// stage reachable from the first.
    fn pipeline(&mut self, raw: &[(usize, RawStage)], stages: &[Stage]) {
        let cancel_stages: Vec<_> = raw
            .iter()
            .filter(|(_, s)| s.cancel.as_ref().is_some_and(|c| *c.get_ref()))
            .collect();
        if let [_, (fi, extra), ..] = cancel_stages.as_slice() {
            self.err_span(
                *fi,
                &extra.name,
                format!(
                    "stage {} is a second cancel stage: cancelled tasks need one place to go",
                    extra.name.get_ref()
                ),
            );
        }
        if !stages.iter().any(|s| s.terminal && !s.cancel) {
            let (fi, s) = &raw[0];
            self.err_span(
                *fi,
                &s.name,
                "no terminal stage: a task could never be done",
            );
        }
        let reached = reachable(stages);
        for (fi, s) in raw {
            if !reached.contains(s.name.get_ref()) {
                self.err_span(
                    *fi,
                    &s.name,
                    format!(
                        "stage {} is unreachable from the first stage {}",
                        s.name.get_ref(),
                        stages[0].name
                    ),
                );
            }
        }
    }
}

/// The stages a task can get to from the first one, along `next` and `on_reject`, and the
/// cancel stage, which the `cancel` action reaches from every stage.
fn reachable(stages: &[Stage]) -> BTreeSet<String> {
    let mut reached = BTreeSet::new();
    let mut todo = vec![stages[0].name.clone()];
    while let Some(n) = todo.pop() {
        if !reached.insert(n.clone()) {
            continue;
        }
        if let Some(s) = stages.iter().find(|s| s.name == n) {
            todo.extend(s.next.iter().cloned());
            todo.extend(s.on_reject.iter().cloned());
        }
    }
    reached.extend(stages.iter().filter(|s| s.cancel).map(|s| s.name.clone()));
    reached
}

/// The stage as the rest of orch reads it, spans dropped.
fn compiled(s: &RawStage) -> Stage {
    Stage {
        name: s.name.get_ref().clone(),
        agent: s.agent.as_ref().map(|a| a.get_ref().clone()),
        next: s.next.as_ref().map(|n| n.get_ref().clone()),
        on_reject: s.on_reject.as_ref().map(|n| n.get_ref().clone()),
        human_gate: s.human_gate,
        sweep: s
            .sweep
            .as_ref()
            .map(|s| *s.get_ref())
            .unwrap_or(!s.human_gate)
            && !s.human_gate,
        terminal: s.terminal,
        cancel: s.cancel.as_ref().is_some_and(|c| *c.get_ref()),
        gitea_reviews: s.gitea_reviews,
        gate: s.gate.as_ref().map(|g| g.get_ref().clone()),
        renamed_from: s.renamed_from.iter().map(|r| r.get_ref().clone()).collect(),
    }
}

/// The identifiers of a Rhai gate expression, in order: what the validator checks against the
/// known checks. Skips what Rhai would not read as a name: string, character and back-tick
/// literals (with their escapes), comments, and numbers such as `1_000`, `0x1f` or `2e3`.
fn identifiers(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = expr.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' => {
                while let Some(d) = chars.next() {
                    if d == '\\' {
                        chars.next();
                    } else if d == c {
                        break;
                    }
                }
            }
            // Back-tick strings are raw: no escapes.
            '`' => {
                for d in chars.by_ref() {
                    if d == '`' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'/') => {
                for d in chars.by_ref() {
                    if d == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut prev = ' ';
                for d in chars.by_ref() {
                    if prev == '*' && d == '/' {
                        break;
                    }
                    prev = d;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let mut id = String::from(c);
                while let Some(&d) = chars.peek() {
                    if !(d.is_ascii_alphanumeric() || d == '_') {
                        break;
                    }
                    id.push(d);
                    chars.next();
                }
                out.push(id);
            }
            c if c.is_ascii_digit() => {
                while chars
                    .peek()
                    .is_some_and(|d| d.is_ascii_alphanumeric() || *d == '_' || *d == '.')
                {
                    chars.next();
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::identifiers;

    #[test]
    fn identifiers_are_the_names_rhai_reads() {
        assert_eq!(
            identifiers("ci_green && !(tests_passed || review_approved)"),
            ["ci_green", "tests_passed", "review_approved"]
        );
        // Literals and comments hide what looks like a name.
        assert_eq!(
            identifiers(r#"ci_green && "a \"quoted\" word" != 'x' // nope"#),
            ["ci_green"]
        );
        assert_eq!(
            identifiers("/* analysis_approved */ ci_green || `raw text` == \"\""),
            ["ci_green"]
        );
        // Numbers, with separators, hex digits and exponents, are not names.
        assert_eq!(
            identifiers("1_000 > 0x1f && 2e3 > 1.5"),
            Vec::<String>::new()
        );
        assert_eq!(identifiers("true"), ["true"]);
    }
}
