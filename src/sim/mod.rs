//! `orch simulate`: the real engine end to end against in-process fake Plane and Gitea,
//! scripted agents and a real bare git remote, with a fraction of the webhooks dropped.
//!
//! It is the newcomer's first run and our chaos test: every item must reach done, through
//! the webhook path when the webhook arrives and through the reconciler when it does not,
//! without a single duplicate task, branch or job. With `cancel_rate`, people also cancel
//! some items once development has started; those must end cancelled, with no agent left
//! running and Plane still showing Cancelled. With `ask_rate`, some analysts first ask a
//! question; a person answers in a Plane comment (whose webhook may be dropped too) and the
//! analyst runs again with the answer. With `reject_rate`, some reviewers send the work back
//! to development once. With `kills`, the engine is killed (no graceful stop, everything in
//! flight dropped) and restarted on the same database that many times during the run; every
//! item must still end Done in orch *and* in Plane.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::app::AppState;
use crate::config::{AgentConfig, Config, Project};
use crate::secret::Secret;

mod engine;
pub mod fakes;

use engine::Engine;
use fakes::{FakeGitea, FakePlane, Hooks};

const PROJECT_ID: &str = "00000000-0000-4000-8000-000000000001";
const REPO: &str = "acme/widget";
const SIM_WEBHOOK_SECRET: &str = "sim-webhook-secret";

