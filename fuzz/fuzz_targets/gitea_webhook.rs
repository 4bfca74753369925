//! A Gitea webhook, as stored in the inbox, through the pure parser the inbox processor runs
//! first (`orch::pipeline::webhook::parse`). Gitea names the event in a header, stored beside
//! the body: the first input byte picks it (so every parser branch is reached), the rest is
//! the body. Parsing must never panic, and every error must be permanent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orch::clock::Timestamp;
use orch::pipeline::webhook::parse;
use orch::store::InboxItem;

/// The events orch acts on, and one it does not.
const EVENTS: &[&str] = &[
    "push",
    "status",
    "pull_request_review_approved",
    "pull_request_review_rejected",
    "issues",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let delivery = InboxItem {
        id: 1,
        source: "gitea".into(),
        event: EVENTS[usize::from(selector) % EVENTS.len()].into(),
        body_hash: String::new(),
        body: body.to_vec(),
        received_at: Timestamp::EPOCH,
        processed_at: None,
        error: None,
        attempts: 0,
    };
    if let Err(e) = parse(&delivery) {
        assert!(
            e.is_permanent(),
            "a parse error that a retry could fix: {e}"
        );
    }
});
