//! Hostname validation, shared by every router so nothing unchecked reaches a
//! proxy's configuration.

use crate::error::{Error, Result};

/// Checks a hostname as routers accept it: RFC 1123 labels (letters, digits, `-`, not
/// starting or ending with `-`, 1 to 63 bytes each), at most 253 bytes in all, at
/// least one label, an optional single leading `*.` wildcard label, and no trailing
/// dot. Upper case is refused (routers compare names in lower case). Names outside
/// ASCII must be given in punycode (`xn--...`).
///
/// ```
/// use wharf_core::validate_hostname;
/// assert!(validate_hostname("web.demo.localhost").is_ok());
/// assert!(validate_hostname("*.example.com").is_ok());
/// assert!(validate_hostname("a`) || Host(`evil.com").is_err());
/// assert!(validate_hostname("foo.*.com").is_err());
/// ```
pub fn validate_hostname(host: &str) -> Result<()> {
    let bad = |why: String| Err(Error::invalid(format!("invalid hostname {host:?}: {why}")));
    if host.is_empty() {
        return bad("it is empty".into());
    }
    if host.len() > 253 {
        return bad("it is longer than 253 characters".into());
    }
    if !host.is_ascii() {
        return bad("it is not ASCII: give internationalised names in punycode (xn--...)".into());
    }
    let rest = host.strip_prefix("*.").unwrap_or(host);
    if rest.is_empty() {
        return bad("a wildcard needs a domain after '*.'".into());
    }
    for label in rest.split('.') {
        if label.is_empty() {
            return bad(
                "it has an empty label (two dots in a row, or a leading/trailing dot)".into(),
            );
        }
        if label.len() > 63 {
            return bad(format!("label {label:?} is longer than 63 characters"));
        }
        if label == "*" {
            return bad("a wildcard is only allowed as the whole first label".into());
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad(format!("label {label:?} starts or ends with '-'"));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return bad(format!("{c:?} is not allowed (use a-z, 0-9, '-' and '.')"));
        }
    }
    Ok(())
}