#[derive(Debug, Clone)]
pub struct SimOptions {
    pub items: usize,
    pub drop_rate: f64,
    /// The fraction of items a person cancels once their development has started.
    pub cancel_rate: f64,
    /// The fraction of items whose analyst asks a question before analysing.
    pub ask_rate: f64,
    /// The fraction of items whose reviewer rejects the first review.
    pub reject_rate: f64,
    /// How many times the engine is killed and restarted during the run.
    pub kills: usize,
    pub seed: u64,
    pub grace: Duration,
    pub interval: Duration,
    /// How long CI takes after a push.
    pub ci_delay: Duration,
    pub workers: usize,
    pub timeout: Duration,
    /// Print a progress line to stderr while running.
    pub progress: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            items: 20,
            drop_rate: 0.3,
            cancel_rate: 0.0,
            ask_rate: 0.0,
            reject_rate: 0.0,
            kills: 0,
            seed: 1,
            grace: Duration::from_secs(2),
            interval: Duration::from_millis(500),
            ci_delay: Duration::from_millis(200),
            workers: 4,
            timeout: Duration::from_secs(180),
            progress: false,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SimReport {
    pub items: usize,
    /// Items Plane shows Done.
    pub done: usize,
    /// Tasks orch has in its final (non-cancel) stage.
    pub done_in_orch: usize,
    /// Times the engine was killed and restarted.
    pub kills: usize,
    /// Plane API requests about single work items (reads, state writes, comments) per item,
    /// and listings (the Plane-side sweep's pages, states) in the whole run.
    pub plane_requests_per_item: f64,
    pub plane_listings: u64,
    /// Items a person cancelled, and of those, how many orch ended in the cancel stage.
    pub cancel_requested: usize,
    pub cancelled: usize,
    /// Cancelled items orch did not honour: task not cancelled, an agent still queued or
    /// running, or Plane no longer showing Cancelled. Must be 0.
    pub cancels_not_honoured: u64,
    /// Questions the analysts asked, and how many of those a person answered in Plane.
    pub questions: usize,
    pub answered: usize,
    /// Reviews that sent the work back to development.
    pub rejections: usize,
    pub time_to_done_p50_ms: u64,
    pub time_to_done_p99_ms: u64,
    pub webhooks_sent: u64,
    pub webhooks_dropped: u64,
    pub webhooks_rejected: u64,
    /// Webhooks sent while the engine was down (killed): lost, like a 502 during a deploy.
    pub webhooks_unreachable: u64,
    pub unblocks: u64,
    pub replays: u64,
    pub duplicates: u64,
    pub elapsed_ms: u64,
}

impl SimReport {
    pub fn table(&self) -> String {
        let mut rows = vec![
            vec![
                "items done".to_string(),
                format!("{} / {}", self.done, self.items),
            ],
            vec![
                "done in orch / in Plane".to_string(),
                format!("{} / {}", self.done_in_orch, self.done),
            ],
            vec![
                "time to done p50".into(),
                format!("{:.1} s", self.time_to_done_p50_ms as f64 / 1e3),
            ],
            vec![
                "time to done p99".into(),
                format!("{:.1} s", self.time_to_done_p99_ms as f64 / 1e3),
            ],
            vec!["webhooks delivered".into(), self.webhooks_sent.to_string()],
            vec!["webhooks dropped".into(), self.webhooks_dropped.to_string()],
            vec![
                "webhooks rejected by orch".into(),
                self.webhooks_rejected.to_string(),
            ],
            vec![
                "unblocks by the reconciler".into(),
                self.unblocks.to_string(),
            ],
            vec!["Plane states replayed".into(), self.replays.to_string()],
            vec!["duplicates found".into(), self.duplicates.to_string()],
            vec![
                "Plane requests per item".into(),
                format!("{:.1}", self.plane_requests_per_item),
            ],
            vec![
                "Plane listings (sweep)".into(),
                self.plane_listings.to_string(),
            ],
            vec![
                "wall time".into(),
                format!("{:.1} s", self.elapsed_ms as f64 / 1e3),
            ],
        ];
        if self.rejections > 0 {
            rows.insert(
                1,
                vec!["reviews rejected".into(), self.rejections.to_string()],
            );
        }
        if self.questions > 0 {
            rows.insert(
                1,
                vec![
                    "questions answered".into(),
                    format!("{} / {}", self.answered, self.questions),
                ],
            );
        }
        // Cancels only when the run had any (`--cancel-rate`).
        if self.cancel_requested > 0 {
            rows.insert(
                1,
                vec![
                    "items cancelled".into(),
                    format!("{} / {}", self.cancelled, self.cancel_requested),
                ],
            );
            rows.insert(
                2,
                vec![
                    "cancels not honoured".into(),
                    self.cancels_not_honoured.to_string(),
                ],
            );
        }
        if self.kills > 0 {
            rows.insert(
                1,
                vec!["engine kills (kill -9)".into(), self.kills.to_string()],
            );
            rows.insert(
                rows.len() - 4,
                vec![
                    "webhooks lost to kills".into(),
                    self.webhooks_unreachable.to_string(),
                ],
            );
        }
        crate::report::table(&["SIMULATION", "RESULT"], &rows)
    }
}

fn git(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
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
fn chosen(items: usize, rate: f64, seed: u64) -> HashSet<i64> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (1..=items as i64)
        .filter(|_| rng.random::<f64>() < rate)
        .collect()
}

/// The work items of `seqs`, one per line, for the scripted agents to `grep`.
fn write_list(path: &Path, seqs: &HashSet<i64>) -> anyhow::Result<()> {
    let lines: String = seqs.iter().map(|seq| format!("SIM-{seq}\n")).collect();
    std::fs::write(path, lines).with_context(|| format!("writing {}", path.display()))
}

/// The scripted agents. The analyst of an item listed in `ask_list` first asks a question
/// (verdict `needs_input`) and analyses once it has an answer in `ORCH_FEEDBACK`; the
/// reviewer of an item listed in `reject_list` rejects its first review (it leaves a mark in
/// the worktree, which lives until the task is done).
fn write_agents(
    dir: &Path,
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
    let reviewer = format!(
        "if [ ! -e .reviewed ] && grep -qx \"$ORCH_WORK_ITEM\" '{}'; then\n\
         \x20   touch .reviewed\n\
         \x20   printf '{{\"verdict\": \"reject\", \"summary\": \"Please split the change.\"}}' > \"$ORCH_RESULT_FILE\"\n\
         \x20   exit 0\n\
         fi\n\
         printf '{{\"verdict\": \"approve\", \"summary\": \"ok\"}}' > \"$ORCH_RESULT_FILE\"\n",
        reject_list.display()
    );
    let scripts = [
        ("analyst", analyst.as_str()),
        (
            "developer",
            "echo \"$ORCH_WORK_ITEM\" >> CHANGES.txt\ngit add CHANGES.txt\ngit -c user.name=sim -c user.email=sim@example.com commit -q -m \"$ORCH_WORK_ITEM\"\n",
        ),
        ("reviewer", reviewer.as_str()),
        (
            "tester",
            "printf '{\"verdict\": \"pass\", \"summary\": \"ok\"}' > \"$ORCH_RESULT_FILE\"\n",
        ),
    ];
    std::fs::create_dir_all(dir)?;
    let mut out = Vec::new();
    for (name, body) in scripts {
        let path = dir.join(format!("{name}.sh"));
        std::fs::write(&path, format!("#!/bin/sh\nset -eu\n{body}"))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        out.push((name.to_string(), path));
    }
    Ok(out)
}

fn percentile(sorted: &[Duration], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_millis() as u64
}

/// Runs one simulation to completion (or timeout) and reports.
pub async fn run(opts: &SimOptions) -> anyhow::Result<SimReport> {
    let started = Instant::now();
    let dir = tempfile::tempdir().context("creating the simulation directory")?;
    let root = dir.path();

    // A bare remote with one commit, as Gitea would hold it.
    let bare = root.join("remote/widget.git");
    std::fs::create_dir_all(&bare)?;
    git(&bare, &["init", "-q", "--bare", "-b", "main"])?;
    let seed = root.join("seed");
    std::fs::create_dir_all(&seed)?;
    git(&seed, &["init", "-q", "-b", "main"])?;
    std::fs::write(seed.join("README.md"), "widget\n")?;
    git(&seed, &["add", "README.md"])?;
    git(&seed, &["commit", "-q", "-m", "initial"])?;
    git(&seed, &["push", "-q", &bare.to_string_lossy(), "main"])?;

    // The rules: the defaults, as shipped.
    let rules = root.join("rules");
    std::fs::create_dir_all(&rules)?;
    for (name, text) in crate::policy::EMBEDDED {
        std::fs::write(rules.join(name), text)?;
    }
    // Whose analysts ask first and whose reviewers reject once; the agents read the lists.
    let to_ask = chosen(opts.items, opts.ask_rate, opts.seed ^ 0xA5C0_0000);
    let to_reject = chosen(opts.items, opts.reject_rate, opts.seed ^ 0x0BAD_C0DE);
    let (ask_list, reject_list) = (root.join("ask.txt"), root.join("reject.txt"));
    write_list(&ask_list, &to_ask)?;
    write_list(&reject_list, &to_reject)?;
    let agents = write_agents(&root.join("agents"), &ask_list, &reject_list)?;

    // Bind the fakes' ports first: orch's config needs their URLs, their webhooks need orch's.
    let plane_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let gitea_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let plane_url = format!("http://{}", plane_listener.local_addr()?);
    let gitea_url = format!("http://{}", gitea_listener.local_addr()?);

    let mut cfg = Config {
        db_path: root.join("orch.db"),
        repos_dir: root.join("repos"),
        listen: "127.0.0.1:0".parse()?,
        rules_dir: rules,
        ..Config::default()
    };
    cfg.plane.url = Some(plane_url);
    cfg.plane.api_token = Some(Secret::new("plane_api_sim"));
    cfg.plane.workspace = Some("sim".into());
    cfg.plane.requests_per_minute = 100_000;
    cfg.gitea.url = Some(gitea_url);
    cfg.gitea.token = Some(Secret::new("gitea_sim"));
    cfg.plane.webhook_secret = Some(Secret::new(SIM_WEBHOOK_SECRET));
    cfg.gitea.webhook_secret = Some(Secret::new(SIM_WEBHOOK_SECRET));
    cfg.reconcile.enabled = Some(true);
    cfg.reconcile.plane_enabled = Some(true);
    cfg.reconcile.notify_unblock = Some(false);
    cfg.reconcile.interval = opts.interval;
    cfg.reconcile.grace_default = Some(opts.grace);
    cfg.worker.concurrency = opts.workers;
    cfg.http.retries = 1;
    cfg.http.retry_base_delay = Duration::from_millis(20);
    cfg.projects = vec![Project {
        plane_project_id: PROJECT_ID.into(),
        identifier: "SIM".into(),
        repo: REPO.into(),
        clone_url: Some(bare.to_string_lossy().to_string()),
    }];
    for (name, path) in &agents {
        cfg.agents.insert(
            name.clone(),
            AgentConfig {
                command: vec![path.to_string_lossy().to_string()],
                timeout: Duration::from_secs(60),
                push: name == "developer",
            },
        );
    }
    let mut engine = Engine::start(cfg.clone()).await?;
    let orch_url = engine.url.clone();
    let mut state = engine.state.clone();
    let mut kills = 0;

    let hooks = Arc::new(Hooks::new(
        orch_url,
        SIM_WEBHOOK_SECRET.to_string(),
        opts.drop_rate,
        opts.seed,
    )?);
    let plane = FakePlane::new(PROJECT_ID, Arc::clone(&hooks));
    let gitea = FakeGitea::new(REPO, bare.clone(), Arc::clone(&hooks));
    let plane_router = plane.router();
    let gitea_router = gitea.router();
    let fake_servers = [
        tokio::spawn(async move {
            let _ = axum::serve(plane_listener, plane_router).await;
        }),
        tokio::spawn(async move {
            let _ = axum::serve(gitea_listener, gitea_router).await;
        }),
    ];

    // The people: create the work items and move them to In Progress.
    for seq in 1..=opts.items as i64 {
        plane.create(seq, &format!("Simulated feature {seq}"));
    }
    for seq in 1..=opts.items as i64 {
        plane.human_sets(seq, "In Progress").await;
    }

    // Which items a person will cancel.
    let to_cancel = chosen(opts.items, opts.cancel_rate, opts.seed ^ 0xC0FF_EE00);
    let mut cancel_sent: HashSet<i64> = HashSet::new();
    let mut answered: HashSet<i64> = HashSet::new();
    let mut approved: HashSet<i64> = HashSet::new();
    let mut ci_seen: HashSet<String> = HashSet::new();
    let mut last_progress = Instant::now();
    let deadline = Instant::now() + opts.timeout;
    loop {
        let items = plane.items();
        let done = items.iter().filter(|i| i.state == "Done").count();
        let ended_cancelled = if cancel_sent.is_empty() {
            0
        } else {
            ended_cancelled(&state).await?
        };
        if done + ended_cancelled == opts.items || Instant::now() > deadline {
            break;
        }
        // kill -9 at evenly spaced points of progress, then a restart on the same database.
        if kills < opts.kills
            && (done + ended_cancelled) * (opts.kills + 1) >= (kills + 1) * opts.items
        {
            kills += 1;
            engine.kill();
            engine = Engine::start(cfg.clone())
                .await
                .context("restarting the engine after a kill")?;
            hooks.retarget(&engine.url);
            state = engine.state.clone();
        }
        // A person answers every question orch shows (Needs Input) in a comment.
        let asking: Vec<i64> = items
            .iter()
            .filter(|i| i.state == "Needs Input" && !answered.contains(&i.seq))
            .map(|i| i.seq)
            .collect();
        for seq in asking {
            answered.insert(seq);
            plane.human_comments(seq, "The simple way, please.").await;
        }
        // A person cancels the chosen items once development has started (orch shows it as
        // In Progress after the approval).
        let cancel_now: Vec<i64> = items
            .iter()
            .filter(|i| {
                to_cancel.contains(&i.seq)
                    && approved.contains(&i.seq)
                    && i.state == "In Progress"
                    && !cancel_sent.contains(&i.seq)
            })
            .map(|i| i.seq)
            .collect();
        for seq in cancel_now {
            cancel_sent.insert(seq);
            plane.human_sets(seq, "Cancelled").await;
        }
        // A person approves every analysis that waits in review.
        let waiting: Vec<i64> = items
            .iter()
            .filter(|i| i.state == "In Review" && !approved.contains(&i.seq))
            .map(|i| i.seq)
            .collect();
        for seq in waiting {
            approved.insert(seq);
            plane.human_sets(seq, "Approved").await;
        }
        // CI runs on every new head of a task branch.
        for (branch, sha) in gitea.heads().await {
            if branch.starts_with("feature/") && ci_seen.insert(sha.clone()) {
                let g = gitea.clone();
                let delay = opts.ci_delay;
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    g.ci_finished(&sha).await;
                });
            }
        }
        if opts.progress && last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            let m = &state.metrics;
            eprint!(
                "\r[{:>4}/{:<4} done] webhooks dropped {:>4}  unblocks {:>4}  replays {:>4}  {:>5.1}s ",
                done,
                opts.items,
                hooks.dropped.load(std::sync::atomic::Ordering::Relaxed),
                m.reconcile_unblocked.get(),
                m.reconcile_replays.get(),
                started.elapsed().as_secs_f64()
            );
            let _ = std::io::stderr().flush();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if opts.progress {
        eprintln!();
    }

