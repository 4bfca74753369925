//! Git through the CLI against real repositories and a bare remote in tempdirs.

mod common;

use std::time::Duration;

use orch::git::{Git, GitError};

#[tokio::test]
async fn clone_worktree_commit_and_push_to_a_bare_remote() {
    let dir = tempfile::tempdir().unwrap();
    let bare = common::bare_repo(dir.path());
    let git = Git::new(dir.path().join("repos"), Duration::from_secs(30));
    let url = bare.to_str().unwrap();
    let clone = git.ensure_clone("acme/widget", url).await.unwrap();
    assert!(clone.join("README.md").exists());
    // A second call fetches instead of cloning again.
    assert_eq!(git.ensure_clone("acme/widget", url).await.unwrap(), clone);

    let branch = orch::git::branch_name("ET-42", "Login redirect loop on Safari");
    let wt = git.add_worktree(&clone, &branch, None).await.unwrap();
    assert!(
        wt.join("README.md").exists(),
        "the worktree starts from the remote's default branch"
    );
    assert_eq!(
        git.add_worktree(&clone, &branch, None).await.unwrap(),
        wt,
        "idempotent"
    );

    std::fs::write(wt.join("feature.txt"), "x").unwrap();
    std::process::Command::new("git")
        .args(["add", "feature.txt"])
        .current_dir(&wt)
        .status()
        .unwrap();
    let ok = std::process::Command::new("git")
        .args([
            "-c",
            "user.name=agent",
            "-c",
            "user.email=a@example.com",
            "commit",
            "-qm",
            "feature",
        ])
        .current_dir(&wt)
        .status()
        .unwrap();
    assert!(ok.success());
    git.push(&clone, &wt, &branch).await.unwrap();
    let head = git.head_sha(&wt).await.unwrap();
    assert_eq!(
        common::git_head(&bare, &branch).as_deref(),
        Some(head.as_str())
    );

    git.remove_worktree(&clone, &branch).await.unwrap();
    assert!(!wt.exists());
    // Re-adding checks out the existing branch, with its commit.
    let again = git.add_worktree(&clone, &branch, None).await.unwrap();
    assert!(again.join("feature.txt").exists());
}

