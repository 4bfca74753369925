//! Plane not configured: every call is a logged no-op, never an error.

use async_trait::async_trait;

use super::{IntegrationError, PlaneComment, PlaneStateInfo, Tracker, WorkItemPage};

/// Plane without credentials: writes are dropped, listings are empty.
pub struct DisabledPlane;

#[async_trait]
impl Tracker for DisabledPlane {
    async fn list_states(
        &self,
        _project_id: &str,
    ) -> Result<Vec<PlaneStateInfo>, IntegrationError> {
        Ok(Vec::new())
    }

    async fn set_state_by_name(
        &self,
        project_id: &str,
        issue_id: &str,
        state_name: &str,
    ) -> Result<(), IntegrationError> {
        tracing::debug!(
            project_id,
            issue_id,
            state_name,
            "plane disabled; state not set"
        );
        Ok(())
    }

    async fn add_comment(
        &self,
        project_id: &str,
        issue_id: &str,
        _html: &str,
        _external_id: &str,
    ) -> Result<(), IntegrationError> {
        tracing::debug!(project_id, issue_id, "plane disabled; comment not added");
        Ok(())
    }

    async fn list_work_items_page(
        &self,
        _project_id: &str,
        _cursor: Option<&str>,
        _per_page: u32,
    ) -> Result<WorkItemPage, IntegrationError> {
        Ok(WorkItemPage::default())
    }

    async fn work_item_state(
        &self,
        _project_id: &str,
        _issue_id: &str,
    ) -> Result<Option<PlaneStateInfo>, IntegrationError> {
        Ok(None)
    }

    async fn recent_comments(
        &self,
        _project_id: &str,
        _issue_id: &str,
    ) -> Result<Vec<PlaneComment>, IntegrationError> {
        Ok(Vec::new())
    }
}
