//! `orch rules snapshot` and `orch rules verify`: a rules repository pins its decisions in
//! insta `.snap` files (the format of orch's own `snapshots/`), and its CI fails when an edit
//! changes a pinned decision or breaks a scenario's `expect`.
//!
//! Every directory under DIR (DIR included) that holds `*.toml` files is a rule set; each is
//! pinned once per scenario file, as `<set>@<scenario>.snap`, where `<set>` is the set's path
//! from DIR's parent with `/` as `-` (`rules`, `rules-examples-fast-track`). Snapshots live in
//! `snapshots/` beside DIR unless `--snapshots` says otherwise.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use crate::policy::{self, scenario, snapfile};

/// What `source:` says in the snapshots this command writes.
pub(super) const SOURCE: &str = "orch rules snapshot";

/// One rule set × one scenario file: its table now, and where it is pinned.
struct Pin {
    path: PathBuf,
    description: String,
    rows: Vec<scenario::Row>,
    unmet: Vec<scenario::Unmet>,
}

/// The rule sets in `dir` (it and every directory below holding `*.toml` files), sorted.
fn rule_sets(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        let mut has_toml = false;
        let mut entries = std::fs::read_dir(dir)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<Vec<_>, _>>()?;
        entries.sort();
        for p in &entries {
            if p.is_dir() {
                walk(p, out)?;
            } else if p.extension().and_then(|e| e.to_str()) == Some("toml") {
                has_toml = true;
            }
        }
        if has_toml {
            out.push(dir.to_path_buf());
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, &mut out).with_context(|| format!("reading {}", dir.display()))?;
    anyhow::ensure!(
        !out.is_empty(),
        "{}: no *.toml rule files here",
        dir.display()
    );
    out.sort();
    Ok(out)
}

/// Every rule set × scenario file of the command, evaluated. A rule set that does not load is
/// printed (as `orch rules check` would) and ends the command with exit 1.
fn pins(
    dir: &Path,
    scenarios: &[PathBuf],
    snapshots: Option<&Path>,
) -> anyhow::Result<Result<Vec<Pin>, ExitCode>> {
    let dir = dir
        .canonicalize()
        .with_context(|| format!("rules directory {}", dir.display()))?;
    let base = dir.parent().map(Path::to_path_buf).unwrap_or_default();
    let snap_dir = snapshots.map_or_else(|| base.join("snapshots"), Path::to_path_buf);
    let files = scenarios
        .iter()
        .map(|p| Ok((p, scenario::read(p)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut out = Vec::new();
    for set in rule_sets(&dir)? {
        let rules = match policy::load_dir(&set) {
            Ok(r) => r,
            Err(errors) => {
                eprintln!("{errors}");
                eprintln!("{} error(s) in {}", errors.0.len(), set.display());
                return Ok(Err(ExitCode::FAILURE));
            }
        };
        let rel = set.strip_prefix(&base).unwrap_or(&set);
        let rel = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>();
        for (path, file) in &files {
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy())
                .unwrap_or_default();
            let rows = scenario::simulate(&rules, file).map_err(anyhow::Error::msg)?;
            let unmet = scenario::unmet_expectations(&rules, file).map_err(anyhow::Error::msg)?;
            out.push(Pin {
                path: snap_dir.join(format!("{}@{stem}.snap", rel.join("-"))),
                description: format!("{} × {}", rel.join("/"), path.display()),
                rows,
                unmet,
            });
        }
    }
    Ok(Ok(out))
}

/// The pinned snapshot's body, if there is one.
fn pinned(path: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(
            snapfile::body_of(&text)
                .with_context(|| format!("{}: not a snapshot file", path.display()))?
                .to_string(),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// The decisions that differ between a pinned body and the rows now, as a table.
fn print_changes(path: &Path, old_body: &str, rows: &[scenario::Row]) {
    let old = match snapfile::parse(old_body) {
        Ok(old) => old,
        Err(e) => {
            println!("  (cannot read its rows: {e}; compare the files)");
            return;
        }
    };
    let changes = scenario::diff(&old, rows);
    let cells = super::rules_impact::scenario_cells(&changes);
    if cells.is_empty() {
        println!(
            "  {}: only reasons changed; compare the files",
            path.display()
        );
        return;
    }
    print!(
        "{}",
        crate::report::table(&["SCENARIO", "SUBJECT", "PINNED", "NOW", "RULE"], &cells)
    );
    println!("  {} decision(s) changed", changes.len());
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // Written whole under another name, then renamed: a reader never sees half a snapshot.
    let tmp = path.with_extension("snap.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// `.snap.new` beside `.snap`, as insta names a snapshot waiting for review.
fn new_path(path: &Path) -> PathBuf {
    path.with_extension("snap.new")
}

pub(super) fn snapshot(
    dir: &Path,
    scenarios: &[PathBuf],
    snapshots: Option<&Path>,
    accept: bool,
) -> anyhow::Result<ExitCode> {
    let pins = match pins(dir, scenarios, snapshots)? {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    let mut to_review = 0;
    for pin in &pins {
        let text = snapfile::render(SOURCE, &pin.description, &pin.rows);
        let old = pinned(&pin.path)?;
        let body = snapfile::body(&pin.rows);
        // Like insta: a snapshot whose rows match stays as it is, metadata included.
        if old.as_deref() == Some(body.as_str()) {
            let _ = std::fs::remove_file(new_path(&pin.path));
            println!("unchanged {}", pin.path.display());
            continue;
        }
        let what = if old.is_some() { "changed" } else { "new" };
        if accept {
            write(&pin.path, &text)?;
            let _ = std::fs::remove_file(new_path(&pin.path));
            println!("pinned    {} ({what})", pin.path.display());
        } else {
            write(&new_path(&pin.path), &text)?;
            to_review += 1;
            println!("{what:<9} {}", new_path(&pin.path).display());
        }
        if let Some(old) = &old {
            print_changes(&pin.path, old, &pin.rows);
        }
    }
    if to_review > 0 {
        println!(
            "{to_review} snapshot(s) to review: run again with --accept, or `cargo insta review`"
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn verify(
    dir: &Path,
    scenarios: &[PathBuf],
    snapshots: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let pins = match pins(dir, scenarios, snapshots)? {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    let mut failures = 0;
    let mut decisions = 0;
    for pin in &pins {
        for unmet in &pin.unmet {
            println!("{unmet}");
            failures += 1;
        }
        decisions += pin.rows.len();
        match pinned(&pin.path)? {
            None => {
                println!(
                    "not pinned: {} (run `orch rules snapshot --accept`)",
                    pin.path.display()
                );
                failures += 1;
            }
            Some(old) if old != snapfile::body(&pin.rows) => {
                println!(
                    "decisions changed: {} ({})",
                    pin.path.display(),
                    pin.description
                );
                print_changes(&pin.path, &old, &pin.rows);
                failures += 1;
            }
            Some(_) => {}
        }
    }
    if failures > 0 {
        println!("{failures} failure(s)");
        return Ok(ExitCode::FAILURE);
    }
    println!(
        "ok: {} snapshot(s), {decisions} decisions as pinned, every expectation holds",
        pins.len()
    );
    Ok(ExitCode::SUCCESS)
}
