//! API tokens: stored as SHA-256 hashes in `data_dir/tokens.json`, compared in constant
//! time, each with the operator flag or a role per project.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

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

/// The token file.
#[derive(Debug)]
pub struct Tokens {
    path: PathBuf,
    records: RwLock<Vec<TokenRecord>>,
}

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
        let records = crate::json_file::load_or_default(&path)?;
        Ok(Tokens {
            path,
            records: RwLock::new(records),
        })
    }

    fn save(&self, records: &[TokenRecord]) -> std::io::Result<()> {
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(records)?)?;
        restrict(&tmp)?;
        std::fs::rename(&tmp, &self.path)
    }

    /// Adds a token; returns the token itself, which is not stored and is shown once.
    pub fn create(
        &self,
        name: &str,
        admin: bool,
        projects: BTreeMap<String, Role>,
    ) -> std::io::Result<String> {
        let token = generate();
        self.add(name, &token, admin, projects)?;
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
        let mut g = self.records.write().unwrap_or_else(|p| p.into_inner());
        let h = hex(&hash(token));
        if g.iter().any(|r| r.sha256 == h) {
            return Ok(());
        }
        g.push(TokenRecord {
            name: name.to_owned(),
            sha256: h,
            admin,
            projects,
        });
        self.save(&g)
    }

    /// Who presents `token`, if anyone. Every stored hash is compared, in constant time.
    pub fn authenticate(&self, token: &str) -> Option<Principal> {
        let h = hash(token);
        let g = self.records.read().unwrap_or_else(|p| p.into_inner());
        let mut found = None;
        for r in g.iter() {
            let stored = unhex(&r.sha256)
                .and_then(|v| <[u8; 32]>::try_from(v).ok())
                .unwrap_or([0; 32]);
            if constant_time_eq(&stored, &h) && found.is_none() {
                found = Some(Principal {
                    name: r.name.clone(),
                    admin: r.admin,
                    projects: r.projects.clone(),
                });
            }
        }
        found
    }
}

/// Makes a file readable by its owner only.
pub fn restrict(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
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
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
