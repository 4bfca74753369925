//! The board's templates, compiled into the binary and parsed once.
//!
//! minijinja escapes every value by the template's name (`.html`): titles, questions and
//! agents' output are untrusted text and are shown as text. The two values that are markup
//! (the rules graph, drawn and escaped by [`super::svg`], and a page's rendered `<main>`
//! inside the layout) are marked safe where they are made.

use std::sync::LazyLock;

use minijinja::Environment;
use serde::Serialize;

const TEMPLATES: &[(&str, &str)] = &[
    ("layout.html", include_str!("templates/layout.html")),
    ("health.html", include_str!("templates/health.html")),
    ("board.html", include_str!("templates/board.html")),
    ("task.html", include_str!("templates/task.html")),
    ("rules.html", include_str!("templates/rules.html")),
    ("login.html", include_str!("templates/login.html")),
];

static ENV: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    for (name, source) in TEMPLATES {
        // A template that does not parse fails its pages (and the unit test below), not the
        // process.
        if let Err(e) = env.add_template(name, source) {
            tracing::error!(template = name, error = %e, "board template does not parse");
        }
    }
    env
});

/// Renders template `name` with `ctx`.
pub(crate) fn render(name: &str, ctx: impl Serialize) -> Result<String, minijinja::Error> {
    ENV.get_template(name)?.render(ctx)
}

/// Text that is already markup, to be inserted as is.
pub(crate) fn markup(html: String) -> minijinja::Value {
    minijinja::Value::from_safe_string(html)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses() {
        let mut env = Environment::new();
        for (name, source) in TEMPLATES {
            env.add_template(name, source)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn values_are_escaped() {
        let html = render(
            "login.html",
            minijinja::context! { next => "\"><script>alert(1)</script>", error => "<b>x</b>" },
        )
        .unwrap();
        assert!(!html.contains("<script>alert"));
        assert!(html.contains("&lt;script&gt;"));
        assert!(html.contains("&lt;b&gt;x"));
    }
}