    let items = plane.items();
    let mut ttd: Vec<Duration> = items
        .iter()
        .filter_map(|i| Some(i.done?.duration_since(i.started?)))
        .collect();
    ttd.sort();
    let duplicates = count_duplicates(&state.store, &gitea).await?;
    let cancelled = ended_cancelled(&state).await?;
    let cancels_not_honoured = cancels_not_honoured(&state, &items, &cancel_sent).await?;
    let done_in_orch = ended_done(&state).await?;
    let per_item = plane
        .requests
        .item
        .load(std::sync::atomic::Ordering::Relaxed);
    let report = SimReport {
        items: opts.items,
        done: items.iter().filter(|i| i.state == "Done").count(),
        done_in_orch,
        kills,
        plane_requests_per_item: per_item as f64 / opts.items as f64,
        plane_listings: plane
            .requests
            .listing
            .load(std::sync::atomic::Ordering::Relaxed),
        questions: to_ask.len(),
        answered: answered.len(),
        rejections: review_rejections(&state.store).await?,
        cancel_requested: cancel_sent.len(),
        cancelled,
        cancels_not_honoured,
        time_to_done_p50_ms: percentile(&ttd, 0.5),
        time_to_done_p99_ms: percentile(&ttd, 0.99),
        webhooks_sent: hooks.sent.load(std::sync::atomic::Ordering::Relaxed),
        webhooks_dropped: hooks.dropped.load(std::sync::atomic::Ordering::Relaxed),
        webhooks_rejected: hooks.rejected.load(std::sync::atomic::Ordering::Relaxed),
        webhooks_unreachable: hooks.unreachable.load(std::sync::atomic::Ordering::Relaxed),
        unblocks: state.metrics.reconcile_unblocked.get(),
        replays: state.metrics.reconcile_replays.get(),
        duplicates,
        elapsed_ms: started.elapsed().as_millis() as u64,
    };
    engine.stop().await;
    for s in fake_servers {
        s.abort();
    }
    Ok(report)
}

