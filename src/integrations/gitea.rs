//! Gitea REST API v1: branch heads and commit statuses (what the `ci_green` gate and the
//! sha→branch resolution need).

use async_trait::async_trait;
use serde::Deserialize;

use super::IntegrationError;
use super::retry::{Reply, RetryPolicy, decode, execute};
use crate::secret::Secret;

/// Gitea clamps `limit` to 50 by default.
const PAGE_LIMIT: usize = 50;
/// A safety net against a server that never stops paging.
const MAX_PAGES: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CiState {
    Success,
    Pending,
    Failure,
    Error,
    /// No status at all on the commit.
    None,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextStatus {
    pub context: String,
    pub state: String,
}

/// The aggregate of the latest status of every context on a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CombinedStatus {
    pub state: CiState,
    pub statuses: Vec<ContextStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Branch {
    pub name: String,
    pub sha: String,
}

#[async_trait]
pub trait Forge: Send + Sync {
    /// Combined CI state of a ref (a sha, preferably). Pending or no status is not success.
    async fn combined_status(
        &self,
        repo: &str,
        git_ref: &str,
    ) -> Result<CombinedStatus, IntegrationError>;
    /// The head sha of a branch; `None` when the branch does not exist.
    async fn branch_head(
        &self,
        repo: &str,
        branch: &str,
    ) -> Result<Option<String>, IntegrationError>;
    async fn list_branches(&self, repo: &str) -> Result<Vec<Branch>, IntegrationError>;
    /// Branches whose head is `sha` (Gitea's status event carries no branch).
    async fn branches_at_sha(
        &self,
        repo: &str,
        sha: &str,
    ) -> Result<Vec<String>, IntegrationError> {
        Ok(self
            .list_branches(repo)
            .await?
            .into_iter()
            .filter(|b| b.sha == sha)
            .map(|b| b.name)
            .collect())
    }
}

/// Aggregates statuses the way GitHub (and Gitea since 2025) does, computed by us because
/// Gitea's own aggregate only covers one page: the latest status per context counts; any
/// error/failure → failure; all success (or warning/skipped) → success; otherwise pending.
pub fn aggregate(statuses: &[ContextStatus]) -> CiState {
    if statuses.is_empty() {
        return CiState::None;
    }
    let mut pending = false;
    for s in statuses {
        match s.state.as_str() {
            "failure" => return CiState::Failure,
            "error" => return CiState::Error,
            "success" | "warning" | "skipped" => {}
            _ => pending = true,
        }
    }
    if pending {
        CiState::Pending
    } else {
        CiState::Success
    }
}

pub struct HttpGitea {
    client: reqwest::Client,
    base: String,
    token: Secret,
    retry: RetryPolicy,
}

#[derive(Deserialize)]
struct ApiStatus {
    #[serde(default)]
    id: i64,
    #[serde(default)]
    status: String,
    #[serde(default)]
    context: String,
}

#[derive(Deserialize)]
struct ApiBranch {
    name: String,
    commit: ApiCommit,
}

#[derive(Deserialize)]
struct ApiCommit {
    id: String,
}

impl HttpGitea {
    pub fn new(
        base_url: &str,
        token: Secret,
        retry: RetryPolicy,
    ) -> Result<Self, IntegrationError> {
        let client = super::client("gitea", retry.attempt_timeout)?;
        Ok(HttpGitea {
            client,
            base: base_url.trim_end_matches('/').to_string(),
            token,
            retry,
        })
    }

    async fn get(
        &self,
        op: &'static str,
        path: &str,
        query: &[(&str, String)],
        accept: &[u16],
    ) -> Result<Reply, IntegrationError> {
        let url = format!("{}/api/v1{}", self.base, path);
        let auth = format!("token {}", self.token.expose());
        execute("gitea", op, path, &self.retry, accept, || {
            self.client
                .get(&url)
                .header("Authorization", &auth)
                .query(query)
        })
        .await
    }

    /// Pages through a list endpoint until a short page.
    async fn paged<T: serde::de::DeserializeOwned>(
        &self,
        op: &'static str,
        path: &str,
    ) -> Result<Vec<T>, IntegrationError> {
        let mut out = Vec::new();
        for page in 1..=MAX_PAGES {
            let reply = self
                .get(
                    op,
                    path,
                    &[
                        ("page", page.to_string()),
                        ("limit", PAGE_LIMIT.to_string()),
                    ],
                    &[],
                )
                .await?;
            let items: Vec<T> = if reply.body.trim().is_empty() || reply.body.trim() == "null" {
                Vec::new()
            } else {
                decode("gitea", op, path, &reply)?
            };
            let n = items.len();
            out.extend(items);
            let total = reply
                .headers
                .get("x-total-count")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<usize>().ok());
            let done = match total {
                Some(t) => out.len() >= t,
                None => n < PAGE_LIMIT,
            };
            if done || n == 0 {
                break;
            }
        }
        Ok(out)
    }
}

