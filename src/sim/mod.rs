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
//!
//! With `replicas > 1` (PostgreSQL only, a schema of its own per run), that many engines
//! share the database behind a load balancer; `kills` then kills a random one, and
//! `leader_kills` the holder of the `sweep` lease, measuring how soon another takes over
//! (`replicas.rs`).
//!
//! With `rules`, the run uses that rule set instead of the embedded one: the people's Plane
//! states, the human gates they approve and the agents' parts come from it (`script.rs`).

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::config::{AgentConfig, Config, Project};
use crate::secret::Secret;

mod checks;
mod database;
mod engine;
pub mod fakes;
mod people;
mod replicas;
mod report;
mod script;
mod workspace;

pub use report::{Handover, SimReport};

use fakes::{FakeGitea, FakePlane, Hooks};
use people::People;
use replicas::Replicas;
use script::{Role, Script};

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
    /// How many times the engine (with replicas: a random one) is killed and restarted
    /// during the run.
    pub kills: usize,
    /// Engines sharing the database; more than one needs PostgreSQL (`db_url`).
    pub replicas: usize,
    /// How many times the holder of the `sweep` lease is killed (and restarted).
    pub leader_kills: usize,
    /// A PostgreSQL URL: the run gets a schema of its own there. `None`: SQLite.
    pub db_url: Option<String>,
    /// The replicas' lease time to live (`replicas.lease_ttl`).
    pub lease_ttl: Duration,
    /// Keep the run's PostgreSQL schema instead of dropping it at the end.
    pub keep: bool,
    pub seed: u64,
    pub grace: Duration,
    pub interval: Duration,
    /// How long CI takes after a push.
    pub ci_delay: Duration,
    pub workers: usize,
    pub timeout: Duration,
    /// Print a progress line to stderr while running.
    pub progress: bool,
    /// A shadow rule set evaluated beside the live one (never acting); its divergences are in
    /// the report. The grace then goes into the live rules' `grace.default` instead of the
    /// environment override, which would win over both sets and hide every grace difference.
    pub shadow_rules: Option<PathBuf>,
    /// The rule set to run (a directory); `None`: the embedded default rules.
    pub rules: Option<PathBuf>,
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
            replicas: 1,
            leader_kills: 0,
            db_url: None,
            lease_ttl: Duration::from_secs(3),
            keep: false,
            seed: 1,
            grace: Duration::from_secs(2),
            interval: Duration::from_millis(500),
            ci_delay: Duration::from_millis(200),
            workers: 4,
            timeout: Duration::from_secs(180),
            progress: false,
            shadow_rules: None,
            rules: None,
        }
    }
}

/// The workspace a run needs before anything starts.
struct Workspace {
    bare: PathBuf,
    rules: PathBuf,
    to_ask: HashSet<i64>,
    agents: Vec<(String, PathBuf)>,
    script: Script,
}

/// The rule files to run: `opts.rules` (validated whole first), or the embedded defaults.
fn rule_files(opts: &SimOptions) -> anyhow::Result<Vec<(String, String)>> {
    let Some(dir) = &opts.rules else {
        return Ok(crate::policy::EMBEDDED
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect());
    };
    crate::policy::load_dir(dir)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("rules {}", dir.display()))?;
    let files = crate::policy::read_dir(dir).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(files
        .into_iter()
        .map(|(p, t)| {
            let name = p.file_name().map(|n| n.to_string_lossy().to_string());
            (name.unwrap_or_default(), t)
        })
        .collect())
}

