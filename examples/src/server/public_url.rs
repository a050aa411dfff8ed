//! The `public_url` setting: the scheme, host and port users reach apps on, which the
//! URLs Wharf prints and returns are built from (`<service>.<project>.<host>`).

use std::fmt;

/// Scheme, host and port of apps' URLs, e.g. `http://localhost:20280` or
/// `https://apps.example.com`. The host is the base domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl {
    /// `https://` (else `http://`).
    pub https: bool,
    /// The base domain.
    pub host: String,
    /// The port URLs carry; `None` for the scheme's default (80 or 443).
    pub port: Option<u16>,
}

impl PublicUrl {
    /// Parses `http[s]://HOST[:PORT][/]`. A port equal to the scheme's default is
    /// dropped; a path, query, fragment, user or IP literal is refused: the host is the
    /// domain apps' names are made under.
    pub fn parse(v: &str) -> Result<PublicUrl, String> {
        let (https, rest) = if let Some(r) = v.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = v.strip_prefix("http://") {
            (false, r)
        } else {
            return Err("expected an http:// or https:// URL, e.g. http://localhost:8080".into());
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return Err(
                "expected scheme, host and port only (no path, query, fragment or user)".into(),
            );
        }
        if rest.starts_with('[') {
            return Err(
                "expected a domain name, not an IP address: apps get names under it".into(),
            );
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => match port.parse::<u16>() {
                Ok(p) if p > 0 => (host, Some(p)),
                _ => return Err(format!("port {port:?} is not a number from 1 to 65535")),
            },
            None => (rest, None),
        };
        if host.contains('*') {
            return Err("expected a domain name without wildcards".into());
        }
        wharf_core::validate_hostname(host).map_err(|e| e.message().to_owned())?;
        if host
            .split('.')
            .all(|l| l.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(
                "expected a domain name, not an IP address: apps get names under it".into(),
            );
        }
        let default = if https { 443 } else { 80 };
        Ok(PublicUrl {
            https,
            host: host.to_owned(),
            port: port.filter(|p| *p != default),
        })
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        if self.https {
            "https"
        } else {
            "http"
        }
    }
}

impl fmt::Display for PublicUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme(), self.host)?;
        match self.port {
            Some(p) => write!(f, ":{p}"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheme_host_and_port_are_read() {
        let u = PublicUrl::parse("http://localhost:20280").unwrap();
        assert_eq!(
            u,
            PublicUrl {
                https: false,
                host: "localhost".into(),
                port: Some(20280)
            }
        );
        let u = PublicUrl::parse("https://apps.example.com/").unwrap();
        assert_eq!(
            (u.https, u.host.as_str(), u.port),
            (true, "apps.example.com", None)
        );
        assert_eq!(u.to_string(), "https://apps.example.com");
    }

    #[test]
    fn the_default_port_of_the_scheme_is_not_printed() {
        assert_eq!(PublicUrl::parse("http://a.test:80").unwrap().port, None);
        assert_eq!(PublicUrl::parse("https://a.test:443").unwrap().port, None);
        assert_eq!(
            PublicUrl::parse("https://a.test:80").unwrap().port,
            Some(80)
        );
    }

    #[test]
    fn anything_but_scheme_host_and_port_is_refused() {
        for bad in [
            "localhost:8080",
            "ftp://a.test",
            "http://",
            "http://a.test:0",
            "http://a.test:99999",
            "http://a.test:x",
            "http://Apps.test",
            "http://a.test/apps",
            "http://a.test?x=1",
            "http://user@a.test",
            "http://*.a.test",
            "http://bad host",
            "http://127.0.0.1:8080",
            "http://[::1]:8080",
        ] {
            assert!(PublicUrl::parse(bad).is_err(), "{bad} was accepted");
        }
    }
}
