//! Unit tests of the board as data.

use super::*;

#[test]
fn durations_read_like_people_write_them() {
    assert_eq!(human(Duration::from_secs(45)), "45s");
    assert_eq!(human(Duration::from_secs(12 * 60 + 5)), "12m");
    assert_eq!(human(Duration::from_secs(3 * 3600 + 5 * 60)), "3h 5m");
    assert_eq!(human(Duration::from_secs(2 * 86_400 + 4 * 3600)), "2d 4h");
}

#[test]
fn a_work_items_project_is_its_prefix() {
    assert_eq!(project_of("ET-142"), "ET");
    assert_eq!(project_of("MY-APP-7"), "MY-APP");
    assert_eq!(project_of("odd"), "odd");
    assert_eq!(task_href("ET-1"), "/tasks/ET-1");
    assert_eq!(task_href("a/b c"), "/tasks/a%2Fb%20c");
}

fn task(id: i64, wi: &str, stage: &str, updated: Timestamp) -> Task {
    Task {
        id,
        work_item: wi.into(),
        plane_issue_id: None,
        plane_project_id: None,
        title: format!("title {wi}"),
        repo: "acme/widget".into(),
        branch: format!("feature/{wi}"),
        stage: stage.into(),
        labels: vec![],
        feedback: None,
        created_at: updated,
        updated_at: updated,
    }
}

fn job(task_id: i64, stage: &str, status: JobStatus, attempts: i64) -> Job {
    Job {
        id: task_id * 10,
        task_id,
        agent: "developer".into(),
        stage: stage.into(),
        status,
        attempts,
        exit_code: None,
        verdict: None,
        summary: None,
        log_excerpt: None,
        error: None,
        not_before: None,
        created_at: Timestamp::from_millis(0),
        started_at: None,
        finished_at: None,
        claim: 0,
    }
}

#[test]
fn a_running_agent_a_stale_failure_and_the_column_cap() {
    let rules = crate::policy::load_embedded().unwrap();
    let now = Timestamp::from_millis(10_000_000);
    let mut input = BoardInput::default();
    input.tasks.push(task(1, "ET-1", "development", now));
    input
        .latest_jobs
        .insert(1, job(1, "development", JobStatus::Running, 2));
    // Failed in an earlier stage: not blocked here.
    input.tasks.push(task(2, "ET-2", "review", now));
    input
        .latest_jobs
        .insert(2, job(2, "development", JobStatus::Failed, 3));
    for i in 0..(MAX_CARDS as i64 + 5) {
        input
            .tasks
            .push(task(100 + i, &format!("OPS-{i}"), "testing", now));
    }
    let view = build(
        &input,
        &rules,
        &Overrides::default(),
        &PlaneLinks::default(),
        &[],
        &Filter::default(),
        now,
    );
    let col = |name: &str| view.columns.iter().find(|c| c.stage == name).unwrap();
    let et1 = &col("development").cards[0];
    let agent = et1.agent.as_ref().unwrap();
    assert_eq!(
        (agent.state, agent.attempt, agent.max_attempts),
        ("running", 2, Some(3))
    );
    assert!(et1.badges.is_empty());
    assert!(col("review").cards[0].badges.is_empty());
    let testing = col("testing");
    assert_eq!(
        (testing.total, testing.cards.len(), testing.hidden),
        (MAX_CARDS + 5, MAX_CARDS, 5)
    );
    assert_eq!(view.projects, ["ET", "OPS"]);
    assert_eq!(view.open_tasks, MAX_CARDS + 7);
}

#[test]
fn filters_round_trip_through_their_query() {
    let f = Filter {
        project: Some("E T".into()),
        badge: Some(Badge::Blocked),
    };
    assert_eq!(f.query(), "?project=E%20T&badge=blocked");
    assert_eq!(Filter::default().query(), "");
    assert_eq!(Badge::parse("past_grace"), Some(Badge::PastGrace));
    assert_eq!(Badge::parse("nope"), None);
}