/// A bare remote with one commit (as Gitea would hold it), the rules, and the scripted
/// agents with the lists of whose analysts ask and whose reviewers reject.
fn prepare(root: &Path, opts: &SimOptions) -> anyhow::Result<Workspace> {
    let bare = root.join("remote/widget.git");
    std::fs::create_dir_all(&bare)?;
    workspace::git(&bare, &["init", "-q", "--bare", "-b", "main"])?;
    let seed = root.join("seed");
    std::fs::create_dir_all(&seed)?;
    workspace::git(&seed, &["init", "-q", "-b", "main"])?;
    std::fs::write(seed.join("README.md"), "widget\n")?;
    workspace::git(&seed, &["add", "README.md"])?;
    workspace::git(&seed, &["commit", "-q", "-m", "initial"])?;
    workspace::git(&seed, &["push", "-q", &bare.to_string_lossy(), "main"])?;
    let rules = root.join("rules");
    std::fs::create_dir_all(&rules)?;
    for (name, text) in rule_files(opts)? {
        let text = if opts.shadow_rules.is_some() && name == "reconcile.toml" {
            workspace::with_grace_default(&text, opts.grace)?
        } else {
            text
        };
        std::fs::write(rules.join(name), text)?;
    }
    let set = crate::policy::load_dir(&rules).map_err(|e| anyhow::anyhow!("{e}"))?;
    let script = Script::of(&set)?;
    if opts.cancel_rate > 0.0 && script.cancel.is_none() {
        anyhow::bail!("--cancel-rate: the rules map no Plane state to cancel");
    }
    let to_ask = workspace::chosen(opts.items, opts.ask_rate, opts.seed ^ 0xA5C0_0000);
    let to_reject = workspace::chosen(opts.items, opts.reject_rate, opts.seed ^ 0x0BAD_C0DE);
    let (ask_list, reject_list) = (root.join("ask.txt"), root.join("reject.txt"));
    workspace::write_list(&ask_list, &to_ask)?;
    workspace::write_list(&reject_list, &to_reject)?;
    let agents = workspace::write_agents(
        &root.join("agents"),
        &script.agents,
        &ask_list,
        &reject_list,
    )?;
    Ok(Workspace {
        bare,
        rules,
        to_ask,
        agents,
        script,
    })
}