#[tokio::test]
async fn failures_carry_git_stderr_and_hangs_time_out() {
    let dir = tempfile::tempdir().unwrap();
    let git = Git::new(dir.path().join("repos"), Duration::from_secs(30));
    let err = git
        .ensure_clone("acme/missing", "/nonexistent/remote.git")
        .await
        .unwrap_err();
    match &err {
        GitError::Failed { stderr, .. } => assert!(
            stderr.contains("does not exist") || stderr.contains("not found"),
            "{stderr}"
        ),
        other => panic!("{other:?}"),
    }
    for bad in ["not-a-repo-name", "acme/..", "../etc", "acme/-x"] {
        assert!(
            matches!(git.ensure_clone(bad, "/x").await, Err(GitError::BadRepo(_))),
            "{bad}"
        );
    }

    // A server that accepts the connection and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let _keep = std::thread::spawn(move || {
        let conns: Vec<_> = listener.incoming().take(1).collect();
        std::thread::sleep(Duration::from_secs(10));
        drop(conns);
    });
    let slow = Git::new(dir.path().join("repos2"), Duration::from_millis(500));
    let started = std::time::Instant::now();
    let err = slow
        .ensure_clone(
            "acme/hang",
            &format!("http://127.0.0.1:{port}/acme/hang.git"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, GitError::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // A timed-out clone leaves nothing half-made behind.
    assert!(!dir.path().join("repos2/acme/hang").exists());
}

#[test]
fn branch_names() {
    assert_eq!(
        orch::git::branch_name("ET-42", "Login redirect loop on Safari"),
        "feature/ET-42-login-redirect-loop-on-safari"
    );
    assert_eq!(orch::git::branch_name("ET-7", ""), "feature/ET-7");
}

/// Worktree adds and pushes of many tasks on one clone at once: every one succeeds (they all
/// write the clone's shared config), and each branch tracks its own remote branch, not main.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_worktrees_and_pushes_on_one_clone_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let bare = common::bare_repo(dir.path());
    let git = Git::new(dir.path().join("repos"), Duration::from_secs(60));
    let clone = git
        .ensure_clone("acme/widget", bare.to_str().unwrap())
        .await
        .unwrap();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..24 {
        let (git, clone) = (git.clone(), clone.clone());
        set.spawn(async move {
            let branch = format!("feature/ET-{i}-work");
            let wt = git.add_worktree(&clone, &branch, None).await?;
            // A fresh feature branch tracks nothing yet (not the remote's main).
            let upstream = git
                .run(&wt, &["rev-parse", "--abbrev-ref", "@{upstream}"])
                .await;
            assert!(upstream.is_err(), "{branch} tracks {upstream:?}");
            let file = format!("f{i}.txt");
            std::fs::write(wt.join(&file), "x").unwrap();
            git.run(&wt, &["add", &file]).await?;
            git.run(
                &wt,
                &[
                    "-c",
                    "user.name=agent",
                    "-c",
                    "user.email=a@example.com",
                    "commit",
                    "-qm",
                    &file,
                ],
            )
            .await?;
            git.push(&clone, &wt, &branch).await?;
            let upstream = git
                .run(&wt, &["rev-parse", "--abbrev-ref", "@{upstream}"])
                .await?;
            Ok::<_, GitError>((branch, upstream))
        });
    }
    let mut done = 0;
    while let Some(r) = set.join_next().await {
        let (branch, upstream) = r.unwrap().unwrap();
        assert_eq!(upstream.trim(), format!("origin/{branch}"));
        assert!(
            common::git_head(&bare, &branch).is_some(),
            "{branch} pushed"
        );
        done += 1;
    }
    assert_eq!(done, 24);
}

/// A git process killed while writing (orch killed by -9) leaves `.git/config.lock` behind;
/// every later config write would fail. An old one is removed when the clone is next used; a
/// fresh one, which may belong to a running git, is left alone.
#[tokio::test]
async fn a_stale_lock_file_left_by_a_killed_git_is_cleared_and_a_fresh_one_kept() {
    let dir = tempfile::tempdir().unwrap();
    let bare = common::bare_repo(dir.path());
    let git = Git::new(dir.path().join("repos"), Duration::from_secs(30));
    let url = bare.to_str().unwrap();
    let clone = git.ensure_clone("acme/widget", url).await.unwrap();
    let lock = clone.join(".git/config.lock");

    std::fs::write(&lock, "").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&lock)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    git.ensure_clone("acme/widget", url).await.unwrap();
    assert!(!lock.exists(), "an hour-old lock is stale");
    git.run(&clone, &["config", "orch.test", "1"])
        .await
        .unwrap();

    std::fs::write(&lock, "").unwrap();
    git.ensure_clone("acme/widget", url).await.unwrap();
    assert!(lock.exists(), "a fresh lock may be a running git's");
    let err = git
        .run(&clone, &["config", "orch.test", "2"])
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("could not lock config file"),
        "{err}"
    );
}

fn commit(wt: &std::path::Path, file: &str) {
    std::fs::write(wt.join(file), file).unwrap();
    for args in [
        &["add", file][..],
        &[
            "-c",
            "user.name=agent",
            "-c",
            "user.email=a@example.com",
            "commit",
            "-qm",
            file,
        ][..],
    ] {
        let ok = std::process::Command::new("git")
            .args(args)
            .current_dir(wt)
            .status()
            .unwrap();
        assert!(ok.success(), "git {args:?}");
    }
}

