//! Plane's JSON as it comes over the wire: lenient about what orch does not read, since Plane
//! adds fields and expands references differently per endpoint and version.

use serde::Deserialize;

use super::PlaneStateInfo;

#[derive(Deserialize)]
pub(super) struct Envelope<T> {
    #[serde(default = "Vec::new")]
    pub(super) results: Vec<T>,
    pub(super) next_cursor: Option<String>,
    #[serde(default)]
    pub(super) next_page_results: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum Listing<T> {
    Paged(Envelope<T>),
    Plain(Vec<T>),
}

impl<T> Listing<T> {
    pub(super) fn into_rows(self) -> Vec<T> {
        match self {
            Listing::Paged(e) => e.results,
            Listing::Plain(v) => v,
        }
    }
}

#[derive(Deserialize)]
pub(super) struct ApiItem {
    pub(super) id: String,
    #[serde(default)]
    pub(super) name: String,
    pub(super) sequence_id: i64,
    pub(super) state: ApiStateRef,
    pub(super) updated_at: String,
    #[serde(default)]
    pub(super) labels: Vec<ApiLabel>,
}

#[derive(Deserialize)]
pub(super) struct ApiComment {
    pub(super) id: String,
    #[serde(default)]
    pub(super) comment_html: Option<String>,
    #[serde(default)]
    pub(super) external_source: Option<String>,
    #[serde(default)]
    pub(super) actor: Option<String>,
    #[serde(default)]
    pub(super) created_by: Option<String>,
    pub(super) created_at: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum ApiStateRef {
    Expanded(PlaneStateInfo),
    Id(String),
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum ApiLabel {
    Expanded { name: String },
    Id(serde::de::IgnoredAny),
}
