//! Tests of the source fetchers: folders, `.tar.gz` archives (including hostile ones)
//! and git repositories (a local bare repository built with the `git` program).

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;
use sha2::{Digest, Sha256};
use tar::{EntryType, Header};
use tempfile::TempDir;
use tokio::sync::mpsc;
use wharf_core::fetch::{
    unpack_tar_gz, ArchiveFetcher, ArchiveLimits, DirFetcher, Fetchers, GitFetcher,
};
use wharf_core::{Error, ErrorKind, GitRef, LogSink, SourceFetcher, SourceSpec};
use wharf_testkit::{git, git_present, StaticServer};

// ---------------------------------------------------------------------------
// helpers

fn write(path: &Path, content: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap()
}

fn assert_empty(dir: &Path) {
    let left: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "{} is not empty: {left:?}", dir.display());
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Asserts `err` is InvalidInput and its message mentions `needle`.
fn assert_invalid(err: &Error, needle: &str) {
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(
        err.message().contains(needle),
        "message {:?} should mention {needle:?}",
        err.message()
    );
}

/// A tar.gz built by `build`.
fn tar_gz(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    build(&mut builder);
    let tar = builder.into_inner().unwrap();
    gzip(&tar)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, content: &[u8], mode: u32) {
    let mut h = Header::new_gnu();
    h.set_entry_type(EntryType::Regular);
    h.set_size(content.len() as u64);
    h.set_mode(mode);
    b.append_data(&mut h, path, content).unwrap();
}

fn dir(b: &mut tar::Builder<Vec<u8>>, path: &str) {
    let mut h = Header::new_gnu();
    h.set_entry_type(EntryType::Directory);
    h.set_size(0);
    h.set_mode(0o755);
    b.append_data(&mut h, path, &[][..]).unwrap();
}

fn link(b: &mut tar::Builder<Vec<u8>>, kind: EntryType, path: &str, target: &str) {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(0);
    h.set_mode(0o777);
    b.append_link(&mut h, path, target).unwrap();
}

/// An entry whose name is written into the header bytes directly, bypassing the tar
/// crate's own checks (which refuse `..` and absolute paths).
fn raw(
    b: &mut tar::Builder<Vec<u8>>,
    kind: EntryType,
    name: &str,
    target: Option<&str>,
    content: &[u8],
) {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    if let Some(target) = target {
        h.set_link_name(target).unwrap();
    }
    let slot = &mut h.as_gnu_mut().unwrap().name;
    slot.fill(0);
    slot[..name.len()].copy_from_slice(name.as_bytes());
    h.set_cksum();
    b.append(&h, content).unwrap();
}

fn special(b: &mut tar::Builder<Vec<u8>>, kind: EntryType, path: &str) {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(0);
    h.set_mode(0o644);
    b.append_data(&mut h, path, &[][..]).unwrap();
}

/// Unpacks `archive` into a fresh folder; returns the folder and the result.
fn unpack(
    archive: &[u8],
    limits: &ArchiveLimits,
) -> (TempDir, wharf_core::Result<wharf_core::fetch::UnpackStats>) {
    let tmp = TempDir::new().unwrap();
    let dest = tmp.path().join("out");
    let result = unpack_tar_gz(archive, &dest, limits);
    (tmp, result)
}

/// Unpacking `archive` fails with InvalidInput mentioning `needle`, leaving the
/// destination empty.
fn assert_refused(archive: &[u8], limits: &ArchiveLimits, needle: &str) -> Error {
    let (tmp, result) = unpack(archive, limits);
    let err = result.expect_err("the archive should be refused");
    assert_invalid(&err, needle);
    assert_empty(&tmp.path().join("out"));
    // Nothing escaped next to the destination either.
    let siblings: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(siblings, vec!["out"], "something was written outside dest");
    err
}

// ---------------------------------------------------------------------------
// folders

