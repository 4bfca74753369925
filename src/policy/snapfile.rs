//! Decision tables as insta `.snap` files, written and read without insta (a dev-dependency):
//! `orch rules snapshot` pins a team's rules in the very format `cargo insta review` reads and
//! orch's own `snapshots/` use.
//!
//! The format, as insta 1.x writes a YAML snapshot: a metadata block between `---` lines
//! (`source:`, `description:`, each a YAML scalar), then the rows as a YAML sequence of maps,
//! then one newline. Strings are quoted exactly when insta's emitter quotes them, so the same
//! rows give the same bytes. [`parse`] reads back what [`render`] writes (and what insta
//! writes for these rows); anything else is an error, never a guess.

use super::scenario::Row;

/// The `.snap` text of `rows`, with `source` and `description` in the metadata block.
pub fn render(source: &str, description: &str, rows: &[Row]) -> String {
    let mut out = String::from("---\n");
    out.push_str(&format!("source: {}\n", scalar(source)));
    out.push_str(&format!("description: {}\n", scalar(description)));
    out.push_str("---\n");
    out.push_str(&body(rows));
    out.push('\n');
    out
}

/// The rows as insta's YAML (without the trailing newline), what a snapshot compares.
pub fn body(rows: &[Row]) -> String {
    if rows.is_empty() {
        return "[]".into();
    }
    let mut out = String::new();
    for (i, r) in rows.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let fields = [
            ("scenario", &r.scenario),
            ("subject", &r.subject),
            ("decision", &r.decision),
            ("rule", &r.rule),
            ("reason", &r.reason),
        ];
        for (j, (k, v)) in fields.iter().enumerate() {
            let lead = if j == 0 { "- " } else { "\n  " };
            out.push_str(&format!("{lead}{k}: {}", scalar(v)));
        }
    }
    out
}

/// The body of a `.snap` file: everything after its metadata block, trailing space trimmed
/// (insta compares the same way).
pub fn body_of(snap: &str) -> Option<&str> {
    let rest = snap.strip_prefix("---\n")?;
    let end = rest.find("\n---\n")?;
    Some(rest[end + "\n---\n".len()..].trim_end())
}

/// The rows of a snapshot body as [`body`] writes them.
pub fn parse(body: &str) -> Result<Vec<Row>, String> {
    if body.trim() == "[]" {
        return Ok(Vec::new());
    }
    let mut rows = Vec::new();
    let mut fields: Vec<(String, String)> = Vec::new();
    for (n, line) in body.lines().enumerate() {
        let at = n + 1;
        let entry = if let Some(rest) = line.strip_prefix("- ") {
            if !fields.is_empty() {
                rows.push(row_of(std::mem::take(&mut fields), at)?);
            }
            rest
        } else if let Some(rest) = line.strip_prefix("  ") {
            rest
        } else {
            return Err(format!("line {at}: not a row of a decision table"));
        };
        let (key, value) = entry
            .split_once(": ")
            .ok_or_else(|| format!("line {at}: expected `key: value`"))?;
        fields.push((
            key.to_string(),
            unscalar(value).map_err(|e| format!("line {at}: {e}"))?,
        ));
    }
    if !fields.is_empty() {
        rows.push(row_of(fields, body.lines().count())?);
    }
    Ok(rows)
}

fn row_of(fields: Vec<(String, String)>, at: usize) -> Result<Row, String> {
    let get = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| format!("line {at}: the row above has no {name}"))
    };
    Ok(Row {
        scenario: get("scenario")?,
        subject: get("subject")?,
        decision: get("decision")?,
        rule: get("rule")?,
        reason: get("reason")?,
    })
}

/// A string as insta's YAML emitter writes it: plain when YAML would read it back as the same
/// string, double-quoted (JSON-style escapes) otherwise.
fn scalar(s: &str) -> String {
    if !needs_quotes(s) {
        return s.to_string();
    }
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\x08' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\x0c' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c == '\x7f' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// insta's rule (its vendored emitter's `need_quotes`), character for character.
fn needs_quotes(s: &str) -> bool {
    const WORDS: &[&str] = &[
        "yes", "Yes", "YES", "no", "No", "NO", "True", "TRUE", "true", "False", "FALSE", "false",
        "on", "On", "ON", "off", "Off", "OFF", "null", "Null", "NULL", "~",
    ];
    s.is_empty()
        || s.starts_with(' ')
        || s.ends_with(' ')
        || s.starts_with(['&', '*', '?', '|', '-', '<', '>', '=', '!', '%', '@'])
        || s.contains(|c: char| {
            matches!(c, ':' | '{' | '}' | '[' | ']' | ',' | '#' | '`' | '"' | '\'' | '\\'
                | '\0'..='\x06' | '\t' | '\n' | '\r' | '\x0e'..='\x1a' | '\x1c'..='\x1f')
        })
        || WORDS.contains(&s)
        || s.starts_with('.')
        || s.starts_with("0x")
        || s.parse::<i64>().is_ok()
        || s.parse::<f64>().is_ok()
}

/// The inverse of [`scalar`].
fn unscalar(v: &str) -> Result<String, String> {
    let Some(inner) = v.strip_prefix('"') else {
        return Ok(v.to_string());
    };
    let inner = inner
        .strip_suffix('"')
        .ok_or_else(|| format!("unterminated string {v}"))?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('"') => out.push('"'),
            Some('\\') => out.push('\\'),
            Some('b') => out.push('\x08'),
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('f') => out.push('\x0c'),
            Some('r') => out.push('\r'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                let c = u32::from_str_radix(&hex, 16)
                    .ok()
                    .and_then(char::from_u32)
                    .ok_or_else(|| format!("bad escape \\u{hex}"))?;
                out.push(c);
            }
            other => return Err(format!("unknown escape \\{}", other.unwrap_or(' '))),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(scenario: &str, reason: &str) -> Row {
        Row {
            scenario: scenario.into(),
            subject: "In Progress / no task".into(),
            decision: "ignore (recent)".into(),
            rule: "grace.default".into(),
            reason: reason.into(),
        }
    }

    #[test]
    fn quoting_follows_insta() {
        assert_eq!(scalar("start, no task yet"), "\"start, no task yet\"");
        assert_eq!(scalar("wait 570s"), "wait 570s");
        assert_eq!(scalar("true"), "\"true\"");
        assert_eq!(scalar("12"), "\"12\"");
        assert_eq!(scalar("- x"), "\"- x\"");
        assert_eq!(scalar("a \"b\"\n"), "\"a \\\"b\\\"\\n\"");
        assert_eq!(scalar("rules × tests/x.toml"), "rules × tests/x.toml");
    }

    #[test]
    fn what_is_rendered_parses_back() {
        let rows = vec![
            row("start, no task yet", "state \"Done\" maps to no action"),
            row("plain", "tab\there: and \\ back\u{1}"),
        ];
        let text = render("orch rules snapshot", "rules × s.toml", &rows);
        assert!(
            text.starts_with("---\nsource: orch rules snapshot\n"),
            "{text}"
        );
        assert!(text.ends_with("\n"));
        let back = parse(body_of(&text).unwrap()).unwrap();
        assert_eq!(back, rows);
        assert_eq!(parse(&body(&[])).unwrap(), Vec::<Row>::new());
    }

    #[test]
    fn a_broken_body_is_an_error() {
        assert!(parse("- scenario: a\n  subject: b").is_err());
        assert!(parse("nonsense").is_err());
    }
}
