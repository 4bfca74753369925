//! The active rule set as a graph, drawn by orch as inline SVG: no layout library, no script.
//!
//! The stages stand in one column in the rules' order, which is also the order a task walks
//! them, so the layout needs no search: `next` edges run down the left (a straight arrow to
//! the stage below, a curve when they skip), `on_reject` edges run back up the right, dashed.
//! Every text is escaped: stage names and gate expressions come from files people edit.

use std::fmt::Write;

use crate::policy::{RuleSet, Stage};

const BOX_X: i64 = 56;
const BOX_W: i64 = 232;
const BOX_H: i64 = 66;
const GAP: i64 = 34;
const TOP: i64 = 12;
const WIDTH: i64 = 360;
/// Longest gate expression shown whole in a box; the table below the graph has all of it.
const GATE_CHARS: usize = 34;

fn esc(s: &str) -> String {
    html_escape::encode_safe(s).into_owned()
}

fn top_of(i: usize) -> i64 {
    TOP + i as i64 * (BOX_H + GAP)
}

fn shorten(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}

/// The second line of a stage's box: what runs there and who moves it on.
fn role(stage: &Stage) -> String {
    let mut parts = Vec::new();
    if let Some(a) = &stage.agent {
        parts.push(format!("agent {a}"));
    }
    if stage.human_gate {
        parts.push("human gate".into());
    }
    if stage.cancel {
        parts.push("cancel (from any stage)".into());
    } else if stage.terminal {
        parts.push("terminal".into());
    }
    parts.join(" · ")
}

/// Draws `rules`; `grace` gives the grace shown in each non-terminal stage's box (empty:
/// none, as for a human gate, which the sweep never times).
pub(super) fn draw(rules: &RuleSet, grace: impl Fn(&Stage) -> String) -> String {
    let stages = rules.stages();
    let height = top_of(stages.len()) + TOP;
    let mut out = String::new();
    let _ = write!(
        out,
        r##"<svg class="graph" viewBox="0 0 {WIDTH} {height}" role="img" aria-label="The pipeline's stages and edges" xmlns="http://www.w3.org/2000/svg">
<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#445"/></marker>
<marker id="arrow-reject" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#b3261e"/></marker></defs>
"##
    );
    let index = |name: &str| stages.iter().position(|s| s.name == name);
    let mut rejects = 0;
    for (i, stage) in stages.iter().enumerate() {
        let y = top_of(i);
        if let Some(j) = stage.next.as_deref().and_then(index) {
            next_edge(&mut out, i, j);
        }
        if let Some(j) = stage.on_reject.as_deref().and_then(index) {
            reject_edge(&mut out, i, j, rejects);
            rejects += 1;
        }
        let class = if stage.human_gate {
            "stage human"
        } else if stage.terminal {
            "stage terminal"
        } else {
            "stage"
        };
        let _ = write!(
            out,
            r#"<g class="{class}" data-stage="{name}"><rect x="{BOX_X}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="8"/>
<text x="{tx}" y="{y1}" class="name">{name}</text><text x="{tx}" y="{y2}">{role}</text>"#,
            name = esc(&stage.name),
            tx = BOX_X + 10,
            y1 = y + 20,
            y2 = y + 38,
            role = esc(&role(stage)),
        );
        if !stage.terminal {
            let gate = stage.gate.as_deref().unwrap_or("no gate");
            let mut line = format!("gate {}", shorten(gate, GATE_CHARS));
            let grace = grace(stage);
            if !grace.is_empty() {
                line.push_str(&format!(" · grace {grace}"));
            }
            let _ = write!(
                out,
                r#"<text x="{tx}" y="{y3}" class="gate">{line}</text>"#,
                tx = BOX_X + 10,
                y3 = y + 56,
                line = esc(&line),
            );
        }
        out.push_str("</g>\n");
    }
    out.push_str("</svg>");
    out
}

fn next_edge(out: &mut String, from: usize, to: usize) {
    let cx = BOX_X + BOX_W / 2;
    if to == from + 1 {
        let _ = writeln!(
            out,
            r##"<line class="next" x1="{cx}" y1="{y1}" x2="{cx}" y2="{y2}" stroke="#445" marker-end="url(#arrow)"/>"##,
            y1 = top_of(from) + BOX_H,
            y2 = top_of(to) - 2,
        );
    } else {
        let (y1, y2) = (top_of(from) + BOX_H / 2, top_of(to) + BOX_H / 2);
        let _ = writeln!(
            out,
            r##"<path class="next" d="M{BOX_X},{y1} C{c},{y1} {c},{y2} {x2},{y2}" fill="none" stroke="#445" marker-end="url(#arrow)"/>"##,
            c = BOX_X - 44,
            x2 = BOX_X - 2,
        );
    }
}

fn reject_edge(out: &mut String, from: usize, to: usize, nth: i64) {
    let right = BOX_X + BOX_W;
    let (y1, y2) = (top_of(from) + BOX_H / 2 + 6, top_of(to) + BOX_H / 2 - 6);
    let c = right + 26 + (nth % 3) * 14;
    let _ = writeln!(
        out,
        r##"<path class="reject" d="M{right},{y1} C{c},{y1} {c},{y2} {x2},{y2}" fill="none" stroke="#b3261e" stroke-dasharray="5 3" marker-end="url(#arrow-reject)"/>"##,
        x2 = right + 2,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_rules_draw_every_stage_and_edge() {
        let rules = crate::policy::load_embedded().unwrap();
        let svg = draw(&rules, |_| "10m".into());
        for s in rules.stages() {
            assert!(
                svg.contains(&format!(r#"data-stage="{}""#, s.name)),
                "{}",
                s.name
            );
        }
        let nexts = rules.stages().iter().filter(|s| s.next.is_some()).count();
        let rejects = rules
            .stages()
            .iter()
            .filter(|s| s.on_reject.is_some())
            .count();
        assert_eq!(svg.matches(r#"class="next""#).count(), nexts);
        assert_eq!(svg.matches(r#"class="reject""#).count(), rejects);
        assert!(svg.contains("human gate"));
    }

    #[test]
    fn long_gates_are_shortened_and_text_is_escaped() {
        assert_eq!(shorten("abcdef", 4), "abc…");
        assert_eq!(esc("<b>&"), "&lt;b&gt;&amp;");
    }
}