/// Two replicas (two clones of one bare remote): A develops, B develops on top of A's push,
/// then A again. Without the sync A's worktree is behind B's push and its push is refused as
/// non-fast-forward; with it A continues from B's commit and its push goes through.
#[tokio::test]
async fn a_worktree_behind_another_replicas_push_is_brought_to_the_remote_branch() {
    let dir = tempfile::tempdir().unwrap();
    let bare = common::bare_repo(dir.path());
    let url = bare.to_str().unwrap();
    let a = Git::new(dir.path().join("repos-a"), Duration::from_secs(30));
    let b = Git::new(dir.path().join("repos-b"), Duration::from_secs(30));
    let branch = "feature/ET-7-replicas";
    // A, first run: worktree, commit, push. No remote branch yet: nothing to sync.
    let clone_a = a.ensure_clone("acme/widget", url).await.unwrap();
    let wt_a = a.add_worktree(&clone_a, branch, None).await.unwrap();
    assert!(!a.sync_worktree(&clone_a, &wt_a, branch).await.unwrap());
    commit(&wt_a, "one.txt");
    a.push(&clone_a, &wt_a, branch).await.unwrap();
    // B, second run: starts from A's push, adds its commit, pushes.
    let clone_b = b.ensure_clone("acme/widget", url).await.unwrap();
    let wt_b = b.add_worktree(&clone_b, branch, None).await.unwrap();
    assert!(b.sync_worktree(&clone_b, &wt_b, branch).await.unwrap());
    assert!(wt_b.join("one.txt").exists());
    commit(&wt_b, "two.txt");
    b.push(&clone_b, &wt_b, branch).await.unwrap();
    // A, third run, in its old worktree, with leftovers of a crashed run in it.
    std::fs::write(wt_a.join("scratch.txt"), "left over").unwrap();
    std::fs::write(wt_a.join("one.txt"), "changed, never committed").unwrap();
    a.ensure_clone("acme/widget", url).await.unwrap();
    assert_eq!(a.add_worktree(&clone_a, branch, None).await.unwrap(), wt_a);
    assert!(a.sync_worktree(&clone_a, &wt_a, branch).await.unwrap());
    assert_eq!(
        a.head_sha(&wt_a).await.unwrap(),
        common::git_head(&bare, branch).unwrap(),
        "at B's push"
    );
    assert!(wt_a.join("two.txt").exists());
    assert!(!wt_a.join("scratch.txt").exists(), "cleaned");
    assert_eq!(
        std::fs::read_to_string(wt_a.join("one.txt")).unwrap(),
        "one.txt"
    );
    commit(&wt_a, "three.txt");
    a.push(&clone_a, &wt_a, branch).await.unwrap();
    assert_eq!(
        common::git_head(&bare, branch).unwrap(),
        a.head_sha(&wt_a).await.unwrap()
    );
}

/// A clone of a bare remote in `dir` with a worktree of `branch`: one commit, pushed.
struct Pushed {
    git: Git,
    bare: std::path::PathBuf,
    clone: std::path::PathBuf,
    wt: std::path::PathBuf,
}

async fn pushed_branch(dir: &std::path::Path, branch: &str) -> Pushed {
    let bare = common::bare_repo(dir);
    let git = Git::new(dir.join("repos"), Duration::from_secs(30));
    let clone = git
        .ensure_clone("acme/widget", bare.to_str().unwrap())
        .await
        .unwrap();
    let wt = git.add_worktree(&clone, branch, None).await.unwrap();
    commit(&wt, "one.txt");
    git.push(&clone, &wt, branch).await.unwrap();
    Pushed {
        git,
        bare,
        clone,
        wt,
    }
}