fn segment(s: &str) -> String {
    // Branch names may contain '/', which Gitea accepts as-is in the path; encode the rest.
    s.chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' | '.' | '/' | '~' => c.to_string(),
            other => {
                let mut buf = [0u8; 4];
                other
                    .encode_utf8(&mut buf)
                    .bytes()
                    .map(|b| format!("%{b:02X}"))
                    .collect()
            }
        })
        .collect()
}

#[async_trait]
impl Forge for HttpGitea {
    async fn combined_status(
        &self,
        repo: &str,
        git_ref: &str,
    ) -> Result<CombinedStatus, IntegrationError> {
        let path = format!(
            "/repos/{}/commits/{}/statuses",
            segment(repo),
            segment(git_ref)
        );
        let all: Vec<ApiStatus> = self.paged("list statuses", &path).await?;
        // Every status ever posted: keep the newest (highest per-sha index) per context.
        let mut latest: std::collections::BTreeMap<String, ApiStatus> =
            std::collections::BTreeMap::new();
        for s in all {
            match latest.get(&s.context) {
                Some(prev) if prev.id >= s.id => {}
                _ => {
                    latest.insert(s.context.clone(), s);
                }
            }
        }
        let statuses: Vec<ContextStatus> = latest
            .into_values()
            .map(|s| ContextStatus {
                context: s.context,
                state: s.status,
            })
            .collect();
        Ok(CombinedStatus {
            state: aggregate(&statuses),
            statuses,
        })
    }

    async fn branch_head(
        &self,
        repo: &str,
        branch: &str,
    ) -> Result<Option<String>, IntegrationError> {
        let path = format!("/repos/{}/branches/{}", segment(repo), segment(branch));
        let reply = self.get("get branch", &path, &[], &[404]).await?;
        if reply.status == 404 {
            return Ok(None);
        }
        let b: ApiBranch = decode("gitea", "get branch", &path, &reply)?;
        Ok(Some(b.commit.id))
    }

    async fn list_branches(&self, repo: &str) -> Result<Vec<Branch>, IntegrationError> {
        let path = format!("/repos/{}/branches", segment(repo));
        let branches: Vec<ApiBranch> = self.paged("list branches", &path).await?;
        Ok(branches
            .into_iter()
            .map(|b| Branch {
                name: b.name,
                sha: b.commit.id,
            })
            .collect())
    }
}

/// Gitea without credentials: no branches, no statuses (so `ci_green` stays red).
pub struct DisabledGitea;

#[async_trait]
impl Forge for DisabledGitea {
    async fn combined_status(
        &self,
        repo: &str,
        git_ref: &str,
    ) -> Result<CombinedStatus, IntegrationError> {
        tracing::debug!(repo, git_ref, "gitea disabled; no CI status");
        Ok(CombinedStatus {
            state: CiState::None,
            statuses: Vec::new(),
        })
    }

    async fn branch_head(
        &self,
        repo: &str,
        branch: &str,
    ) -> Result<Option<String>, IntegrationError> {
        tracing::debug!(repo, branch, "gitea disabled; no branch head");
        Ok(None)
    }

    async fn list_branches(&self, _repo: &str) -> Result<Vec<Branch>, IntegrationError> {
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(context: &str, state: &str) -> ContextStatus {
        ContextStatus {
            context: context.into(),
            state: state.into(),
        }
    }

    #[test]
    fn aggregation_follows_the_github_rule() {
        assert_eq!(aggregate(&[]), CiState::None);
        assert_eq!(
            aggregate(&[s("a", "success"), s("b", "warning")]),
            CiState::Success
        );
        assert_eq!(
            aggregate(&[s("a", "success"), s("b", "pending")]),
            CiState::Pending
        );
        assert_eq!(
            aggregate(&[s("a", "pending"), s("b", "failure")]),
            CiState::Failure
        );
        assert_eq!(aggregate(&[s("a", "error")]), CiState::Error);
        assert_eq!(aggregate(&[s("a", "something-new")]), CiState::Pending);
    }
}
