//! Packing a folder for upload: a `.tar.gz` without what `.gitignore` files and
//! `.wharfignore` leave out.

use std::path::Path;

use super::CliError;

/// Walks `dir` as `wharf deploy` packs it: without `.git`, and without what the
/// folder's `.gitignore` files (at every level, with git's own rules: `**`, `!`,
/// anchoring, folders only) and `.wharfignore` files leave out. Neither the user's
/// global git excludes nor ignore files above `dir` apply. Symlinks are not followed.
fn walk(dir: &Path) -> ignore::Walk {
    ignore::WalkBuilder::new(dir)
        .hidden(false)
        .parents(false)
        .ignore(false)
        .git_global(false)
        .git_exclude(false)
        .require_git(false)
        .add_custom_ignore_filename(".wharfignore")
        .follow_links(false)
        .sort_by_file_name(|a, b| a.cmp(b))
        .filter_entry(|e| e.file_name() != ".git")
        .build()
}

/// Packs `dir` into a `.tar.gz` in memory, leaving out what is ignored.
pub fn pack(dir: &Path) -> Result<Vec<u8>, CliError> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    for entry in walk(dir) {
        let entry = entry.map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        let Ok(rel) = entry.path().strip_prefix(dir) else {
            continue;
        };
        if rel.as_os_str().is_empty() {
            continue;
        }
        let Some(ft) = entry.file_type() else {
            continue;
        };
        if ft.is_dir() {
            tar.append_dir(rel, entry.path())?;
        } else if ft.is_file() || ft.is_symlink() {
            tar.append_path_with_name(entry.path(), rel)?;
        }
    }
    Ok(tar.into_inner()?.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The paths [`pack`] puts in the archive, in order.
    fn packed(dir: &Path) -> Vec<String> {
        let bytes = pack(dir).unwrap();
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
        ar.entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    fn write(dir: &Path, rel: &str, text: &str) {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn gitignore_rules_as_git_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(
            d,
            ".gitignore",
            "node_modules/\n*.log\n/build\ndocs/*.tmp\n.env*\n!.env.example\n# comment\n",
        );
        for f in [
            "node_modules/m/i.js",
            "web/node_modules/x.js",
            "a.log",
            "deep/x/b.log",
            "build/out",
            "src/build/keep",
            "docs/a.tmp",
            "docs/sub/a.tmp",
            ".env",
            ".env.local",
            ".env.example",
            "app.py",
            ".git/HEAD",
        ] {
            write(d, f, "x");
        }
        std::fs::create_dir_all(d.join("lib/node_modules")).unwrap();
        std::fs::remove_dir_all(d.join("lib/node_modules")).unwrap();
        write(
            d,
            "lib/node_modules",
            "a file named like a dir-only rule stays",
        );
        let names = packed(d);
        for kept in [
            ".env.example",
            ".gitignore",
            "app.py",
            "docs/sub/a.tmp",
            "lib/node_modules",
            "src/build/keep",
        ] {
            assert!(
                names.iter().any(|n| n == kept),
                "{kept} left out: {names:?}"
            );
        }
        for left in [
            ".git/HEAD",
            ".env",
            ".env.local",
            "a.log",
            "deep/x/b.log",
            "build/out",
            "docs/a.tmp",
            "node_modules/m/i.js",
            "web/node_modules/x.js",
        ] {
            assert!(!names.iter().any(|n| n == left), "{left} packed: {names:?}");
        }
    }

    /// What users believe is excluded is: `**/.env` at any depth, and the rules of a
    /// `.gitignore` deeper in the tree.
    #[test]
    fn deep_patterns_and_nested_gitignores_are_honoured() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(d, ".wharfignore", "**/.env\n");
        write(d, "a/.env", "SECRET=1");
        write(d, "a/b/c/.env", "SECRET=2");
        write(d, "svc/.gitignore", "credentials.json\n");
        write(d, "svc/credentials.json", "{}");
        write(d, "svc/main.py", "print(1)");
        write(d, "other/credentials.json", "{}");
        let names = packed(d);
        assert_eq!(
            names,
            [
                ".wharfignore",
                "a",
                "a/b",
                "a/b/c",
                "other",
                "other/credentials.json",
                "svc",
                "svc/.gitignore",
                "svc/main.py"
            ]
        );
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
        assert_eq!(packed(dir.path()), [".gitignore", ".wharfignore", "app.py"]);
    }
}
