//! The façade, [`load_sources`], and what every section shares: the files and the errors.
//!
//! Sections are checked in a fixed order and errors are sorted by position only at the end,
//! with a stable sort: two errors at one place keep the order they were found in, so the
//! output is the same from run to run and the tests can pin it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use toml::Spanned;

use super::{RuleSet, version_of};
use crate::config::line_col;
use crate::policy::schema::{RawAgent, RawFile, RawGrace, RawPlane, RawReconcile, RawStage};
use crate::policy::{RuleError, RuleErrors, sandbox};

/// Parses, merges, validates and compiles `files` as one rule set.
pub fn load_sources(files: Vec<(PathBuf, String)>) -> Result<RuleSet, RuleErrors> {
    let mut ctx = Ctx {
        errors: Vec::new(),
        files: &files,
    };
    let parsed = ctx.parse();
    // Sections cannot be merged from files that did not parse.
    if !ctx.errors.is_empty() {
        return Err(RuleErrors(ctx.errors));
    }
    let merged = ctx.merge(parsed);
    let engine = Arc::new(sandbox::engine());
    let agents = ctx.agents(merged.agents.as_ref());
    // Everything after the stages names stages: without any there is nothing to check it by.
    let Some((stages, gates)) = ctx.stages(&merged.stages, &agents, &engine) else {
        return Err(RuleErrors(ctx.errors));
    };
    let switches = ctx.switches(merged.reconcile.as_ref());
    let red_backoff_cap = ctx.red_backoff_cap(merged.reconcile.as_ref());
    let grace = ctx.grace(merged.grace.as_ref(), &stages, &engine);
    let plane = ctx.plane(merged.plane.as_ref(), &stages);
    let templates = ctx.templates(merged.templates);
    ctx.finish()?;
    Ok(RuleSet {
        version: version_of(&files),
        files: files.iter().map(|(p, _)| p.clone()).collect(),
        stages,
        gates,
        agents,
        switches,
        red_backoff_cap,
        grace,
        plane,
        templates,
        engine,
    })
}

/// A section with the index of the file that defines it, so its errors point into that file.
pub(super) type InFile<T> = (usize, Spanned<T>);

/// The set's sections once every file is merged in.
pub(super) struct Merged {
    /// In file order; all from one file.
    pub(super) stages: Vec<(usize, RawStage)>,
    pub(super) agents: Option<InFile<BTreeMap<String, RawAgent>>>,
    pub(super) reconcile: Option<InFile<RawReconcile>>,
    pub(super) grace: Option<InFile<RawGrace>>,
    pub(super) plane: Option<InFile<RawPlane>>,
    pub(super) templates: Option<InFile<BTreeMap<String, String>>>,
}

/// What the sections share while a set loads: the files, to place errors in, and every
/// error found so far, so one run reports them all.
pub(super) struct Ctx<'a> {
    pub(super) errors: Vec<RuleError>,
    pub(super) files: &'a [(PathBuf, String)],
}

impl Ctx<'_> {
    pub(super) fn err_at(&mut self, file: usize, offset: usize, message: impl Into<String>) {
        let (path, text) = &self.files[file];
        let (line, col) = line_col(text, offset);
        self.errors.push(RuleError {
            file: path.clone(),
            line,
            col,
            message: message.into(),
        });
    }

    pub(super) fn err_span<T>(&mut self, file: usize, s: &Spanned<T>, message: impl Into<String>) {
        self.err_at(file, s.span().start, message);
    }

    /// Each file that parses, with its index; an error for each one that does not.
    fn parse(&mut self) -> Vec<(usize, RawFile)> {
        let mut parsed = Vec::new();
        for (i, (_, text)) in self.files.iter().enumerate() {
            match toml::from_str::<RawFile>(text) {
                Ok(f) => parsed.push((i, f)),
                Err(e) => {
                    let offset = e.span().map(|s| s.start).unwrap_or(0);
                    self.err_at(i, offset, e.message().trim().to_string());
                }
            }
        }
        parsed
    }

    /// Stages concatenate in file order; every other section is defined once.
    fn merge(&mut self, parsed: Vec<(usize, RawFile)>) -> Merged {
        let mut merged = Merged {
            stages: Vec::new(),
            agents: None,
            reconcile: None,
            grace: None,
            plane: None,
            templates: None,
        };
        let mut stage_file: Option<usize> = None;
        for (i, f) in parsed {
            if !f.stage.is_empty() {
                // One file, so the pipeline's order is the order it is written in.
                if let Some(first) = stage_file.filter(|first| *first != i) {
                    let first_name = self.files[first].0.display().to_string();
                    self.err_span(
                        i,
                        &f.stage[0].name,
                        format!(
                            "stages are already defined in {first_name}; keep the pipeline in one file"
                        ),
                    );
                } else {
                    stage_file = Some(i);
                    merged.stages.extend(f.stage.into_iter().map(|s| (i, s)));
                }
            }
            self.once(&mut merged.agents, f.agents, i, "agents");
            self.once(&mut merged.reconcile, f.reconcile, i, "reconcile");
            self.once(&mut merged.grace, f.grace, i, "grace");
            self.once(&mut merged.plane, f.plane, i, "plane");
            self.once(&mut merged.templates, f.templates, i, "templates");
        }
        merged
    }

    /// Keeps the first definition of a section; a second one is an error at its place.
    fn once<T>(
        &mut self,
        slot: &mut Option<InFile<T>>,
        value: Option<Spanned<T>>,
        file: usize,
        name: &str,
    ) {
        let Some(v) = value else { return };
        if let Some((first, _)) = slot {
            let first_name = self.files[*first].0.display().to_string();
            self.err_span(
                file,
                &v,
                format!("[{name}] is already defined in {first_name}"),
            );
        } else {
            *slot = Some((file, v));
        }
    }

    /// Every error, in file and position order; `Ok` only when there is none.
    fn finish(mut self) -> Result<(), RuleErrors> {
        if self.errors.is_empty() {
            return Ok(());
        }
        self.errors
            .sort_by(|a, b| (&a.file, a.line, a.col).cmp(&(&b.file, b.line, b.col)));
        Err(RuleErrors(self.errors))
    }
}
