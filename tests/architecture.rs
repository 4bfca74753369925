//! The dependency direction ARCHITECTURE.md draws, checked: every `crate::` path in `src/`
//! (outside comments) is an edge from the file's top-level module to another, and an edge the
//! document forbids fails here with the file that makes it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Modules that may use only the listed ones (besides themselves).
const ONLY: &[(&str, &[&str])] = &[
    ("clock", &[]),
    ("duration", &[]),
    ("secret", &[]),
    ("http_client", &[]),
    ("store", &["clock"]),
    ("config", &["clock", "duration", "secret"]),
    ("policy", &["clock", "duration", "config"]),
    ("impact", &["clock", "policy", "store"]),
    (
        "integrations",
        &["clock", "config", "secret", "http_client"],
    ),
];

/// Edges that point up the layers.
const FORBIDDEN: &[(&str, &[&str])] = &[
    (
        "pipeline",
        &[
            "app",
            "cli",
            "sim",
            "http",
            "inbox",
            "outbox",
            "worker",
            "reconciler",
        ],
    ),
    ("reconciler", &["app", "cli", "sim", "http", "worker"]),
    (
        "inbox",
        &["app", "cli", "sim", "http", "reconciler", "worker"],
    ),
    (
        "outbox",
        &["app", "cli", "sim", "http", "reconciler", "worker"],
    ),
    (
        "worker",
        &["app", "cli", "sim", "http", "reconciler", "inbox", "outbox"],
    ),
    ("http", &["app", "cli", "sim"]),
    ("app", &["cli", "sim"]),
    ("sim", &["cli"]),
];

fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

fn edges(src: &Path) -> BTreeMap<(String, String), BTreeSet<String>> {
    let mut out: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    let mut todo = vec![src.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let from = module_of(src, &path);
            let text = std::fs::read_to_string(&path).unwrap();
            for line in text.lines() {
                let code = line.split("//").next().unwrap_or("");
                let mut rest = code;
                while let Some(i) = rest.find("crate::") {
                    rest = &rest[i + "crate::".len()..];
                    let to: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if !to.is_empty() && to != from {
                        out.entry((from.clone(), to))
                            .or_default()
                            .insert(path.strip_prefix(src).unwrap().display().to_string());
                    }
                }
            }
        }
    }
    out
}

#[test]
fn imports_point_down_the_layers_as_architecture_md_draws_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut broken = Vec::new();
    for ((from, to), files) in edges(&src) {
        let allowed = match ONLY.iter().find(|(m, _)| *m == from) {
            Some((_, only)) => only.contains(&to.as_str()),
            None => !FORBIDDEN
                .iter()
                .any(|(m, no)| *m == from && no.contains(&to.as_str())),
        };
        if !allowed {
            broken.push(format!("{from} -> {to} (in {files:?})"));
        }
    }
    assert!(
        broken.is_empty(),
        "imports against the dependency direction in ARCHITECTURE.md:\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_checker_sees_edges() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let e = edges(&src);
    assert!(e.contains_key(&("pipeline".to_string(), "store".to_string())));
    assert!(e.contains_key(&("app".to_string(), "http".to_string())));
}
