//! API tokens: stored as SHA-256 hashes in `data_dir/tokens.json`, compared in constant
//! time, each with the operator flag or a role per project.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

pub use crate::json_file::write_private;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a token may do in one project. Ordered: each role can do what the ones before
/// it can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read everything in the project.
    Viewer,
    /// Also deploy, cancel, roll back and set env vars.
    Developer,
    /// Also create, change and delete services, and delete the project.
    Owner,
}

impl Role {
    /// Every role, weakest first.
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Developer, Role::Owner];

    /// Its name on the wire and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Developer => "developer",
            Role::Owner => "owner",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?}: expected viewer, developer or owner"))
    }
}

/// One token as stored: never the token itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenRecord {
    /// A name for humans.
    pub name: String,
    /// Hex SHA-256 of the token.
    pub sha256: String,
    /// The operator: everything, everywhere.
    #[serde(default)]
    pub admin: bool,
    /// Roles by project name.
    #[serde(default)]
    pub projects: BTreeMap<String, Role>,
    /// When it was made (Unix milliseconds; absent for tokens made before this was
    /// recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<u64>,
    /// When it stops working (Unix milliseconds), if ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// When it was last presented (Unix milliseconds, recorded at most once a minute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<u64>,
}

impl TokenRecord {
    /// Its id: the first 12 hex digits of its hash, shown by `wharf token ls` and
    /// taken by `wharf token revoke`.
    pub fn id(&self) -> &str {
        self.sha256.get(..12).unwrap_or(&self.sha256)
    }
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Who a request is.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The token's name.
    pub name: String,
    admin: bool,
    projects: BTreeMap<String, Role>,
}

impl Principal {
    /// Whether this is the operator.
    pub fn is_admin(&self) -> bool {
        self.admin
    }
    /// The role held in `project`, if any (the operator is owner everywhere).
    pub fn role(&self, project: &str) -> Option<Role> {
        if self.admin {
            Some(Role::Owner)
        } else {
            self.projects.get(project).copied()
        }
    }
}

/// The token file, read again whenever another process (`wharf token`) changed it, so
/// tokens made, revoked or rotated on the server's machine take effect at the next
/// request, without a restart.
#[derive(Debug)]
pub struct Tokens {
    path: PathBuf,
    state: RwLock<TokenState>,
}

/// The records and the file version they were read from.
#[derive(Debug, Default)]
struct TokenState {
    records: Vec<TokenRecord>,
    stamp: Option<(std::time::SystemTime, u64)>,
}

/// How often a token's last use is written to the file.
const LAST_USED_EVERY_MS: u64 = 60_000;

fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Lower-case hex of `b`.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The bytes of hex text, if it is hex.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Compares without an early exit, so the time taken says nothing about where two
/// values differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// A new random token (256 bits, hex).
pub fn generate() -> String {
    format!(
        "wharf_{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

impl Tokens {
    /// Loads `data_dir/tokens.json` (empty if absent).
    pub fn load(data_dir: &Path) -> std::io::Result<Tokens> {
        let path = data_dir.join("tokens.json");
        let state = read_file(&path)?;
        Ok(Tokens {
            path,
            state: RwLock::new(state),
        })
    }

    /// Reads the file again if it changed since it was last read or written here.
    fn refresh(&self) {
        let stamp = file_stamp(&self.path);
        let stale = self.state.read().unwrap_or_else(|p| p.into_inner()).stamp != stamp;
        if stale {
            match read_file(&self.path) {
                Ok(fresh) => *self.state.write().unwrap_or_else(|p| p.into_inner()) = fresh,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read tokens.json; keeping the tokens read before")
                }
            }
        }
    }

    /// Changes the records as they are in the file now, and saves them, holding an
    /// exclusive lock on `tokens.lock` meanwhile: the server and `wharf token` never
    /// undo each other's changes (a revoke undone by a last-use write, say).
    fn update<R>(&self, f: impl FnOnce(&mut Vec<TokenRecord>) -> R) -> std::io::Result<R> {
        let mut g = self.state.write().unwrap_or_else(|p| p.into_inner());
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.path.with_extension("lock"))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)?;
        let mut fresh = read_file(&self.path)?;
        let out = f(&mut fresh.records);
        write_private(&self.path, &serde_json::to_vec_pretty(&fresh.records)?)?;
        fresh.stamp = file_stamp(&self.path);
        *g = fresh;
        Ok(out)
    }

    /// Adds a token; returns the token itself, which is not stored and is shown once.
    pub fn create(
        &self,
        name: &str,
        admin: bool,
        projects: BTreeMap<String, Role>,
    ) -> std::io::Result<String> {
        self.create_expiring(name, admin, projects, None)
    }

    /// [`Tokens::create`], with a time (Unix milliseconds) after which it is refused.
    pub fn create_expiring(
        &self,
        name: &str,
        admin: bool,
        projects: BTreeMap<String, Role>,
        expires_at: Option<u64>,
    ) -> std::io::Result<String> {
        let token = generate();
        self.update(|records| {
            records.push(record(name, &token, admin, projects, expires_at));
        })?;
        Ok(token)
    }

    /// Adds a given token (the configured operator token, say) unless already present.
    pub fn add(
        &self,
        name: &str,
        token: &str,
        admin: bool,
        projects: BTreeMap<String, Role>,
    ) -> std::io::Result<()> {
        let h = hex(&hash(token));
        self.update(|records| {
            if !records.iter().any(|r| r.sha256 == h) {
                records.push(record(name, token, admin, projects, None));
            }
        })
    }

    /// Takes every role held in project `name` from every token (the project was
    /// deleted: a new project of that name must not inherit them); how many tokens
    /// lost one.
    pub fn forget_project(&self, name: &str) -> std::io::Result<usize> {
        self.update(|records| {
            records
                .iter_mut()
                .filter_map(|r| r.projects.remove(name))
                .count()
        })
    }

    /// Makes `token` the operator token: every other operator token stops working.
    pub fn set_operator(&self, token: &str) -> std::io::Result<()> {
        let h = hex(&hash(token));
        self.update(|records| {
            records.retain(|r| !r.admin || r.sha256 == h);
            if !records.iter().any(|r| r.sha256 == h) {
                records.push(record("operator", token, true, BTreeMap::new(), None));
            }
        })
    }

    /// The tokens, as the file has them now.
    pub fn list(&self) -> Vec<TokenRecord> {
        self.refresh();
        let g = self.state.read().unwrap_or_else(|p| p.into_inner());
        g.records.clone()
    }

    /// Removes the tokens whose id or name is `key` (operator tokens are rotated, not
    /// revoked); how many went.
    pub fn revoke(&self, key: &str) -> std::io::Result<usize> {
        self.update(|records| {
            let before = records.len();
            records.retain(|r| r.admin || (r.id() != key && r.name != key));
            before - records.len()
        })
    }

    /// Who presents `token`, if anyone. Every stored hash is compared, in constant
    /// time; an expired token is refused.
    pub fn authenticate(&self, token: &str) -> Option<Principal> {
        self.refresh();
        let h = hash(token);
        let now = now_ms();
        let (principal, persist) = {
            let mut g = self.state.write().unwrap_or_else(|p| p.into_inner());
            let mut found = None;
            for r in g.records.iter_mut() {
                let stored = unhex(&r.sha256)
                    .and_then(|v| <[u8; 32]>::try_from(v).ok())
                    .unwrap_or([0; 32]);
                if constant_time_eq(&stored, &h) && found.is_none() {
                    found = Some(r);
                }
            }
            let r = found?;
            if r.expires_at.is_some_and(|e| e <= now) {
                return None;
            }
            let persist = r
                .last_used
                .is_none_or(|t| now.saturating_sub(t) >= LAST_USED_EVERY_MS);
            r.last_used = Some(now);
            let p = Principal {
                name: r.name.clone(),
                admin: r.admin,
                projects: r.projects.clone(),
            };
            (p, persist.then(|| r.sha256.clone()))
        };
        if let Some(sha) = persist {
            let saved = self.update(|records| {
                for r in records.iter_mut().filter(|r| r.sha256 == sha) {
                    r.last_used = Some(now);
                }
            });
            if let Err(e) = saved {
                tracing::warn!(error = %e, "cannot record a token's last use");
            }
        }
        Some(principal)
    }
}

