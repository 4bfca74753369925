//! The login form: a browser cannot send a bearer header when following a link, so with
//! `http.token` set the board asks for the token once and keeps a session cookie (a digest of
//! the token, see [`crate::http::auth::session_value`]). `HttpOnly` keeps it from scripts,
//! `SameSite=Strict` from other sites' requests.

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use minijinja::context;
use serde::Deserialize;

use super::templates;
use crate::http::AppState;
use crate::http::auth::{SESSION_COOKIE, matches, session_value};

#[derive(Debug, Default, Deserialize)]
pub(crate) struct NextQuery {
    next: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct LoginForm {
    #[serde(default)]
    token: String,
    next: Option<String>,
}

/// Where to go after signing in: a path of ours, never another site (`//evil`, `https:`).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_string(),
        _ => "/".into(),
    }
}

fn render(next: &str, error: Option<&str>, status: StatusCode) -> Response {
    match templates::render("login.html", context! { next, error }) {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => super::BoardError::from(e).into_response(),
    }
}

pub(crate) async fn form(Query(q): Query<NextQuery>) -> Response {
    render(&safe_next(q.next.as_deref()), None, StatusCode::OK)
}

pub(crate) async fn submit(State(state): State<AppState>, Form(f): Form<LoginForm>) -> Response {
    let next = safe_next(f.next.as_deref());
    let Some(token) = state.config.http.token.as_ref().filter(|t| !t.is_empty()) else {
        // No token configured: every page is open already.
        return (StatusCode::SEE_OTHER, [(header::LOCATION, next)]).into_response();
    };
    if !matches(token, &f.token) {
        return render(
            &next,
            Some("That is not the API token."),
            StatusCode::UNAUTHORIZED,
        );
    }
    let cookie = format!(
        "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
        session_value(token)
    );
    (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, next), (header::SET_COOKIE, cookie)],
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(safe_next(Some("/tasks/ET-1")), "/tasks/ET-1");
        assert_eq!(safe_next(Some("//evil.example")), "/");
        assert_eq!(safe_next(Some("https://evil.example")), "/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/");
        assert_eq!(safe_next(None), "/");
    }
}
