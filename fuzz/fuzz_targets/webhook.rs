//! Webhook delivery parsing (`wharf_server::webhooks::describe_delivery`), the code the
//! `/hooks/github` and `/hooks/gitlab` endpoints run on a signed body.
//!
//! Input: the first byte picks provider and event (GitHub `push`, `pull_request`,
//! `ping`; GitLab `Push Hook`, `Merge Request Hook`, `Tag Push Hook`), the rest is the
//! body. Checked: no panic, and an answer exactly when the body is JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wharf_server::webhooks::describe_delivery;

/// (provider, event) pairs; the first input byte picks one.
const EVENTS: &[(&str, &str)] = &[
    ("github", "push"),
    ("github", "pull_request"),
    ("gitlab", "Push Hook"),
    ("gitlab", "Merge Request Hook"),
    ("github", "ping"),
    ("gitlab", "Tag Push Hook"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let (provider, event) = EVENTS[usize::from(pick) % EVENTS.len()];
    let described = describe_delivery(provider, event, body);
    let is_json = serde_json::from_slice::<serde_json::Value>(body).is_ok();
    assert_eq!(
        described.is_some(),
        is_json,
        "{provider} {event}: {described:?}"
    );
});
