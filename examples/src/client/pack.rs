//! Packing a folder for upload: a `.tar.gz` without what `.gitignore` and
//! `.wharfignore` leave out.

use std::path::Path;

use super::CliError;

/// The paths `wharf deploy` leaves out: `.git`, and the patterns of the folder's
/// `.gitignore` and `.wharfignore` (in that order; the last matching pattern wins, `!`
/// re-includes, a trailing `/` matches folders only, a pattern with a `/` before its
/// end is anchored at the folder, `*` and `?` match within one path segment).
#[derive(Debug, Default)]
pub struct Ignore {
    rules: Vec<IgnoreRule>,
}

#[derive(Debug)]
struct IgnoreRule {
    pattern: String,
    negated: bool,
    anchored: bool,
    dir_only: bool,
}

fn glob(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob(&p[1..], s) || (!s.is_empty() && s[0] != b'/' && glob(p, &s[1..])),
        (Some(b'?'), Some(c)) if *c != b'/' => glob(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => glob(&p[1..], &s[1..]),
        _ => false,
    }
}

impl Ignore {
    /// The rules for folder `dir`.
    pub fn load(dir: &Path) -> Ignore {
        let mut text = String::from(".git/\n");
        for f in [".gitignore", ".wharfignore"] {
            text.push_str(&std::fs::read_to_string(dir.join(f)).unwrap_or_default());
            text.push('\n');
        }
        Ignore::parse(&text)
    }

    /// Rules from gitignore-style text.
    pub fn parse(text: &str) -> Ignore {
        let rules = text
            .lines()
            .map(str::trim_end)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| {
                let (negated, l) = match l.strip_prefix('!') {
                    Some(rest) => (true, rest),
                    None => (false, l),
                };
                let (dir_only, l) = match l.strip_suffix('/') {
                    Some(rest) => (true, rest),
                    None => (false, l),
                };
                let anchored = l.contains('/');
                IgnoreRule {
                    pattern: l.trim_start_matches('/').to_owned(),
                    negated,
                    anchored,
                    dir_only,
                }
            })
            .collect();
        Ignore { rules }
    }

    /// Whether `rel` (a path inside the folder) is left out.
    pub fn ignored(&self, rel: &Path, is_dir: bool) -> bool {
        let path = rel.to_string_lossy();
        let name = rel
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        let mut out = false;
        for r in &self.rules {
            if r.dir_only && !is_dir {
                continue;
            }
            let subject = if r.anchored { &path } else { &name };
            if glob(r.pattern.as_bytes(), subject.as_bytes()) {
                out = !r.negated;
            }
        }
        out
    }
}

/// Packs `dir` into a `.tar.gz` in memory, leaving out what [`Ignore`] says.
pub fn pack(dir: &Path) -> Result<Vec<u8>, CliError> {
    let ignore = Ignore::load(dir);
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    add_dir(&mut tar, dir, Path::new(""), &ignore)?;
    Ok(tar.into_inner()?.finish()?)
}

fn add_dir<W: std::io::Write>(
    tar: &mut tar::Builder<W>,
    root: &Path,
    rel: &Path,
    ignore: &Ignore,
) -> Result<(), CliError> {
    let mut entries: Vec<_> = std::fs::read_dir(root.join(rel))?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = rel.join(e.file_name());
        let ft = e.file_type()?;
        if ignore.ignored(&path, ft.is_dir()) {
            continue;
        }
        if ft.is_dir() {
            tar.append_dir(&path, root.join(&path))?;
            add_dir(tar, root, &path, ignore)?;
        } else if ft.is_file() || ft.is_symlink() {
            tar.append_path_with_name(root.join(&path), &path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gitignore_rules_as_git_reads_them() {
        let ig = Ignore::parse(
            ".git/\nnode_modules/\n*.log\n/build\ndocs/*.tmp\n.env*\n!.env.example\n# comment\n",
        );
        let yes = |p: &str, d: bool| ig.ignored(Path::new(p), d);
        assert!(yes("node_modules", true));
        assert!(yes("web/node_modules", true));
        assert!(
            !yes("node_modules", false),
            "a file named like a dir-only rule stays"
        );
        assert!(yes("a.log", false) && yes("deep/x/b.log", false));
        assert!(
            yes("build", true) && !yes("src/build", true),
            "/build is anchored"
        );
        assert!(yes("docs/a.tmp", false) && !yes("docs/sub/a.tmp", false));
        assert!(yes(".env", false) && yes(".env.local", false));
        assert!(!yes(".env.example", false), "! re-includes");
        assert!(!yes("app.py", false));
    }

    #[test]
    fn pack_leaves_out_ignored_paths() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.py"), "print(1)").unwrap();
        std::fs::write(dir.path().join("debug.log"), "x").unwrap();
        std::fs::create_dir_all(dir.path().join("node_modules/m")).unwrap();
        std::fs::write(dir.path().join("node_modules/m/i.js"), "x").unwrap();
        std::fs::write(dir.path().join(".gitignore"), "*.log\nnode_modules/\n").unwrap();
        std::fs::write(dir.path().join(".wharfignore"), "secret.txt\n").unwrap();
        std::fs::write(dir.path().join("secret.txt"), "x").unwrap();
        let bytes = pack(dir.path()).unwrap();
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
        let names: Vec<String> = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, [".gitignore", ".wharfignore", "app.py"]);
    }
}
