//! The pipeline board: server-rendered pages for the people who run orch.
//!
//! `GET /` the board (a column per stage, a card per task, filters by project and badge),
//! `GET /tasks/{work_item}` one task, `GET /rules` the policy. Every page shows the health
//! strip and keeps itself current: a small script of orch's own (`/static/board.js`) polls
//! `GET /live/...?fp=<fingerprint>` every second and swaps in the new `<main>` when the
//! fingerprint moved ([`live`]). Read-only: nothing here writes, and nothing calls a peer.
//! Behind the API token like every route (a login form sets a session cookie, see
//! [`crate::http::auth`]).
//!
//! Files: `cards.rs` the board as data (pure), `task.rs` and `policy.rs` the other pages'
//! data, `svg.rs` the rules graph, `health.rs` the strip, `live.rs` the fingerprint,
//! `login.rs` the form, `templates.rs` the templates under `templates/`.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use minijinja::context;
use serde::Deserialize;

use crate::clock::Timestamp;
use crate::http::AppState;
use crate::store::{self, StoreError};

pub mod cards;
mod health;
mod live;
mod login;
mod policy;
mod svg;
mod task;
mod templates;

pub use cards::{BoardInput, Filter};

/// Why a page could not be shown.
#[derive(Debug, thiserror::Error)]
pub enum BoardError {
    #[error("the store is unavailable: {0}")]
    Store(#[from] StoreError),
    #[error("cannot render the page: {0}")]
    Template(#[from] minijinja::Error),
}

impl IntoResponse for BoardError {
    fn into_response(self) -> Response {
        tracing::error!(error = %self, "board page failed");
        let status = match self {
            BoardError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            BoardError::Template(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, format!("{self}\n")).into_response()
    }
}

/// The board's routes, merged into the service's router (and under its auth layer).
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(board_page))
        .route("/tasks/{work_item}", get(task_page))
        .route("/rules", get(rules_page))
        .route("/live/board", get(live::board))
        .route("/live/tasks/{work_item}", get(live::task))
        .route("/live/rules", get(live::rules))
        .route("/login", get(login::form).post(login::submit))
        .route("/static/board.js", get(script))
        .route("/static/board.css", get(stylesheet))
}

/// One of the three pages.
#[derive(Debug, Clone)]
pub(crate) enum Page {
    Board(Filter),
    Task(String),
    Rules,
}

impl Page {
    fn live_url(&self) -> String {
        match self {
            Page::Board(f) => format!("/live/board{}", f.query()),
            Page::Task(wi) => format!("/live{}", cards::task_href(wi)),
            Page::Rules => "/live/rules".into(),
        }
    }

    fn nav(&self) -> &'static str {
        match self {
            Page::Board(_) => "board",
            Page::Task(_) => "task",
            Page::Rules => "rules",
        }
    }
}

/// The board's query string as given; an unknown badge or an empty value is no filter.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct FilterQuery {
    project: Option<String>,
    badge: Option<String>,
}

impl FilterQuery {
    fn filter(&self) -> Filter {
        Filter {
            project: self.project.clone().filter(|p| !p.is_empty()),
            badge: self.badge.as_deref().and_then(cards::Badge::parse),
        }
    }
}

/// Reads what the board shows: four queries in one store call.
pub async fn read_board(state: &AppState) -> Result<BoardInput, StoreError> {
    state
        .store
        .call(|c| {
            Ok(BoardInput {
                tasks: store::tasks::list_all(c)?,
                entered: store::tasks::entered_current_stage(c)?,
                latest_jobs: store::jobs::latest_per_task(c)?,
                gates: store::gate_readings::all(c)?,
            })
        })
        .await
}

/// The board's `<main>`: health strip, filters, columns.
pub async fn board_main(
    state: &AppState,
    filter: &Filter,
    now: Timestamp,
) -> Result<String, BoardError> {
    let input = read_board(state).await?;
    let health = health::read(state, now).await?;
    let rules = state.rules.current();
    let links = cards::PlaneLinks {
        base: state.config.plane.url.clone(),
        workspace: state.config.plane.workspace.clone(),
    };
    let configured: Vec<String> = state
        .config
        .projects
        .iter()
        .map(|p| p.identifier.clone())
        .collect();
    let board = cards::build(
        &input,
        &rules,
        state.reconciler.overrides(),
        &links,
        &configured,
        filter,
        now,
    );
    Ok(templates::render("board.html", context! { board, health })?)
}

/// A page's title and `<main>`; `None` when its subject does not exist (an unknown task).
pub(crate) async fn render_main(
    state: &AppState,
    page: &Page,
    now: Timestamp,
) -> Result<Option<(String, String)>, BoardError> {
    match page {
        Page::Board(filter) => Ok(Some((
            "Board".into(),
            board_main(state, filter, now).await?,
        ))),
        Page::Task(wi) => {
            let Some(t) = task::load(state, wi, now).await? else {
                return Ok(None);
            };
            let health = health::read(state, now).await?;
            let html = templates::render("task.html", context! { t, health })?;
            Ok(Some((wi.clone(), html)))
        }
        Page::Rules => {
            let health = health::read(state, now).await?;
            let (r, svg) = policy::view(state);
            let svg = templates::markup(svg);
            let html = templates::render("rules.html", context! { r, health, svg })?;
            Ok(Some(("Rules".into(), html)))
        }
    }
}

/// A whole page: the layout around [`render_main`], with the fingerprint the live script
/// starts from (taken first, so a change while rendering is caught by the next poll).
async fn page(state: &AppState, page: Page) -> Result<Response, BoardError> {
    let now = state.clock.now();
    let fp = live::fingerprint(state, now).await?;
    let Some((title, main)) = render_main(state, &page, now).await? else {
        let body = format!(
            "no task for work item {}",
            html_escape::encode_text(match &page {
                Page::Task(wi) => wi.as_str(),
                _ => "",
            })
        );
        return Ok((StatusCode::NOT_FOUND, Html(body)).into_response());
    };
    let html = templates::render(
        "layout.html",
        context! {
            title,
            nav => page.nav(),
            live_url => page.live_url(),
            fp,
            main => templates::markup(main),
        },
    )?;
    Ok(Html(html).into_response())
}

async fn board_page(State(state): State<AppState>, Query(q): Query<FilterQuery>) -> Response {
    page(&state, Page::Board(q.filter())).await.into_response()
}

async fn task_page(State(state): State<AppState>, Path(work_item): Path<String>) -> Response {
    page(&state, Page::Task(work_item)).await.into_response()
}

async fn rules_page(State(state): State<AppState>) -> Response {
    page(&state, Page::Rules).await.into_response()
}

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("static/board.js"),
    )
        .into_response()
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("static/board.css"),
    )
        .into_response()
}