/// The stage the rules send cancelled tasks to.
fn cancel_stage(state: &AppState) -> Option<String> {
    state.rules.current().cancel_stage().map(|s| s.name.clone())
}

/// Tasks in the rules' final stage: terminal, and not where cancels go.
async fn ended_done(state: &AppState) -> anyhow::Result<usize> {
    let rules = state.rules.current();
    let finals: Vec<String> = rules
        .stages()
        .iter()
        .filter(|s| s.terminal && !s.cancel)
        .map(|s| s.name.clone())
        .collect();
    let counts = state
        .store
        .call(|c| crate::store::tasks::counts_by_stage(c))
        .await?;
    Ok(counts
        .iter()
        .filter(|(stage, _)| finals.contains(stage))
        .map(|(_, n)| usize::try_from(*n).unwrap_or(0))
        .sum())
}

/// Tasks that ended in the cancel stage with nothing left queued or running.
async fn ended_cancelled(state: &AppState) -> anyhow::Result<usize> {
    let Some(stage) = cancel_stage(state) else {
        return Ok(0);
    };
    let n: i64 = state
        .store
        .call(move |c| {
            Ok(c.query_row(
                "SELECT COUNT(*) FROM tasks t WHERE t.stage = ?1 AND NOT EXISTS
                   (SELECT 1 FROM jobs j WHERE j.task_id = t.id AND j.status IN ('queued', 'running'))",
                [stage],
                |r| r.get(0),
            )?)
        })
        .await?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Cancelled items orch did not honour: the task is not in the cancel stage, still has a job
/// queued or running, or orch moved the Plane item away from Cancelled afterwards.
async fn cancels_not_honoured(
    state: &AppState,
    items: &[fakes::PlaneItem],
    cancelled: &HashSet<i64>,
) -> anyhow::Result<u64> {
    let stage = cancel_stage(state);
    let mut bad = 0;
    for item in items.iter().filter(|i| cancelled.contains(&i.seq)) {
        let (wi, stage) = (format!("SIM-{}", item.seq), stage.clone());
        let honoured = state
            .store
            .call(move |c| {
                let Some(t) = crate::store::tasks::get_by_work_item(c, &wi)? else {
                    return Ok(false);
                };
                Ok(Some(&t.stage) == stage.as_ref() && !crate::store::jobs::has_active(c, t.id)?)
            })
            .await?;
        if !honoured || item.state != "Cancelled" {
            bad += 1;
        }
    }
    Ok(bad)
}

/// Reviews that sent the work back: the agents' reject verdicts (only the reviewer rejects).
async fn review_rejections(store: &crate::store::Store) -> anyhow::Result<usize> {
    let n: i64 = store
        .call(|c| {
            Ok(c.query_row(
                "SELECT COUNT(*) FROM jobs WHERE status = 'done' AND verdict = 'reject'",
                [],
                |r| r.get(0),
            )?)
        })
        .await?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Anything that exists more than once where the pipeline promises one: tasks per work item,
/// finished runs of a stage's agent beyond one per time the task entered that stage (a run
/// that asked a question is not a duplicate of the one that got the answer), branches per
/// item.
async fn count_duplicates(store: &crate::store::Store, gitea: &FakeGitea) -> anyhow::Result<u64> {
    let (tasks, jobs) = store
        .call(|c| {
            let tasks: i64 = c.query_row("SELECT COUNT(*) - COUNT(DISTINCT work_item) FROM tasks", [], |r| r.get(0))?;
            let jobs: i64 = c.query_row(
                "SELECT COALESCE(SUM(MAX(done - entered, 0)), 0) FROM (
                   SELECT COUNT(*) AS done,
                          (SELECT COUNT(*) FROM task_history h WHERE h.task_id = j.task_id AND h.to_stage = j.stage) AS entered
                   FROM jobs j WHERE j.status = 'done' AND COALESCE(j.verdict, '') != 'needs_input'
                   GROUP BY j.task_id, j.stage)",
                [],
                |r| r.get(0),
            )?;
            Ok((tasks, jobs))
        })
        .await?;
    let mut per_item: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    for branch in gitea.heads().await.keys() {
        if let Some(rest) = branch.strip_prefix("feature/") {
            let item: String = rest.split('-').take(2).collect::<Vec<_>>().join("-");
            *per_item.entry(item).or_default() += 1;
        }
    }
    let branches: u64 = per_item.values().map(|n| n.saturating_sub(1)).sum();
    Ok(tasks as u64 + jobs as u64 + branches)
}
