//! What a stored delivery is about, read loosely from its body.
//!
//! Two readers need it without applying the delivery: the sweep, which must not count a task
//! as unblocked while a delivery about it still waits in the inbox (late is not lost), and
//! the inbox processor, which keeps deliveries about one thing in order while it processes
//! different things side by side. Reading is lenient: a body it cannot read is about
//! [`Subject::Unknown`], which both treat conservatively.

use std::collections::HashSet;

use crate::store::{Conn, InboxItem, StoreError};

/// The thing a delivery is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    /// A Plane work item, by its Plane id.
    PlaneIssue(String),
    /// A branch of a repository (pushes, pull requests, reviews).
    Branch { repo: String, branch: String },
    /// A whole repository: a CI status names a commit, not a branch, so it may concern any
    /// task of the repository.
    Repo(String),
    /// Nothing could be read.
    Unknown,
}

impl Subject {
    /// What `delivery` is about.
    pub fn of(delivery: &InboxItem) -> Subject {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&delivery.body) else {
            return Subject::Unknown;
        };
        let text = |p: &str| v.pointer(p).and_then(|x| x.as_str()).map(str::to_string);
        match delivery.source.as_str() {
            "plane" => text("/data/issue")
                .or_else(|| text("/data/id"))
                .map_or(Subject::Unknown, Subject::PlaneIssue),
            "gitea" => {
                let Some(repo) = text("/repository/full_name") else {
                    return Subject::Unknown;
                };
                let branch = text("/pull_request/head/ref").or_else(|| {
                    text("/ref").map(|r| r.trim_start_matches("refs/heads/").to_string())
                });
                match (delivery.event.as_str(), branch) {
                    ("status", _) | (_, None) => Subject::Repo(repo),
                    (_, Some(branch)) => Subject::Branch { repo, branch },
                }
            }
            _ => Subject::Unknown,
        }
    }

    /// The key deliveries are kept in order by: one per work item where it can be told.
    pub fn order_key(&self) -> String {
        match self {
            Subject::PlaneIssue(id) => format!("plane:{id}"),
            Subject::Branch { repo, branch } => format!("branch:{repo}:{branch}"),
            Subject::Repo(repo) => format!("repo:{repo}"),
            Subject::Unknown => "unknown".to_string(),
        }
    }
}

/// The subjects of a set of waiting deliveries, for asking which tasks they concern.
#[derive(Debug, Default)]
pub struct Subjects {
    issues: HashSet<String>,
    branches: HashSet<(String, String)>,
    repos: HashSet<String>,
}

impl Subjects {
    pub fn of(deliveries: &[InboxItem]) -> Subjects {
        let mut s = Subjects::default();
        for d in deliveries {
            match Subject::of(d) {
                Subject::PlaneIssue(id) => {
                    s.issues.insert(id);
                }
                Subject::Branch { repo, branch } => {
                    s.branches.insert((repo, branch));
                }
                Subject::Repo(repo) => {
                    s.repos.insert(repo);
                }
                // Unreadable deliveries are given up on by the inbox at once; they concern
                // nothing the sweep should wait for.
                Subject::Unknown => {}
            }
        }
        s
    }

    /// The ids of the tasks any of the deliveries may move: one query, none when there is
    /// nothing waiting.
    pub fn tasks(&self, conn: &Conn<'_>) -> Result<HashSet<i64>, StoreError> {
        let issues: Vec<&str> = self.issues.iter().map(String::as_str).collect();
        let repos: Vec<&str> = self.repos.iter().map(String::as_str).collect();
        let branches: Vec<(&str, &str)> = self
            .branches
            .iter()
            .map(|(r, b)| (r.as_str(), b.as_str()))
            .collect();
        Ok(crate::store::tasks::concerned_by(conn, &issues, &repos, &branches)?
            .into_iter()
            .collect())
    }
}