/// orch's configuration for the run: the fakes as peers, webhooks signed, a fast sweep.
fn config(
    opts: &SimOptions,
    root: &Path,
    ws: &Workspace,
    plane_url: String,
    gitea_url: String,
    db_url: Option<&str>,
) -> anyhow::Result<Config> {
    let mut cfg = Config {
        db_path: root.join("orch.db"),
        db_url: db_url.map(str::to_string),
        repos_dir: root.join("repos"),
        listen: "127.0.0.1:0".parse()?,
        rules_dir: ws.rules.clone(),
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
    if opts.shadow_rules.is_some() {
        // In the live rules instead (see `SimOptions::shadow_rules`).
        cfg.reconcile.grace_default = None;
        cfg.shadow_rules_dir = opts.shadow_rules.clone();
    }
    cfg.worker.concurrency = opts.workers;
    cfg.replicas.lease_ttl = opts.lease_ttl;
    cfg.http.retries = 1;
    cfg.http.retry_base_delay = Duration::from_millis(20);
    cfg.projects = vec![Project {
        plane_project_id: PROJECT_ID.into(),
        identifier: "SIM".into(),
        repo: REPO.into(),
        clone_url: Some(ws.bare.to_string_lossy().to_string()),
    }];
    for (name, path) in &ws.agents {
        cfg.agents.insert(
            name.clone(),
            AgentConfig {
                command: vec![path.to_string_lossy().to_string()],
                timeout: Duration::from_secs(60),
                push: ws
                    .script
                    .agents
                    .iter()
                    .any(|(a, r)| a == name && *r == Role::Developer),
            },
        );
    }
    Ok(cfg)
}

/// Runs the simulation to its end and reports it.
pub async fn run(opts: &SimOptions) -> anyhow::Result<SimReport> {
    if opts.replicas > 1 && opts.db_url.is_none() {
        anyhow::bail!(
            "--replicas {}: replicas share a PostgreSQL database; pass --db-url or set \
             ORCH_TEST_PG_URL (start a throwaway one with .ci/pg)",
            opts.replicas
        );
    }
    let Some(url) = &opts.db_url else {
        return run_on(opts, None).await;
    };
    let schema = database::RunSchema::create(url, opts.seed).await?;
    let report = run_on(opts, Some(&schema.url)).await;
    if opts.keep {
        eprintln!(
            "kept the simulation's schema {} ({})",
            schema.schema,
            crate::store::redact_url(&schema.url)
        );
    } else {
        schema.drop_now().await;
    }
    report
}

/// The run on the database `db_url` names (PostgreSQL), or on a SQLite file of its own.
async fn run_on(opts: &SimOptions, db_url: Option<&str>) -> anyhow::Result<SimReport> {
    let started = Instant::now();
    let dir = tempfile::tempdir().context("creating the simulation directory")?;
    let ws = prepare(dir.path(), opts)?;
    // Bind the fakes' ports first: orch's config needs their URLs, their webhooks need orch's.
    let plane_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let gitea_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let plane_url = format!("http://{}", plane_listener.local_addr()?);
    let gitea_url = format!("http://{}", gitea_listener.local_addr()?);
    let cfg = config(opts, dir.path(), &ws, plane_url, gitea_url, db_url)?;
    let replicas = Replicas::start(cfg, dir.path(), opts.replicas, opts.seed).await?;
    let urls = replicas.urls();
    let hooks = Arc::new(Hooks::new(
        urls.first().cloned().unwrap_or_default(),
        SIM_WEBHOOK_SECRET.to_string(),
        opts.drop_rate,
        opts.seed,
    )?);
    hooks.set_targets(urls);
    let plane = FakePlane::with_states(PROJECT_ID, Arc::clone(&hooks), ws.script.states.clone());
    let gitea = FakeGitea::new(REPO, ws.bare.clone(), Arc::clone(&hooks));
    let (plane_router, gitea_router) = (plane.router(), gitea.router());
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
        plane.human_sets(seq, &ws.script.states.start).await;
    }
    let mut sim = Sim {
        opts,
        replicas,
        hooks,
        plane,
        gitea,
        people: People::new(opts, ws.script.clone()),
        kills: 0,
        leader_kills: 0,
        started,
    };
    let settled = sim.until_settled().await;
    let report = match settled {
        Ok(()) => sim.report(&ws).await,
        Err(e) => Err(e),
    };
    sim.replicas.stop().await;
    for s in fake_servers {
        s.abort();
    }
    report
}

/// A run in progress: the engines (killed and restarted as asked), the fakes and the people.
struct Sim<'a> {
    opts: &'a SimOptions,
    replicas: Replicas,
    hooks: Arc<Hooks>,
    plane: FakePlane,
    gitea: FakeGitea,
    people: People,
    kills: usize,
    leader_kills: usize,
    started: Instant,
}

