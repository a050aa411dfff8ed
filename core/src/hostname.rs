//! Hostname validation, shared by every router so nothing unchecked reaches a
//! proxy's configuration.
//!
//! Two steps: [`normalize_hostname`] turns what a user typed (upper case,
//! internationalised names) into the canonical ASCII form, and [`validate_hostname`]
//! checks that canonical form. Routers only ever accept the canonical form, so what
//! they list back is byte for byte what was applied.

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
        if label.len() >= 4 && &label[2..4] == "--" {
            // RFC 5891 reserves "??--" labels; only "xn--" (punycode) is in use, and it
            // must decode to a valid internationalised label.
            if !label.starts_with("xn--") {
                return bad(format!(
                    "label {label:?} has '--' in positions 3-4, which is reserved for punycode (xn--)"
                ));
            }
            let (_, decoded) = idna::domain_to_unicode(label);
            if decoded.is_err() {
                return bad(format!("label {label:?} is not valid punycode"));
            }
        }
    }
    Ok(())
}

/// Turns a hostname as a user may type it into the canonical form routers accept,
/// then checks it with [`validate_hostname`]: ASCII letters are lower-cased, and an
/// internationalised name is converted to punycode (UTS #46 processing, as browsers
/// do), so `Bücher.Example` becomes `xn--bcher-kva.example`. A leading `*.` wildcard
/// label is kept. A trailing dot (the DNS root) is refused rather than dropped, as it
/// is in [`validate_hostname`].
///
/// ```
/// use wharf_core::hostname::normalize_hostname;
/// assert_eq!(normalize_hostname("Bücher.Example").unwrap(), "xn--bcher-kva.example");
/// assert_eq!(normalize_hostname("*.Münich.de").unwrap(), "*.xn--mnich-kva.de");
/// assert_eq!(normalize_hostname("web.demo.localhost").unwrap(), "web.demo.localhost");
/// assert!(normalize_hostname("a b.example").is_err());
/// assert!(normalize_hostname("a`) || Host(`evil.com").is_err());
/// ```
pub fn normalize_hostname(host: &str) -> Result<String> {
    let bad = |why: &str| Err(Error::invalid(format!("invalid hostname {host:?}: {why}")));
    let (wildcard, rest) = match host.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, host),
    };
    let ascii = if rest.is_ascii() {
        rest.to_ascii_lowercase()
    } else {
        // Refuse anything that is not a letter, digit, '-' or '.' before IDNA mapping,
        // so no separator or quoting character can be smuggled in through the mapping
        // (UTS #46 maps e.g. fullwidth '．' to '.').
        if let Some(c) = rest
            .chars()
            .find(|c| c.is_ascii() && !(c.is_ascii_alphanumeric() || *c == '-' || *c == '.'))
        {
            return bad(&format!("{c:?} is not allowed"));
        }
        match idna::domain_to_ascii_strict(rest) {
            Ok(a) => a,
            Err(_) => return bad("it is not a valid internationalised domain name"),
        }
    };
    let out = if wildcard {
        format!("*.{ascii}")
    } else {
        ascii
    };
    validate_hostname(&out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn refused(h: &str) {
        let err = validate_hostname(h).expect_err(h);
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{h}: {err}");
    }

    #[test]
    fn accepts_rfc1123_names() {
        for h in [
            "a",
            "localhost",
            "web.demo.localhost",
            "1.example.com",
            "a-b.c-d.example",
            "*.example.com",
            "xn--bcher-kva.example",
            "123",
            "a.b",
            "x1-y2.example.com",
            "0.example.com",
            "*.com",
        ] {
            validate_hostname(h).unwrap_or_else(|e| panic!("{h}: {e}"));
        }
    }

    #[test]
    fn refuses_bad_names() {
        for h in [
            "",
            ".",
            "example.com.",
            ".example.com",
            "a..b",
            "-a.example",
            "a-.example",
            "A.example",
            "a_b.example",
            "a b.example",
            "a`.example",
            "a`) || Host(`evil.com",
            "*",
            "*.",
            "**.example.com",
            "foo.*.com",
            "*.*.example.com",
            "a*.example.com",
            "*a.example.com",
            "ab--c.example",
            "xn--.example",
            "xn--a-ecp.example\n",
            "bücher.example",
            "a\u{0}.example",
            "a:80",
            "a/b",
            "web.-example.com",
            "web.EXAMPLE.com",
            "*foo.com",
            "f*o.com",
            "web).example.com",
            "web\".example.com",
            "web\n.example.com",
            "web.example.com:8080",
        ] {
            refused(h);
        }
        let err = validate_hostname("foo.*.com").unwrap_err();
        assert!(err.message().contains("wildcard"), "{err}");
    }

    #[test]
    fn length_limits() {
        let l63 = "a".repeat(63);
        validate_hostname(&format!("{l63}.example")).unwrap();
        refused(&format!("{}.example", "a".repeat(64)));
        // 4 labels of 63 + 3 dots = 255 > 253; 3 of 63 + one of 61 = 253.
        let long = format!("{l63}.{l63}.{l63}.{}", "a".repeat(61));
        assert_eq!(long.len(), 253);
        validate_hostname(&long).unwrap();
        refused(&format!("{l63}.{l63}.{l63}.{}", "a".repeat(62)));
    }

    #[test]
    fn normalizes_case_and_idn() {
        for (input, normalized) in [
            ("WEB.Example.COM", "web.example.com"),
            ("bücher.example", "xn--bcher-kva.example"),
            ("*.bücher.example", "*.xn--bcher-kva.example"),
            ("例え.テスト", "xn--r8jz45g.xn--zckzah"),
            // Already canonical names pass unchanged.
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ] {
            assert_eq!(normalize_hostname(input).unwrap(), normalized, "{input}");
        }
        // The result is always accepted by validate_hostname.
        for h in ["Bücher.Example", "ÄÖÜ.de", "*.straße.de"] {
            let n = normalize_hostname(h).unwrap();
            validate_hostname(&n).unwrap();
        }
    }

    #[test]
    fn normalize_refuses_what_validate_refuses() {
        for h in [
            "",
            "bü cher.example",
            "bücher`.example",
            "bü/cher.example",
            "*.bü*cher.example",
            "foo.*.bücher.example",
            "bücher..example",
            "bücher.example.",
            "a`) || Host(`evil.com",
            "\u{200b}.example",
        ] {
            let err = normalize_hostname(h).expect_err(h);
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{h}: {err}");
        }
        // A label too long once encoded.
        let long = "ü".repeat(60);
        assert!(normalize_hostname(&format!("{long}.example")).is_err());
    }
}
