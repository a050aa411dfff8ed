//! Custom-domain claims (domain → service, token, proven or not), kept in
//! `data_dir/domains.json`, and the DNS checks that prove them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::dns::{self, Record, RecordType};
use crate::dto::{CnameRecord, Proof, TxtRecord};

/// The prefix of the TXT record name that proves a domain.
pub const CHALLENGE_PREFIX: &str = "_wharf-challenge.";

/// One domain's claim.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claim {
    /// The service id it is for.
    pub service: String,
    /// The value the TXT record must hold after `wharf-verify=`.
    pub token: String,
    /// Whether DNS has shown the domain points here (then it is routed).
    pub verified: bool,
}

impl Claim {
    /// What the owner must publish.
    pub fn instructions(&self, domain: &str, generated_host: &str) -> Proof {
        Proof {
            cname: CnameRecord {
                name: domain.to_owned(),
                target: generated_host.to_owned(),
            },
            txt: TxtRecord {
                name: format!("{CHALLENGE_PREFIX}{domain}"),
                value: format!("wharf-verify={}", self.token),
            },
        }
    }
}

/// How domains are checked.
#[derive(Debug, Clone)]
pub enum Check {
    /// Ask this DNS server.
    Dns(SocketAddr),
    /// Take every domain as proven (an operator's choice, for a closed setup).
    Off,
    /// No DNS server is known: domains stay unproven, saying so.
    Unavailable,
}

/// The claims, kept in a file.
#[derive(Debug)]
pub struct Domains {
    path: PathBuf,
    check: Check,
    claims: Mutex<BTreeMap<String, Claim>>,
    /// The server's secret the claim tokens are derived from.
    salt: String,
}

/// Why a domain cannot be claimed or is not proven yet.
#[derive(Debug)]
pub enum DomainError {
    /// Another service holds it.
    Taken,
    /// DNS does not show it points here; why.
    Unproven(String),
    /// Reading or writing the claims failed.
    Io(std::io::Error),
}

