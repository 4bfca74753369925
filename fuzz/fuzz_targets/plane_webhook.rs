//! A Plane webhook body, as stored in the inbox, through the pure parser the inbox processor
//! runs first (`orch::pipeline::webhook::parse`). Parsing must never panic, and every error it
//! returns must be permanent: a body that fails to parse fails the same way on every retry.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orch::clock::Timestamp;
use orch::pipeline::webhook::parse;
use orch::store::InboxItem;

fuzz_target!(|body: &[u8]| {
    let delivery = InboxItem {
        id: 1,
        source: "plane".into(),
        event: "issue".into(),
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