fn sample_dir(root: &Path) {
    write(&root.join("README.md"), "hello\n");
    write(&root.join("src/main.rs"), "fn main() {}\n");
    write(&root.join("src/deep/nested/file.txt"), "deep\n");
    write(&root.join("run.sh"), "#!/bin/sh\necho hi\n");
    fs::set_permissions(root.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    write(&root.join(".git/config"), "[core]\n");
    std::os::unix::fs::symlink("src/main.rs", root.join("main-link")).unwrap();
}

async fn fetch_dir(src: &Path) -> (TempDir, wharf_core::Result<wharf_core::Fetched>) {
    let out = TempDir::new().unwrap();
    let spec = SourceSpec::Dir {
        path: src.to_path_buf(),
    };
    let result = DirFetcher::new()
        .fetch(&spec, &out.path().join("src"), &LogSink::discard())
        .await;
    (out, result)
}

#[tokio::test]
async fn dir_copies_nested_files_skipping_git() {
    let src = TempDir::new().unwrap();
    sample_dir(src.path());
    let (out, result) = fetch_dir(src.path()).await;
    let fetched = result.unwrap();
    let dest = out.path().join("src");
    assert_eq!(fetched.dir, dest);
    assert_eq!(read(&dest.join("README.md")), "hello\n");
    assert_eq!(read(&dest.join("src/deep/nested/file.txt")), "deep\n");
    assert!(!dest.join(".git").exists(), ".git must be skipped");
    let mode = fs::metadata(dest.join("run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    let mode = fs::metadata(dest.join("README.md"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0);
    assert_eq!(
        fs::read_link(dest.join("main-link")).unwrap(),
        PathBuf::from("src/main.rs")
    );
    assert!(fetched.revision.starts_with("sha256:"));
    assert_eq!(fetched.revision.len(), "sha256:".len() + 64);
}

#[tokio::test]
async fn dir_revision_is_stable_and_tracks_changes() {
    let src = TempDir::new().unwrap();
    sample_dir(src.path());
    let first = fetch_dir(src.path()).await.1.unwrap().revision;
    let again = fetch_dir(src.path()).await.1.unwrap().revision;
    assert_eq!(first, again, "same content, same revision");

    // .git is not part of the revision.
    write(&src.path().join(".git/HEAD"), "ref: refs/heads/main\n");
    assert_eq!(fetch_dir(src.path()).await.1.unwrap().revision, first);

    write(&src.path().join("src/deep/nested/file.txt"), "changed\n");
    let changed = fetch_dir(src.path()).await.1.unwrap().revision;
    assert_ne!(changed, first, "content change, new revision");

    fs::rename(src.path().join("README.md"), src.path().join("README.txt")).unwrap();
    let renamed = fetch_dir(src.path()).await.1.unwrap().revision;
    assert_ne!(renamed, changed, "rename, new revision");

    fs::set_permissions(src.path().join("run.sh"), fs::Permissions::from_mode(0o644)).unwrap();
    let mode_changed = fetch_dir(src.path()).await.1.unwrap().revision;
    assert_ne!(mode_changed, renamed, "executable bit change, new revision");
}

#[tokio::test]
async fn dir_refuses_escaping_symlink() {
    let outside = TempDir::new().unwrap();
    write(&outside.path().join("secret"), "s3cret");
    let src = TempDir::new().unwrap();
    write(&src.path().join("app/index.js"), "ok");
    std::os::unix::fs::symlink(outside.path().join("secret"), src.path().join("app/leak")).unwrap();
    let (out, result) = fetch_dir(src.path()).await;
    let err = result.unwrap_err();
    assert_invalid(&err, "app/leak");
    assert!(err.message().contains("outside"), "{err}");
    assert_empty(&out.path().join("src"));

    // A dangling relative symlink leaving the folder is refused too.
    let src = TempDir::new().unwrap();
    std::os::unix::fs::symlink("../../nowhere", src.path().join("dangling")).unwrap();
    let err = fetch_dir(src.path()).await.1.unwrap_err();
    assert_invalid(&err, "dangling");
}

#[tokio::test]
async fn dir_rewrites_absolute_symlink_inside_as_relative() {
    let src = TempDir::new().unwrap();
    write(&src.path().join("data/a.txt"), "a");
    fs::create_dir_all(src.path().join("sub")).unwrap();
    std::os::unix::fs::symlink(src.path().join("data/a.txt"), src.path().join("sub/a")).unwrap();
    let (out, result) = fetch_dir(src.path()).await;
    result.unwrap();
    let dest = out.path().join("src");
    assert_eq!(
        fs::read_link(dest.join("sub/a")).unwrap(),
        PathBuf::from("../data/a.txt")
    );
    assert_eq!(read(&dest.join("sub/a")), "a");
}

#[tokio::test]
async fn dir_missing_source_is_not_found_and_dest_must_be_empty() {
    let tmp = TempDir::new().unwrap();
    let err = fetch_dir(&tmp.path().join("nope")).await.1.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");

    let src = TempDir::new().unwrap();
    write(&src.path().join("a"), "a");
    let dest = TempDir::new().unwrap();
    write(&dest.path().join("already"), "x");
    let spec = SourceSpec::Dir {
        path: src.path().to_path_buf(),
    };
    let err = DirFetcher::new()
        .fetch(&spec, dest.path(), &LogSink::discard())
        .await
        .unwrap_err();
    assert_invalid(&err, "not empty");
}

// ---------------------------------------------------------------------------
// archives

fn sample_archive() -> Vec<u8> {
    tar_gz(|b| {
        dir(b, "app/");
        file(b, "app/README.md", b"hello\n", 0o644);
        file(b, "app/bin/run.sh", b"#!/bin/sh\n", 0o755);
        file(b, "app/src/deep/x.txt", b"deep\n", 0o600);
        link(b, EntryType::Symlink, "app/readme-link", "README.md");
        link(b, EntryType::Symlink, "app/src/up", "../README.md");
        link(b, EntryType::Link, "app/hard", "app/README.md");
        file(b, "./dot/ok.txt", b"dot\n", 0o644);
    })
}

#[tokio::test]
async fn archive_round_trip() {
    let archive = sample_archive();
    let (tmp, result) = unpack(&archive, &ArchiveLimits::default());
    let stats = result.unwrap();
    let dest = tmp.path().join("out");
    assert_eq!(read(&dest.join("app/README.md")), "hello\n");
    assert_eq!(read(&dest.join("app/src/deep/x.txt")), "deep\n");
    assert_eq!(read(&dest.join("app/readme-link")), "hello\n");
    assert_eq!(read(&dest.join("app/src/up")), "hello\n");
    assert_eq!(read(&dest.join("app/hard")), "hello\n");
    assert_eq!(read(&dest.join("dot/ok.txt")), "dot\n");
    let mode = |p: &str| fs::metadata(dest.join(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("app/bin/run.sh"), 0o755);
    assert_eq!(mode("app/README.md"), 0o644);
    assert!(fs::symlink_metadata(dest.join("app/readme-link"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(stats.files, 4);
    assert_eq!(stats.entries, 8);
    assert_eq!(stats.archive_bytes, archive.len() as u64);
    assert_eq!(stats.digest, format!("sha256:{}", sha256_hex(&archive)));
}

#[tokio::test]
async fn archive_fetcher_unpacks_file_with_digest_revision() {
    let archive = sample_archive();
    let tmp = TempDir::new().unwrap();
    let path = tmp.path().join("upload.tar.gz");
    fs::write(&path, &archive).unwrap();
    let dest = tmp.path().join("dest");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let fetched = ArchiveFetcher::default()
        .fetch(
            &SourceSpec::Archive { path: path.clone() },
            &dest,
            &LogSink::new(tx),
        )
        .await
        .unwrap();
    assert_eq!(fetched.dir, dest);
    assert_eq!(fetched.revision, format!("sha256:{}", sha256_hex(&archive)));
    assert_eq!(read(&dest.join("app/README.md")), "hello\n");
    assert!(rx.try_recv().is_ok(), "progress is logged");

    // Missing archive.
    let err = ArchiveFetcher::default()
        .fetch(
            &SourceSpec::Archive {
                path: tmp.path().join("missing.tar.gz"),
            },
            &tmp.path().join("dest2"),
            &LogSink::discard(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");

    // Too big on disk (checked before reading).
    let small = ArchiveFetcher::new(ArchiveLimits::default().with_max_archive_bytes(10));
    let err = small
        .fetch(
            &SourceSpec::Archive { path },
            &tmp.path().join("dest3"),
            &LogSink::discard(),
        )
        .await
        .unwrap_err();
    assert_invalid(&err, "max_archive_bytes");
}

#[test]
fn archive_refuses_parent_dir_path() {
    let archive = tar_gz(|b| {
        file(b, "ok.txt", b"ok", 0o644);
        raw(b, EntryType::Regular, "../evil", None, b"evil");
    });
    assert_refused(&archive, &ArchiveLimits::default(), "../evil");
    let archive = tar_gz(|b| raw(b, EntryType::Regular, "a/../../evil", None, b"evil"));
    assert_refused(&archive, &ArchiveLimits::default(), "a/../../evil");
}

#[test]
fn archive_refuses_absolute_path() {
    let archive = tar_gz(|b| {
        file(b, "ok.txt", b"ok", 0o644);
        raw(
            b,
            EntryType::Regular,
            "/etc/passwd",
            None,
            b"root::0:0::/:/bin/sh\n",
        );
    });
    let err = assert_refused(&archive, &ArchiveLimits::default(), "/etc/passwd");
    assert!(err.message().contains("absolute"), "{err}");
}

#[test]
fn archive_refuses_escaping_symlink() {
    let archive = tar_gz(|b| {
        dir(b, "a/");
        link(b, EntryType::Symlink, "a/x", "../../x");
    });
    let err = assert_refused(&archive, &ArchiveLimits::default(), "a/x");
    assert!(err.message().contains("../../x"), "{err}");

    let archive = tar_gz(|b| link(b, EntryType::Symlink, "tmp", "/tmp"));
    assert_refused(&archive, &ArchiveLimits::default(), "tmp");
}

#[test]
fn archive_refuses_symlink_chain_escaping() {
    // Each link alone stays inside; followed through `d`, `e` leaves the root.
    let archive = tar_gz(|b| {
        dir(b, "a/b/");
        link(b, EntryType::Symlink, "a/b/e", "d/..");
        link(b, EntryType::Symlink, "a/b/d", "../..");
    });
    assert_refused(&archive, &ArchiveLimits::default(), "a/b/e");
    // The same, dangling: its target does not exist (yet), and writing through the
    // link later would create it outside.
    let archive = tar_gz(|b| {
        dir(b, "a/b/");
        link(b, EntryType::Symlink, "a/b/x", "..");
        link(b, EntryType::Symlink, "a/b/t", "x/../../not-there-yet");
    });
    assert_refused(&archive, &ArchiveLimits::default(), "a/b/t");
    // A dangling link that stays inside is fine.
    let archive = tar_gz(|b| {
        dir(b, "a/");
        link(b, EntryType::Symlink, "a/later", "../made-later");
    });
    let (_tmp, result) = unpack(&archive, &ArchiveLimits::default());
    result.unwrap();
}

#[test]
fn archive_refuses_escaping_hardlink() {
    let archive = tar_gz(|b| {
        file(b, "ok.txt", b"ok", 0o644);
        link(b, EntryType::Link, "passwd", "../../etc/passwd");
    });
    assert_refused(&archive, &ArchiveLimits::default(), "passwd");
    let archive = tar_gz(|b| link(b, EntryType::Link, "passwd", "/etc/passwd"));
    assert_refused(&archive, &ArchiveLimits::default(), "passwd");
    // A hard link through a symlink (here one leaving the root) is refused too.
    let archive = tar_gz(|b| {
        dir(b, "sub/");
        file(b, "sub/f", b"f", 0o644);
        link(b, EntryType::Symlink, "s", "sub");
        link(b, EntryType::Link, "h", "s/f");
    });
    assert_refused(&archive, &ArchiveLimits::default(), "\"h\"");
}

#[test]
fn archive_refuses_writing_through_symlink() {
    // The link itself stays inside, but nothing is ever written through a symlink.
    let archive = tar_gz(|b| {
        dir(b, "sub/");
        link(b, EntryType::Symlink, "link", "sub");
        file(b, "link/file", b"x", 0o644);
    });
    let err = assert_refused(&archive, &ArchiveLimits::default(), "link/file");
    assert!(err.message().contains("symlink"), "{err}");
    // Replacing a symlink with a file is refused as well.
    let archive = tar_gz(|b| {
        file(b, "target", b"t", 0o644);
        link(b, EntryType::Symlink, "link", "target");
        file(b, "link", b"x", 0o644);
    });
    assert_refused(&archive, &ArchiveLimits::default(), "link");
}

#[test]
fn archive_refuses_devices_and_fifos() {
    let archive = tar_gz(|b| special(b, EntryType::Char, "dev/null"));
    let err = assert_refused(&archive, &ArchiveLimits::default(), "dev/null");
    assert!(err.message().contains("character device"), "{err}");
    let archive = tar_gz(|b| special(b, EntryType::Block, "sda"));
    assert_refused(&archive, &ArchiveLimits::default(), "sda");
    let archive = tar_gz(|b| special(b, EntryType::Fifo, "pipe"));
    let err = assert_refused(&archive, &ArchiveLimits::default(), "pipe");
    assert!(err.message().contains("fifo"), "{err}");
}

#[test]
fn archive_limits_are_enforced() {
    let three = tar_gz(|b| {
        file(b, "a", b"a", 0o644);
        file(b, "b", b"b", 0o644);
        file(b, "c", b"c", 0o644);
    });
    let err = assert_refused(
        &three,
        &ArchiveLimits::default().with_max_entries(2),
        "\"c\"",
    );
    assert!(err.message().contains("max_entries"), "{err}");

    let big = tar_gz(|b| file(b, "big.bin", &[7u8; 5000], 0o644));
    let err = assert_refused(
        &big,
        &ArchiveLimits::default().with_max_unpacked_bytes(4096),
        "big.bin",
    );
    assert!(err.message().contains("max_unpacked_bytes"), "{err}");

    // Incompressible-ish content so the archive is bigger than the limit.
    let noise: Vec<u8> = (0..20_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let noisy = tar_gz(|b| file(b, "noise.bin", &noise, 0o644));
    assert!(noisy.len() > 1000);
    let err = assert_refused(
        &noisy,
        &ArchiveLimits::default().with_max_archive_bytes(1000),
        "",
    );
    assert!(err.message().contains("max_archive_bytes"), "{err}");

    // A bomb: 4 MiB of zeros compress to a few KiB.
    let bomb = tar_gz(|b| file(b, "zeros.bin", &vec![0u8; 4 << 20], 0o644));
    let err = assert_refused(&bomb, &ArchiveLimits::default(), "zeros.bin");
    assert!(err.message().contains("max_expansion_ratio"), "{err}");

    // Small archives compress very well too, but stay under the floor.
    let (_tmp, ok) = unpack(
        &three,
        &ArchiveLimits::default().with_max_expansion_ratio(2),
    );
    ok.unwrap();
}

#[test]
fn archive_refuses_non_gzip_and_corrupt_input() {
    let msg = "not a gzip-compressed tar archive";
    assert_refused(
        b"just some text, not an archive",
        &ArchiveLimits::default(),
        msg,
    );
    assert_refused(b"", &ArchiveLimits::default(), msg);
    // gzip, but not a tar inside.
    assert_refused(&gzip(&[b'x'; 2000]), &ArchiveLimits::default(), msg);
    // A plain (uncompressed) tar.
    let mut b = tar::Builder::new(Vec::new());
    file(&mut b, "a", b"a", 0o644);
    assert_refused(&b.into_inner().unwrap(), &ArchiveLimits::default(), msg);
    // Truncated and bit-flipped archives.
    let good = tar_gz(|b| {
        file(
            b,
            "data.bin",
            &(0..50_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>(),
            0o644,
        )
    });
    assert_refused(&good[..good.len() / 2], &ArchiveLimits::default(), msg);
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0xff;
    flipped[mid + 1] ^= 0x55;
    assert_refused(&flipped, &ArchiveLimits::default(), msg);
}

// ---------------------------------------------------------------------------
// git

/// A bare repository: `main` (two commits, the first tagged `v1`, with `app/`),
/// and a `feature` branch adding a file.
struct Repo {
    _tmp: TempDir,
    bare: PathBuf,
    first: String,
    second: String,
    feature: String,
}

fn repo() -> Repo {
    let tmp = TempDir::new().unwrap();
    let work = tmp.path().join("work");
    fs::create_dir(&work).unwrap();
    git(&work, &["init", "--quiet", "-b", "main"]);
    write(&work.join("README.md"), "v1\n");
    write(&work.join("app/index.js"), "console.log('hi')\n");
    git(&work, &["add", "."]);
    git(&work, &["commit", "--quiet", "-m", "first"]);
    let first = git(&work, &["rev-parse", "HEAD"]);
    git(&work, &["tag", "-a", "v1", "-m", "version 1"]);
    write(&work.join("README.md"), "v2\n");
    git(&work, &["commit", "--quiet", "-am", "second"]);
    let second = git(&work, &["rev-parse", "HEAD"]);
    git(&work, &["checkout", "--quiet", "-b", "feature"]);
    write(&work.join("feature.txt"), "feature\n");
    git(&work, &["add", "."]);
    git(&work, &["commit", "--quiet", "-m", "feature"]);
    let feature = git(&work, &["rev-parse", "HEAD"]);
    git(&work, &["checkout", "--quiet", "main"]);
    let bare = tmp.path().join("repo.git");
    git(
        tmp.path(),
        &["init", "--quiet", "--bare", "-b", "main", "repo.git"],
    );
    git(
        &work,
        &[
            "push",
            "--quiet",
            "--",
            bare.to_str().unwrap(),
            "main",
            "feature",
            "v1",
        ],
    );
    Repo {
        _tmp: tmp,
        bare,
        first,
        second,
        feature,
    }
}

fn git_spec(url: &str, reference: GitRef, subdir: Option<&str>) -> SourceSpec {
    SourceSpec::Git {
        url: url.to_owned(),
        reference,
        subdir: subdir.map(PathBuf::from),
    }
}

async fn fetch_git(
    spec: &SourceSpec,
) -> (TempDir, PathBuf, wharf_core::Result<wharf_core::Fetched>) {
    let out = TempDir::new().unwrap();
    let dest = out.path().join("checkout");
    let result = GitFetcher::new()
        .fetch(spec, &dest, &LogSink::discard())
        .await;
    (out, dest, result)
}

#[tokio::test]
async fn git_fetches_branch_and_streams_progress() {
    if !git_present() {
        return;
    }
    let repo = repo();
    let url = repo.bare.to_str().unwrap();
    let out = TempDir::new().unwrap();
    let dest = out.path().join("checkout");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let spec = git_spec(url, GitRef::Branch("feature".into()), None);
    let fetched = GitFetcher::new()
        .fetch(&spec, &dest, &LogSink::new(tx))
        .await
        .unwrap();
    assert_eq!(fetched.revision, repo.feature);
    assert_eq!(fetched.dir, dest);
    assert_eq!(read(&dest.join("feature.txt")), "feature\n");
    assert_eq!(read(&dest.join("README.md")), "v2\n");
    let mut lines = Vec::new();
    while let Ok(line) = rx.try_recv() {
        lines.push(line.text);
    }
    assert!(
        lines.iter().any(|l| l.starts_with("git: ")),
        "git's output is streamed: {lines:?}"
    );
}

#[tokio::test]
async fn git_clones_in_full_from_a_dumb_http_server() {
    if !git_present() {
        return;
    }
    let repo = repo();
    // A static file server speaks git's "dumb" protocol, which has no shallow clones.
    git(&repo.bare, &["update-server-info"]);
    let Some(http) = StaticServer::start(repo.bare.parent().unwrap()) else {
        return;
    };
    let url = format!("{}/repo.git", http.base());
    let out = TempDir::new().unwrap();
    let dest = out.path().join("checkout");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let spec = git_spec(&url, GitRef::Branch("main".into()), None);
    let fetched = GitFetcher::new()
        .fetch(&spec, &dest, &LogSink::new(tx))
        .await
        .unwrap();
    assert_eq!(fetched.revision, repo.second);
    assert_eq!(read(&dest.join("README.md")), "v2\n");
    let mut lines = Vec::new();
    while let Ok(line) = rx.try_recv() {
        lines.push(line.text);
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("cloning the branch in full")),
        "the fallback is logged: {lines:?}"
    );
}

#[tokio::test]
async fn git_fetches_tag_default_branch_and_commits() {
    if !git_present() {
        return;
    }
    let repo = repo();
    let url = repo.bare.to_str().unwrap();

    let (_o, dest, r) = fetch_git(&git_spec(url, GitRef::Tag("v1".into()), None)).await;
    assert_eq!(r.unwrap().revision, repo.first);
    assert_eq!(read(&dest.join("README.md")), "v1\n");

    let (_o, dest, r) = fetch_git(&git_spec(url, GitRef::Default, None)).await;
    assert_eq!(r.unwrap().revision, repo.second);
    assert_eq!(read(&dest.join("README.md")), "v2\n");
    assert!(!dest.join("feature.txt").exists());

    // By full sha (shallow fetch), in upper case too.
    let (_o, dest, r) = fetch_git(&git_spec(
        url,
        GitRef::Commit(repo.first.to_uppercase()),
        None,
    ))
    .await;
    assert_eq!(r.unwrap().revision, repo.first);
    assert_eq!(read(&dest.join("README.md")), "v1\n");

    // By abbreviated sha (full fetch, then checkout).
    let short = repo.feature[..10].to_owned();
    let (_o, dest, r) = fetch_git(&git_spec(url, GitRef::Commit(short), None)).await;
    assert_eq!(r.unwrap().revision, repo.feature);
    assert_eq!(read(&dest.join("feature.txt")), "feature\n");

    // Through a file:// URL.
    let file_url = format!("file://{url}");
    let (_o, _dest, r) = fetch_git(&git_spec(&file_url, GitRef::Branch("main".into()), None)).await;
    assert_eq!(r.unwrap().revision, repo.second);
}

#[tokio::test]
async fn git_fetches_subdir() {
    if !git_present() {
        return;
    }
    let repo = repo();
    let url = repo.bare.to_str().unwrap();
    let (_o, dest, r) = fetch_git(&git_spec(url, GitRef::Branch("main".into()), Some("app"))).await;
    let fetched = r.unwrap();
    assert_eq!(fetched.dir, dest.join("app"));
    assert_eq!(read(&fetched.dir.join("index.js")), "console.log('hi')\n");

    let (_o, dest, r) = fetch_git(&git_spec(url, GitRef::Default, Some("missing"))).await;
    let err = r.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.message().contains("missing"), "{err}");
    assert_empty(&dest);

    let (_o, _dest, r) = fetch_git(&git_spec(url, GitRef::Default, Some("README.md"))).await;
    assert_invalid(&r.unwrap_err(), "README.md");
}

#[tokio::test]
async fn git_unknown_refs_and_repos_are_not_found() {
    if !git_present() {
        return;
    }
    let repo = repo();
    let url = repo.bare.to_str().unwrap();

    let (_o, dest, r) = fetch_git(&git_spec(url, GitRef::Branch("nope".into()), None)).await;
    let err = r.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.message().contains("nope"), "{err}");
    assert_empty(&dest);

    let (_o, _d, r) = fetch_git(&git_spec(url, GitRef::Tag("v9".into()), None)).await;
    let err = r.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.message().contains("v9"), "{err}");

    let missing = "0123456789abcdef0123456789abcdef01234567";
    let (_o, dest, r) = fetch_git(&git_spec(url, GitRef::Commit(missing.into()), None)).await;
    let err = r.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.message().contains(missing), "{err}");
    assert_empty(&dest);

    let gone = repo.bare.with_file_name("gone.git");
    let (_o, _d, r) = fetch_git(&git_spec(gone.to_str().unwrap(), GitRef::Default, None)).await;
    let err = r.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
}

#[tokio::test]
async fn git_refuses_bad_input() {
    // Validation happens before git runs, so these need no git.
    let cases = [
        git_spec("--upload-pack=touch /tmp/pwned", GitRef::Default, None),
        git_spec("-oProxyCommand=x", GitRef::Default, None),
        git_spec("ext::sh -c touch% /tmp/pwned", GitRef::Default, None),
        git_spec(
            "/tmp/repo.git",
            GitRef::Branch("--upload-pack=x".into()),
            None,
        ),
        git_spec("/tmp/repo.git", GitRef::Tag("a..b".into()), None),
        git_spec("/tmp/repo.git", GitRef::Commit("xyz".into()), None),
        git_spec("/tmp/repo.git", GitRef::Commit("abc".into()), None),
        git_spec("/tmp/repo.git", GitRef::Default, Some("../etc")),
        git_spec("/tmp/repo.git", GitRef::Default, Some("app/../../etc")),
        git_spec("/tmp/repo.git", GitRef::Default, Some("/etc")),
    ];
    for spec in cases {
        let (_o, dest, r) = fetch_git(&spec).await;
        let err = r.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{spec:?}: {err}");
        assert!(!dest.exists() || fs::read_dir(&dest).unwrap().next().is_none());
    }
}

#[tokio::test]
async fn git_missing_program_is_unavailable() {
    let out = TempDir::new().unwrap();
    let fetcher = GitFetcher::with_program("/nonexistent/bin/git");
    let err = fetcher
        .fetch(
            &git_spec("https://example.invalid/repo.git", GitRef::Default, None),
            &out.path().join("dest"),
            &LogSink::discard(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable());
}

// ---------------------------------------------------------------------------
// dispatch

#[tokio::test]
async fn fetchers_dispatch_by_kind() {
    let fetchers = Fetchers::with_archive_limits(ArchiveLimits::default().with_max_entries(3));
    let tmp = TempDir::new().unwrap();

    let err = fetchers
        .fetch(
            &SourceSpec::Image {
                image: "nginx:1".into(),
            },
            &tmp.path().join("img"),
            &LogSink::discard(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert!(err.message().contains("images are not fetched"), "{err}");

    // Folders.
    let src = TempDir::new().unwrap();
    write(&src.path().join("a.txt"), "a");
    let fetched = fetchers
        .fetch(
            &SourceSpec::Dir {
                path: src.path().to_path_buf(),
            },
            &tmp.path().join("dir"),
            &LogSink::discard(),
        )
        .await
        .unwrap();
    assert_eq!(read(&fetched.dir.join("a.txt")), "a");

    // Archives, with the limits given.
    let path = tmp.path().join("a.tar.gz");
    fs::write(&path, sample_archive()).unwrap();
    let err = fetchers
        .fetch(
            &SourceSpec::Archive { path },
            &tmp.path().join("arc"),
            &LogSink::discard(),
        )
        .await
        .unwrap_err();
    assert_invalid(&err, "max_entries");

    // Git (input validation only: no network).
    let err = fetchers
        .fetch(
            &git_spec("-x", GitRef::Default, None),
            &tmp.path().join("git"),
            &LogSink::discard(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);

    // Single fetchers refuse other kinds.
    let dir_spec = SourceSpec::Dir {
        path: src.path().to_path_buf(),
    };
    let d = tmp.path().join("x");
    let refused = [
        ArchiveFetcher::default()
            .fetch(&dir_spec, &d, &LogSink::discard())
            .await,
        GitFetcher::default()
            .fetch(&dir_spec, &d, &LogSink::discard())
            .await,
        DirFetcher::default()
            .fetch(
                &git_spec("/r", GitRef::Default, None),
                &d,
                &LogSink::discard(),
            )
            .await,
    ];
    for r in refused {
        assert_eq!(r.unwrap_err().kind(), ErrorKind::Unsupported);
    }
}
