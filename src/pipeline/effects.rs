//! What a change owes the peers, as data.
//!
//! Pure functions from the rules and a task to [`NewEffect`]s: the handlers write them in the
//! transaction of the change that owes them, and the dispatchers deliver them. Nothing here
//! talks to a peer, so an effect exists exactly when its change was committed.

use crate::policy::{OutboundEvent, RuleSet};
use crate::store::outbox::{Effect, NewEffect};
use crate::store::{Task, Trigger};

/// The Plane state the rules name for `event`, for a task that has a Plane work item.
pub(crate) fn plane_state(
    rules: &RuleSet,
    task: &Task,
    event: &OutboundEvent,
) -> Option<NewEffect> {
    let state = rules.outbound_plane_state(event)?;
    let (project, issue) = plane_ids(task)?;
    Some(NewEffect::new(
        &task.work_item,
        Effect::PlaneState {
            project,
            issue,
            state: state.to_string(),
        },
    ))
}

/// A comment on the task's work item; `external_id` makes it once-only (in the outbox and
/// in Plane).
pub(crate) fn comment(task: &Task, external_id: &str, text: &str) -> Option<NewEffect> {
    let (project, issue) = plane_ids(task)?;
    if text.is_empty() {
        return None;
    }
    Some(NewEffect::new(
        &task.work_item,
        Effect::PlaneComment {
            project,
            issue,
            html: format!("<p>{}</p>", html_escape(text)),
            external_id: external_id.to_string(),
        },
    ))
}

/// A Telegram message about `subject`; nothing for an empty text (a template left empty).
pub(crate) fn telegram(subject: &str, text: &str) -> Option<NewEffect> {
    (!text.is_empty()).then(|| {
        NewEffect::new(
            subject,
            Effect::Telegram {
                text: text.to_string(),
            },
        )
    })
}

/// What entering `stage` owes: the Plane state the rules map the stage to and the
/// `stage_changed` message. `task` is the task as it is after the move.
pub(crate) fn entered(
    rules: &RuleSet,
    task: &Task,
    stage: &str,
    trigger: Trigger,
) -> Vec<NewEffect> {
    let state = plane_state(
        rules,
        task,
        &OutboundEvent::Entered {
            stage: stage.to_string(),
        },
    );
    let text = rules.render(
        "stage_changed",
        &[
            ("work_item", &task.work_item),
            ("stage", stage),
            ("title", &task.title),
            ("trigger", trigger.as_str()),
        ],
    );
    state
        .into_iter()
        .chain(telegram(&task.work_item, &text))
        .collect()
}

fn plane_ids(task: &Task) -> Option<(String, String)> {
    Some((task.plane_project_id.clone()?, task.plane_issue_id.clone()?))
}

fn html_escape(s: &str) -> String {
    html_escape::encode_text(s).into_owned()
}