impl Domains {
    /// Loads `data_dir/domains.json` (none if absent).
    pub fn load(data_dir: &Path, check: Check) -> std::io::Result<Domains> {
        let path = data_dir.join("domains.json");
        let claims = crate::json_file::load_or_default(&path)?;
        let salt_path = data_dir.join("domain-salt");
        let salt = match std::fs::read_to_string(&salt_path) {
            Ok(s) => s.trim().to_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let s = crate::auth::generate();
                crate::auth::write_private(&salt_path, s.as_bytes())?;
                s
            }
            Err(e) => return Err(e),
        };
        Ok(Domains {
            path,
            check,
            claims: Mutex::new(claims),
            salt,
        })
    }

    fn save(&self, claims: &BTreeMap<String, Claim>) -> std::io::Result<()> {
        crate::auth::write_private(&self.path, &serde_json::to_vec_pretty(claims)?)
    }

    /// The token `service` proves `domain` with: the same every time it claims it, so
    /// another service taking over an unproven claim meanwhile does not void the TXT
    /// record it published.
    fn token(&self, domain: &str, service: &str) -> String {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(format!("{}\n{domain}\n{service}", self.salt));
        crate::auth::hex(&digest[..16])
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Claim>> {
        self.claims.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The claim on `domain`, if any.
    pub fn get(&self, domain: &str) -> Option<Claim> {
        self.lock().get(domain).cloned()
    }

    /// Every claim of `service`, by domain.
    pub fn of_service(&self, service: &str) -> Vec<(String, Claim)> {
        self.lock()
            .iter()
            .filter(|(_, c)| c.service == service)
            .map(|(d, c)| (d.clone(), c.clone()))
            .collect()
    }

    /// Claims `domain` (canonical form) for `service`: returns the existing claim if
    /// it is this service's, a new unproven one otherwise. Taken only if another
    /// service holds a *proven* claim: an unproven one is replaced, so nobody can
    /// block a domain they cannot prove.
    pub fn claim(&self, domain: &str, service: &str) -> Result<Claim, DomainError> {
        self.claim_as(domain, service, false)
    }

    /// Records `domain` as proven for `service` without a DNS check: for domains a
    /// service was routed with before claims existed.
    pub fn adopt(&self, domain: &str, service: &str) -> Result<Claim, DomainError> {
        self.claim_as(domain, service, true)
    }

    fn claim_as(&self, domain: &str, service: &str, proven: bool) -> Result<Claim, DomainError> {
        let mut g = self.lock();
        match g.get(domain) {
            Some(c) if c.service == service => return Ok(c.clone()),
            Some(c) if c.verified => return Err(DomainError::Taken),
            _ => {}
        }
        let c = Claim {
            service: service.to_owned(),
            token: self.token(domain, service),
            verified: proven || matches!(self.check, Check::Off) || domain.ends_with(".localhost"),
        };
        g.insert(domain.to_owned(), c.clone());
        self.save(&g).map_err(DomainError::Io)?;
        Ok(c)
    }

    /// Whether another service than `service` holds a proven claim on `domain`.
    pub fn taken(&self, domain: &str, service: &str) -> bool {
        self.get(domain)
            .is_some_and(|c| c.service != service && c.verified)
    }

    /// Whether `domain` is now a CNAME for `generated_host` (a DNS answer, with no
    /// claim involved). `false` when no DNS server is known, or checks are off.
    pub async fn cname_is(&self, domain: &str, generated_host: &str) -> Result<bool, DomainError> {
        let Check::Dns(server) = self.check else {
            return Ok(false);
        };
        Ok(cnames(server, domain, generated_host).await?.1)
    }

    /// Moves `domain`'s claim from service `from` to `to`, proven (DNS showed it points
    /// at `to`), if `from` still holds it.
    pub fn transfer(&self, domain: &str, from: &str, to: &str) -> Result<Claim, DomainError> {
        let mut g = self.lock();
        if g.get(domain).is_none_or(|c| c.service != from) {
            return Err(DomainError::Unproven(format!(
                "{domain}'s claim changed during the check"
            )));
        }
        let c = Claim {
            service: to.to_owned(),
            token: self.token(domain, to),
            verified: true,
        };
        g.insert(domain.to_owned(), c.clone());
        self.save(&g).map_err(DomainError::Io)?;
        Ok(c)
    }

    /// Checks `domain`'s DNS for the proof; marks the claim verified when found.
    pub async fn verify(&self, domain: &str, generated_host: &str) -> Result<Claim, DomainError> {
        let claim = self
            .get(domain)
            .ok_or_else(|| DomainError::Unproven(format!("{domain} is not claimed")))?;
        if claim.verified {
            return Ok(claim);
        }
        let server = match self.check {
            Check::Dns(server) => server,
            Check::Off => return self.mark(domain, &claim),
            Check::Unavailable => {
                return Err(DomainError::Unproven(
                    "no DNS server to check the domain with: the operator must set dns_server"
                        .into(),
                ))
            }
        };
        let (cnames, points_here) = cnames(server, domain, generated_host).await?;
        if points_here {
            return self.mark(domain, &claim);
        }
        let challenge = format!("{CHALLENGE_PREFIX}{domain}");
        let txts = dns::lookup(server, &challenge, RecordType::Txt)
            .await
            .map_err(lookup_failed)?;
        let want = format!("wharf-verify={}", claim.token);
        if txts
            .iter()
            .any(|r| matches!(r, Record::Txt(t) if t.trim() == want))
        {
            return self.mark(domain, &claim);
        }
        let seen = match cnames.first() {
            Some(Record::Cname(t)) => format!("{domain} is a CNAME for {t}"),
            _ => format!("{domain} has no CNAME"),
        };
        Err(DomainError::Unproven(format!(
            "{seen}, and {challenge} has no TXT record {want:?}: point {domain} at \
             {generated_host} with a CNAME, or publish that TXT record, then verify again"
        )))
    }

    /// Marks `checked` proven, if it is still the claim on `domain` (the DNS check
    /// took time: the claim may have been released or replaced meanwhile).
    fn mark(&self, domain: &str, checked: &Claim) -> Result<Claim, DomainError> {
        let mut g = self.lock();
        let c = g
            .get_mut(domain)
            .filter(|c| c.service == checked.service && c.token == checked.token)
            .ok_or_else(|| {
                DomainError::Unproven(format!("{domain}'s claim changed during the check"))
            })?;
        c.verified = true;
        let c = c.clone();
        self.save(&g).map_err(DomainError::Io)?;
        Ok(c)
    }

    /// Drops the claim on `domain` if `service` holds it; returns whether it did.
    pub fn release(&self, domain: &str, service: &str) -> std::io::Result<bool> {
        let mut g = self.lock();
        if g.get(domain).is_some_and(|c| c.service == service) {
            g.remove(domain);
            self.save(&g)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Drops every claim of `service` (it is being deleted).
    pub fn release_service(&self, service: &str) -> std::io::Result<()> {
        let mut g = self.lock();
        let before = g.len();
        g.retain(|_, c| c.service != service);
        if g.len() != before {
            self.save(&g)?;
        }
        Ok(())
    }
}

fn lookup_failed(e: dns::DnsError) -> DomainError {
    DomainError::Unproven(format!("DNS lookup failed: {e}"))
}

/// `domain`'s CNAME records as `server` answers, and whether one names `host`.
async fn cnames(
    server: SocketAddr,
    domain: &str,
    host: &str,
) -> Result<(Vec<Record>, bool), DomainError> {
    let records = dns::lookup(server, domain, RecordType::Cname)
        .await
        .map_err(lookup_failed)?;
    let names_host = records
        .iter()
        .any(|r| matches!(r, Record::Cname(t) if t == host));
    Ok((records, names_host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_domain_is_claimed_once_and_kept_across_loads() {
        let dir = tempfile::tempdir().unwrap();
        let check = Check::Dns("127.0.0.1:9".parse().unwrap());
        let d = Domains::load(dir.path(), check.clone()).unwrap();
        let a = d.claim("shop.example.com", "svc_a").unwrap();
        assert!(!a.verified);
        assert_eq!(d.claim("shop.example.com", "svc_a").unwrap(), a);
        // A proven claim is the service's alone.
        let proven = d.adopt("shop.example.com", "svc_a").unwrap();
        assert_eq!(
            proven, a,
            "adopting an existing claim of the service keeps it"
        );
        d.mark("shop.example.com", &a).unwrap();
        assert!(d.taken("shop.example.com", "svc_b"));
        assert!(!d.taken("shop.example.com", "svc_a"));
        assert!(matches!(
            d.claim("shop.example.com", "svc_b"),
            Err(DomainError::Taken)
        ));
        // An unproven one blocks nobody: another service takes it over.
        let c = d.claim("pending.example.com", "svc_a").unwrap();
        let taken_over = d.claim("pending.example.com", "svc_b").unwrap();
        assert_eq!(taken_over.service, "svc_b");
        assert_ne!(taken_over.token, c.token);
        // ...but cannot void the TXT record the first published: claimed again, its
        // token is the one it had (and the same after a restart).
        let back = d.claim("pending.example.com", "svc_a").unwrap();
        assert_eq!(back.token, c.token);
        let reloaded = Domains::load(dir.path(), check.clone()).unwrap();
        assert_eq!(reloaded.token("pending.example.com", "svc_a"), c.token);
        let taken_over = d.claim("pending.example.com", "svc_b").unwrap();
        // A check that ends after the claim changed hands marks nothing.
        assert!(d.mark("pending.example.com", &c).is_err());
        // Loopback-only names need no proof.
        assert!(d.claim("dev.localhost", "svc_b").unwrap().verified);
        let again = Domains::load(dir.path(), check).unwrap();
        assert!(again.get("shop.example.com").unwrap().verified);
        assert!(!again.release("shop.example.com", "svc_b").unwrap());
        again.release_service("svc_a").unwrap();
        assert_eq!(again.get("shop.example.com"), None);
        assert!(again.get("dev.localhost").is_some());
        assert_eq!(again.get("pending.example.com"), Some(taken_over));
        // A transfer (DNS now names the other service) moves only the claim it saw.
        assert!(again
            .transfer("pending.example.com", "svc_a", "svc_c")
            .is_err());
        let moved = again
            .transfer("pending.example.com", "svc_b", "svc_c")
            .unwrap();
        assert_eq!((moved.service.as_str(), moved.verified), ("svc_c", true));
        assert!(again.taken("pending.example.com", "svc_b"));
    }
}