fn record(
    name: &str,
    token: &str,
    admin: bool,
    projects: BTreeMap<String, Role>,
    expires_at: Option<u64>,
) -> TokenRecord {
    TokenRecord {
        name: name.to_owned(),
        sha256: hex(&hash(token)),
        admin,
        projects,
        created_at: Some(now_ms()),
        expires_at,
        last_used: None,
    }
}

/// The file's modification time and length, to notice another process's change.
fn file_stamp(path: &Path) -> Option<(std::time::SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

fn read_file(path: &Path) -> std::io::Result<TokenState> {
    let stamp = file_stamp(path);
    let records = crate::json_file::load_or_default(path)?;
    Ok(TokenState { records, stamp })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_stored_hashed_and_authenticate() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tokens::load(dir.path()).unwrap();
        let tok = t
            .create(
                "ci",
                false,
                BTreeMap::from([("shop".to_string(), Role::Developer)]),
            )
            .unwrap();
        let file = std::fs::read_to_string(dir.path().join("tokens.json")).unwrap();
        assert!(!file.contains(&tok), "the token itself was stored");
        let again = Tokens::load(dir.path()).unwrap();
        let p = again.authenticate(&tok).expect("token accepted");
        assert_eq!(p.role("shop"), Some(Role::Developer));
        assert_eq!(p.role("other"), None);
        assert!(again.authenticate("wharf_wrong").is_none());
    }

    #[test]
    fn tokens_made_or_revoked_elsewhere_take_effect_without_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let server = Tokens::load(dir.path()).unwrap();
        // `wharf token` runs in another process: another Tokens on the same file.
        let cli = Tokens::load(dir.path()).unwrap();
        let roles = BTreeMap::from([("shop".to_string(), Role::Viewer)]);
        let tok = cli.create("ci", false, roles).unwrap();
        assert!(
            server.authenticate(&tok).is_some(),
            "a new token was not seen"
        );
        let id = cli.list()[0].id().to_owned();
        assert_eq!(cli.revoke(&id).unwrap(), 1);
        assert!(
            server.authenticate(&tok).is_none(),
            "a revoked token still works"
        );
        assert_eq!(cli.revoke("ci").unwrap(), 0);
    }

    #[test]
    fn expired_tokens_are_refused_and_last_use_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tokens::load(dir.path()).unwrap();
        let past = now_ms() - 1;
        let old = t
            .create_expiring("old", false, BTreeMap::new(), Some(past))
            .unwrap();
        assert!(t.authenticate(&old).is_none());
        let later = now_ms() + 60_000;
        let fresh = t
            .create_expiring("new", false, BTreeMap::new(), Some(later))
            .unwrap();
        assert!(t.authenticate(&fresh).is_some());
        let listed = Tokens::load(dir.path()).unwrap().list();
        let rec = listed.iter().find(|r| r.name == "new").unwrap();
        assert!(rec.last_used.is_some_and(|u| u <= now_ms()), "{rec:?}");
        assert!(listed
            .iter()
            .find(|r| r.name == "old")
            .unwrap()
            .last_used
            .is_none());
    }

    #[test]
    fn rotating_the_operator_token_revokes_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tokens::load(dir.path()).unwrap();
        t.set_operator("wharf_first_operator_token").unwrap();
        assert!(t
            .authenticate("wharf_first_operator_token")
            .unwrap()
            .is_admin());
        let other = Tokens::load(dir.path()).unwrap();
        other.set_operator("wharf_second_operator_token").unwrap();
        assert!(t.authenticate("wharf_first_operator_token").is_none());
        assert!(t
            .authenticate("wharf_second_operator_token")
            .unwrap()
            .is_admin());
        // An operator token is rotated, never revoked away.
        assert_eq!(t.revoke("operator").unwrap(), 0);
    }

    /// The server and `wharf token` write the same file: neither loses the other's
    /// changes (before, both read, changed and wrote it back unlocked).
    #[test]
    fn two_processes_writing_tokens_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let writers: Vec<_> = (0..2)
            .map(|w| {
                let path = dir.path().to_owned();
                std::thread::spawn(move || {
                    let t = Tokens::load(&path).unwrap();
                    for i in 0..40 {
                        t.create(&format!("w{w}-{i}"), false, BTreeMap::new())
                            .unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        assert_eq!(Tokens::load(dir.path()).unwrap().list().len(), 80);
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
