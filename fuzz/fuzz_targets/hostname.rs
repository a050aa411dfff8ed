//! Hostname checks (`wharf_core::validate_hostname`, `wharf_core::normalize_hostname`),
//! which stand between users and every proxy's configuration.
//!
//! Input: any UTF-8 string. Checked:
//! - what `validate_hostname` accepts is ASCII, at most 253 bytes, made only of
//!   `a-z 0-9 - .` (and one leading `*.`), without empty labels, and is its own
//!   normal form;
//! - what `normalize_hostname` returns passes `validate_hostname`, and normalizing it
//!   again gives it back (idempotent);
//! - normalizing ignores ASCII case.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wharf_core::{normalize_hostname, validate_hostname};

fuzz_target!(|data: &[u8]| {
    let Ok(host) = std::str::from_utf8(data) else {
        return;
    };
    if validate_hostname(host).is_ok() {
        check_canonical(host);
        assert_eq!(normalize_hostname(host).ok().as_deref(), Some(host));
    }
    let normalized = normalize_hostname(host);
    if let Ok(n) = &normalized {
        assert!(
            validate_hostname(n).is_ok(),
            "{host:?} -> {n:?} is not valid"
        );
        check_canonical(n);
        assert_eq!(
            normalize_hostname(n).ok().as_ref(),
            Some(n),
            "not idempotent on {host:?}"
        );
    }
    let upper = host.to_ascii_uppercase();
    assert_eq!(
        normalize_hostname(&upper).ok(),
        normalized.ok(),
        "{host:?} and {upper:?} normalize differently"
    );
});

/// The shape every accepted hostname has, whatever the rules' wording.
fn check_canonical(h: &str) {
    assert!(!h.is_empty() && h.len() <= 253, "{h:?}");
    let rest = h.strip_prefix("*.").unwrap_or(h);
    assert!(!rest.is_empty(), "{h:?}");
    for label in rest.split('.') {
        assert!(!label.is_empty() && label.len() <= 63, "{h:?}");
        assert!(
            label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "{h:?}"
        );
        assert!(!label.starts_with('-') && !label.ends_with('-'), "{h:?}");
    }
}