/// An agent killed mid `git commit` (a cancel, its timeout, or the service killed with its
/// children) leaves its worktree's `index.lock` and its branch's ref lock, both fresh. The
/// next job of the task removes them before it resets the worktree: without that, every
/// retry fails with "File exists" and the task ends blocked.
#[tokio::test]
async fn locks_a_killed_agent_left_in_its_worktree_are_cleared_by_the_next_job() {
    let dir = tempfile::tempdir().unwrap();
    let branch = "feature/ET-8-killed-agent";
    let Pushed {
        git,
        bare,
        clone,
        wt,
    } = pushed_branch(dir.path(), branch).await;

    let admin = clone.join(".git/worktrees/feature__ET-8-killed-agent");
    let index_lock = admin.join("index.lock");
    let ref_lock = clone.join(format!(".git/refs/heads/{branch}.lock"));
    std::fs::write(&index_lock, "").unwrap();
    std::fs::write(admin.join("AUTO_MERGE.lock"), "").unwrap();
    std::fs::create_dir_all(ref_lock.parent().unwrap()).unwrap();
    std::fs::write(&ref_lock, "").unwrap();
    std::fs::write(wt.join("half.txt"), "half-written by the killed agent").unwrap();

    assert!(git.sync_worktree(&clone, &wt, branch).await.unwrap());
    assert!(!index_lock.exists() && !ref_lock.exists());
    assert!(!admin.join("AUTO_MERGE.lock").exists());
    assert!(
        !wt.join("half.txt").exists(),
        "the worktree is the remote branch again"
    );
    commit(&wt, "two.txt");
    git.push(&clone, &wt, branch).await.unwrap();
    assert_eq!(
        common::git_head(&bare, branch).unwrap(),
        git.head_sha(&wt).await.unwrap()
    );
}

/// The service killed with its gits leaves fresh locks in the clone: `packed-refs.lock` makes
/// every ref update wait two seconds (one job every two seconds), a remote-tracking ref's lock
/// fails fetches. At the next start none of the last process's gits runs, so every lock under
/// `repos_dir` goes, and only locks: the clone still works.
#[tokio::test]
async fn locks_left_by_the_last_process_are_cleared_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let branch = "feature/ET-9-killed-service";
    let Pushed {
        git,
        bare,
        clone,
        wt,
    } = pushed_branch(dir.path(), branch).await;
    let locks = [
        clone.join(".git/packed-refs.lock"),
        clone.join(".git/refs/remotes/origin/feature/ET-9-killed-service.lock"),
        clone.join(".git/worktrees/feature__ET-9-killed-service/index.lock"),
    ];
    for lock in &locks {
        std::fs::write(lock, "").unwrap();
    }

    assert_eq!(git.clear_locks_left_by_last_process().await, 3);
    for lock in &locks {
        assert!(!lock.exists(), "{}", lock.display());
    }
    assert_eq!(
        git.clear_locks_left_by_last_process().await,
        0,
        "nothing left"
    );
    git.ensure_clone("acme/widget", bare.to_str().unwrap())
        .await
        .unwrap();
    assert!(git.sync_worktree(&clone, &wt, branch).await.unwrap());
    assert!(wt.join("one.txt").exists());
}

/// `git worktree add` killed half-way (the service killed with its gits) can leave the
/// worktree's `.git` file empty: every command in it then fails with "invalid gitfile
/// format", and each job of the task failed until it was blocked. The next job makes the
/// worktree again, on the branch and its commits.
#[tokio::test]
async fn a_worktree_left_half_made_by_a_killed_git_is_made_again() {
    let dir = tempfile::tempdir().unwrap();
    let branch = "feature/ET-10-half-made";
    let Pushed {
        git,
        bare,
        clone,
        wt,
    } = pushed_branch(dir.path(), branch).await;

    std::fs::write(wt.join(".git"), "").unwrap();
    assert!(
        git.head_sha(&wt).await.is_err(),
        "broken as a killed add leaves it"
    );
    assert_eq!(git.add_worktree(&clone, branch, None).await.unwrap(), wt);
    assert!(git.sync_worktree(&clone, &wt, branch).await.unwrap());
    assert_eq!(
        git.head_sha(&wt).await.unwrap(),
        common::git_head(&bare, branch).unwrap()
    );
    assert!(wt.join("one.txt").exists());

    // A `worktree remove` killed after deleting the directory: still registered, added again.
    std::fs::remove_dir_all(&wt).unwrap();
    assert_eq!(git.add_worktree(&clone, branch, None).await.unwrap(), wt);
    assert!(wt.join("one.txt").exists());
}