impl Sim<'_> {
    /// Until every item is done or cancelled, or the timeout.
    async fn until_settled(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + self.opts.timeout;
        let mut last_progress = Instant::now();
        loop {
            let done = self.done().await?;
            let cancelled = if self.people.cancel_sent.is_empty() {
                0
            } else {
                checks::ended_cancelled(self.replicas.state()?).await?
            };
            if done + cancelled == self.opts.items || Instant::now() > deadline {
                break;
            }
            self.maybe_kill(done + cancelled).await?;
            self.replicas.tick(&self.hooks).await?;
            self.people
                .act(&self.plane, &self.gitea, self.opts.ci_delay)
                .await;
            if self.opts.progress && last_progress.elapsed() >= Duration::from_secs(1) {
                last_progress = Instant::now();
                self.progress(done);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if self.opts.progress {
            eprintln!();
        }
        Ok(())
    }

    /// kill -9 at evenly spaced points of progress (`kills` of a random replica, and
    /// `leader_kills` of the sweep's holder), each restarted on the same database.
    async fn maybe_kill(&mut self, ended: usize) -> anyhow::Result<()> {
        let items = self.opts.items;
        let due = |done: usize, of: usize| done < of && ended * (of + 1) >= (done + 1) * items;
        if due(self.kills, self.opts.kills) {
            self.kills += 1;
            self.replicas.kill_random(&self.hooks).await?;
        }
        if due(self.leader_kills, self.opts.leader_kills) {
            self.leader_kills += 1;
            self.replicas.kill_leader(&self.hooks).await?;
        }
        Ok(())
    }

    /// Items done: showing the rules' done state in Plane, or, when the rules set none, in
    /// their final stage in orch.
    async fn done(&self) -> anyhow::Result<usize> {
        Ok(match &self.people.script.states.done {
            Some(done) => self
                .plane
                .items()
                .iter()
                .filter(|i| &i.state == done)
                .count(),
            None => checks::ended_done(self.replicas.state()?).await?,
        })
    }

    fn progress(&self, done: usize) {
        let Ok(state) = self.replicas.state() else {
            return;
        };
        let m = &state.metrics;
        eprint!(
            "\r[{:>4}/{:<4} done] webhooks dropped {:>4}  unblocks {:>4}  replays {:>4}  {:>5.1}s ",
            done,
            self.opts.items,
            self.hooks.dropped.load(Ordering::Relaxed),
            m.reconcile_unblocked.get(),
            m.reconcile_replays.get(),
            self.started.elapsed().as_secs_f64()
        );
        let _ = std::io::stderr().flush();
    }

    async fn report(&self, ws: &Workspace) -> anyhow::Result<SimReport> {
        let state = self.replicas.state()?;
        let items = self.plane.items();
        let mut ttd: Vec<Duration> = items
            .iter()
            .filter_map(|i| Some(i.done?.duration_since(i.started?)))
            .collect();
        ttd.sort();
        let per_item = self.plane.requests.item.load(Ordering::Relaxed);
        Ok(SimReport {
            items: self.opts.items,
            done: self.done().await?,
            done_in_orch: checks::ended_done(state).await?,
            unfinished: checks::unfinished(state).await?,
            kills: self.kills,
            replicas: self.opts.replicas.max(1),
            leader_kills: self.leader_kills,
            leaderless_kills: self.replicas.leaderless_kills,
            handovers: self.replicas.handovers.clone(),
            jobs_per_replica: self.replicas.jobs_per_replica().await?,
            effects_duplicated: self.plane.comments_duplicated(),
            effects_resent: self.plane.requests.resent.load(Ordering::Relaxed),
            plane_requests_per_item: per_item as f64 / self.opts.items as f64,
            plane_listings: self.plane.requests.listing.load(Ordering::Relaxed),
            questions: ws.to_ask.len(),
            answered: self.people.answered.len(),
            rejections: checks::review_rejections(&state.store).await?,
            cancel_requested: self.people.cancel_sent.len(),
            cancelled: checks::ended_cancelled(state).await?,
            cancels_not_honoured: checks::cancels_not_honoured(
                state,
                &items,
                &self.people.cancel_sent,
                self.people.script.cancel.as_deref(),
            )
            .await?,
            time_to_done_p50_ms: report::percentile(&ttd, 0.5),
            time_to_done_p99_ms: report::percentile(&ttd, 0.99),
            webhooks_sent: self.hooks.sent.load(Ordering::Relaxed),
            webhooks_dropped: self.hooks.dropped.load(Ordering::Relaxed),
            webhooks_rejected: self.hooks.rejected.load(Ordering::Relaxed),
            webhooks_unreachable: self.hooks.unreachable.load(Ordering::Relaxed),
            unblocks: self.replicas.sum(|m| m.reconcile_unblocked.get()),
            replays: self.replicas.sum(|m| m.reconcile_replays.get()),
            duplicates: checks::count_duplicates(&state.store, &self.gitea).await?,
            shadow_divergences: if self.opts.shadow_rules.is_some() {
                Some(
                    state
                        .store
                        .call(|c| crate::store::shadow::list(c, None, usize::MAX))
                        .await?,
                )
            } else {
                None
            },
            elapsed_ms: self.started.elapsed().as_millis() as u64,
        })
    }
}
