//! `wharf_core::fetch::unpack_tar_gz` on hostile archives.
//!
//! Input: a gzip stream (starts with `1f 8b`) is unpacked as is; anything else is
//! taken as a tar stream and gzip-compressed first, so the fuzzer mutates tar headers
//! rather than deflate bits. Each input gets a fresh temp dir holding `dest/` (the
//! destination) and `outside/secret` (a sentinel). Checked after every unpack:
//! - nothing but `dest/` and `outside/secret` (unchanged) exists in the temp dir;
//! - `dest` is still a real directory;
//! - on failure `dest` is empty (the function's documented contract);
//! - on success, inside `dest`: every symlink stays inside (resolved, or lexically when
//!   dangling), no regular file is a hard link to anything outside `dest`, file modes
//!   are 0644 or 0755, and no special files exist.
#![no_main]

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use flate2::{write::GzEncoder, Compression};
use libfuzzer_sys::fuzz_target;
use wharf_core::fetch::{unpack_tar_gz, ArchiveLimits};

const SECRET: &[u8] = b"not for archives\n";

fuzz_target!(|data: &[u8]| {
    let gz = if data.starts_with(&[0x1f, 0x8b]) {
        data.to_vec()
    } else {
        let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    };
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let dest = root.join("dest");
    let outside = root.join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("secret"), SECRET).unwrap();
    // Small limits keep each run fast; the limit checks themselves are fuzzed too.
    let limits = ArchiveLimits::default()
        .with_max_archive_bytes(1 << 20)
        .with_max_entries(256)
        .with_max_unpacked_bytes(8 << 20);
    let result = unpack_tar_gz(&gz[..], &dest, &limits);

    check_parent(&root);
    let meta = fs::symlink_metadata(&dest).expect("dest is gone");
    assert!(meta.is_dir(), "dest is no longer a directory");
    match result {
        Err(_) => assert_eq!(
            fs::read_dir(&dest).unwrap().count(),
            0,
            "a failed unpack left entries in dest"
        ),
        Ok(stats) => {
            check_dest(&dest);
            assert!(stats.files <= stats.entries);
        }
    }
});

/// The temp dir holds `dest/` and the untouched `outside/secret`, nothing else.
fn check_parent(root: &Path) {
    let mut names: Vec<_> = fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["dest", "outside"], "something landed beside dest");
    let outside: Vec<_> = fs::read_dir(root.join("outside"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(outside, ["secret"], "something landed in outside/");
    let meta = fs::symlink_metadata(root.join("outside/secret")).unwrap();
    assert!(
        meta.is_file() && meta.nlink() == 1,
        "outside/secret was linked"
    );
    assert_eq!(fs::read(root.join("outside/secret")).unwrap(), SECRET);
}

/// Walks `dest`: links stay inside, hard links only between files inside, sane modes.
fn check_dest(dest: &Path) {
    let mut inodes: HashMap<(u64, u64), u64> = HashMap::new();
    let mut files = Vec::new();
    let mut stack = vec![dest.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let ft = meta.file_type();
            if ft.is_symlink() {
                check_link(dest, &path);
            } else if ft.is_dir() {
                stack.push(path);
            } else if ft.is_file() {
                let mode = meta.mode() & 0o7777;
                assert!(
                    mode == 0o644 || mode == 0o755,
                    "{} has mode {mode:o}",
                    path.display()
                );
                *inodes.entry((meta.dev(), meta.ino())).or_default() += 1;
                files.push((path, meta));
            } else {
                assert!(
                    !(ft.is_block_device()
                        || ft.is_char_device()
                        || ft.is_fifo()
                        || ft.is_socket()),
                    "special file {}",
                    path.display()
                );
            }
        }
    }
    // Every link to a file is one we saw inside dest: no hard link reaches outside.
    for (path, meta) in files {
        assert_eq!(
            meta.nlink(),
            inodes[&(meta.dev(), meta.ino())],
            "{} is hard-linked to a file outside dest",
            path.display()
        );
    }
}

/// A symlink in `dest` points inside `dest`: resolved when it resolves, else lexically.
fn check_link(dest: &Path, link: &Path) {
    match fs::canonicalize(link) {
        Ok(real) => assert!(
            real.starts_with(dest),
            "{} resolves to {} outside dest",
            link.display(),
            real.display()
        ),
        Err(_) => {
            let target = fs::read_link(link).unwrap();
            let joined = link.parent().unwrap().join(&target);
            let mut out = PathBuf::new();
            for c in joined.components() {
                match c {
                    Component::ParentDir => {
                        out.pop();
                    }
                    Component::CurDir => {}
                    other => out.push(other),
                }
            }
            assert!(
                out.starts_with(dest),
                "{} -> {} leaves dest",
                link.display(),
                target.display()
            );
        }
    }
}
