//! The simulation's throwaway workspace: a bare git remote, the rules, the scripted agents
//! and the lists they read (whose analysts ask, whose reviewers reject).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::script::Role;

pub(super) fn git(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = std::process::Command::new("git")
        .args(["-c", "user.name=sim", "-c", "user.email=sim@example.com"])
        .args(args)
        .current_dir(dir)
        .output()
        .with_context(|| format!("running git {args:?}"))?;
    anyhow::ensure!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A seeded choice of items (each with probability `rate`), so a run can be repeated.
pub(super) fn chosen(items: usize, rate: f64, seed: u64) -> HashSet<i64> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (1..=items as i64)
        .filter(|_| rng.random::<f64>() < rate)
        .collect()
}

/// The work items of `seqs`, one per line, for the scripted agents to `grep`.
pub(super) fn write_list(path: &Path, seqs: &HashSet<i64>) -> anyhow::Result<()> {
    let lines: String = seqs.iter().map(|seq| format!("SIM-{seq}\n")).collect();
    std::fs::write(path, lines).with_context(|| format!("writing {}", path.display()))
}

/// The scripted agents. The analyst of an item listed in `ask_list` first asks a question
/// (verdict `needs_input`) and analyses once it has an answer in `ORCH_FEEDBACK`; the
/// reviewer of an item listed in `reject_list` rejects its first review (it leaves a mark in
/// `<reject_list>.reviewed/`, shared by every replica of the run).
/// One script per agent of `agents`, playing its [`Role`]; each is `<agent>.sh` in `dir`.
pub(super) fn write_agents(
    dir: &Path,
    agents: &[(String, Role)],
    ask_list: &Path,
    reject_list: &Path,
) -> anyhow::Result<Vec<(String, PathBuf)>> {
    use std::os::unix::fs::PermissionsExt;
    let analyst = format!(
        "if [ -z \"${{ORCH_FEEDBACK:-}}\" ] && grep -qx \"$ORCH_WORK_ITEM\" '{}'; then\n\
         \x20   printf '{{\"verdict\": \"needs_input\", \"summary\": \"Which way?\"}}' > \"$ORCH_RESULT_FILE\"\n\
         \x20   exit 0\n\
         fi\n\
         echo \"analysis of $ORCH_WORK_ITEM ($ORCH_FEEDBACK)\" > ANALYSIS.md\n",
        ask_list.display()
    );
    // The mark lives beside the lists, not in the worktree: a worktree is reset to the remote
    // branch before every job (and each replica has its own).
    let marks = reject_list.with_extension("reviewed");
    std::fs::create_dir_all(&marks)?;
    let reviewer = format!(
        "if [ ! -e '{marks}'/\"$ORCH_WORK_ITEM\" ] && grep -qx \"$ORCH_WORK_ITEM\" '{}'; then\n\
         \x20   touch '{marks}'/\"$ORCH_WORK_ITEM\"\n\
         \x20   printf '{{\"verdict\": \"reject\", \"summary\": \"Please split the change.\"}}' > \"$ORCH_RESULT_FILE\"\n\
         \x20   exit 0\n\
         fi\n\
         printf '{{\"verdict\": \"approve\", \"summary\": \"ok\"}}' > \"$ORCH_RESULT_FILE\"\n",
        reject_list.display(),
        marks = marks.display(),
    );
    let developer = "echo \"$ORCH_WORK_ITEM\" >> CHANGES.txt\ngit add CHANGES.txt\ngit -c user.name=sim -c user.email=sim@example.com commit -q -m \"$ORCH_WORK_ITEM\"\n";
    let tester = "printf '{\"verdict\": \"pass\", \"summary\": \"ok\"}' > \"$ORCH_RESULT_FILE\"\n";
    std::fs::create_dir_all(dir)?;
    let mut out = Vec::new();
    for (name, role) in agents {
        let body = match role {
            Role::Analyst => analyst.as_str(),
            Role::Developer => developer,
            Role::Reviewer => reviewer.as_str(),
            Role::Tester => tester,
        };
        anyhow::ensure!(
            !name.is_empty() && !name.contains(['/', '\\']) && !name.starts_with('.'),
            "agent {name:?}: not usable as a file name for its script"
        );
        let path = dir.join(format!("{name}.sh"));
        std::fs::write(&path, format!("#!/bin/sh\nset -eu\n{body}"))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        out.push((name.clone(), path));
    }
    Ok(out)
}

/// `reconcile.toml` with its `[grace] default` set to `grace`: the simulation's grace written
/// into the live rules. An error when the file has no such line, so a reshaped embedded file
/// fails loudly instead of leaving the grace at ten minutes.
pub(super) fn with_grace_default(text: &str, grace: std::time::Duration) -> anyhow::Result<String> {
    let mut section = String::new();
    let mut replaced = false;
    let mut out = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            section = trimmed.to_string();
        }
        if section == "[grace]" && trimmed.starts_with("default") && !replaced {
            out.push_str(&format!("default = \"{}ms\"\n", grace.as_millis()));
            replaced = true;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    anyhow::ensure!(replaced, "reconcile.toml has no [grace] default to set");
    Ok(out)
}
