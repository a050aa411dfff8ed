//! Volume backups against real components: the Docker engine (helper containers of
//! the local busybox image), the S3-compatible server of `scripts/setup-s3` (moto),
//! a local folder, and the host-process runtime. Skips with a reason without Docker
//! or S3; fails instead under `WHARF_REQUIRE=docker,s3`.

use std::path::Path;
use std::sync::Arc;

use futures::StreamExt as _;
use object_store::ObjectStore as _;
use sha2::Digest as _;
use wharf_backup::{
    AllowedEndpoints, BackupState, Backups, Destination, ExecSource, S3Destination, Settings,
    SourceKind, VolumePolicy,
};
use wharf_core::store::Sealer;
use wharf_core::{DynRuntime, ErrorKind, ProjectId, Secret, VolumeRef};

const IMAGE: &str = "wharf-local/busybox:1";

async fn docker() -> Option<DynRuntime> {
    match wharf_docker::DockerRuntime::connect().await {
        Ok(rt) => Some(Arc::new(rt)),
        Err(e) => {
            wharf_testkit::require("docker", Err(e.to_string()));
            None
        }
    }
}

async fn s3() -> bool {
    let addr = wharf_testkit::s3_addr();
    wharf_testkit::require("s3", wharf_testkit::probe_s3(&addr).await)
}

fn volume(project: &str) -> VolumeRef {
    VolumeRef {
        project: ProjectId(project.into()),
        scope: Some(format!("wharf-{project}")),
        name: "data".into(),
    }
}

/// Runs `script` in a busybox container with the Docker volume `name` at /data.
fn in_volume(name: &str, script: &str) -> String {
    wharf_testkit::stdout_of(std::process::Command::new("docker").args([
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &format!("{name}:/data"),
        IMAGE,
        "sh",
        "-c",
        script,
    ]))
}

fn docker_name(v: &VolumeRef) -> String {
    format!("{}.{}", v.scope.as_deref().unwrap(), v.name)
}

fn backups(rt: DynRuntime, dir: &Path) -> Backups {
    Backups::open(
        rt,
        Some(dir.join("backups.json")),
        dir.join("local"),
        dir.join("work"),
        Sealer::new(&[5u8; 32]),
    )
    .unwrap()
    // The test S3 server and a port nothing listens on, as an operator would list them.
    .allow_endpoints(
        AllowedEndpoints::parse(&format!(
            "http://{}, http://127.0.0.1:9/",
            wharf_testkit::s3_addr()
        ))
        .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn an_owner_can_send_backups_only_to_endpoints_the_operator_lists() {
    let dir = tempfile::tempdir().unwrap();
    let rt: DynRuntime = Arc::new(wharf_core::memory::MemoryRuntime::default());
    let b = backups(rt, dir.path());
    let project = wharf_testkit::unique("bk");
    let set = |endpoint: &str| {
        b.set_settings(
            &project,
            Some(Settings {
                destination: s3_dest("wharf-b", endpoint.into()),
                volumes: Default::default(),
            }),
        )
    };
    // Internal addresses a server can reach and an owner must not: cloud metadata,
    // the operator's own ports, the same port under another scheme or spelling.
    for endpoint in [
        "http://169.254.169.254",
        "http://127.0.0.1:5000",
        "https://127.0.0.1:9",
        "http://localhost:9",
        "http://[::1]:9",
        "http://127.0.0.1:90",
        // An allowed origin with a path or query: object_store would append the
        // bucket and key after it, reaching other paths of that host.
        "http://127.0.0.1:9/admin/",
        "http://127.0.0.1:9/?x=",
    ] {
        let e = set(endpoint).unwrap_err().to_string();
        assert!(
            e.contains("backup_endpoints") || e.contains("an origin"),
            "{endpoint}: {e}"
        );
        assert!(
            b.settings(&project).unwrap().is_none(),
            "{endpoint} was stored"
        );
    }
    set("http://127.0.0.1:9").unwrap();
    set("http://127.0.0.1:9/").unwrap();
    // AWS S3 itself needs no endpoint and is always allowed.
    let mut aws = s3_dest("wharf-b", String::new());
    if let Destination::S3(s) = &mut aws {
        s.endpoint = None;
    }
    b.set_settings(
        &project,
        Some(Settings {
            destination: aws,
            volumes: Default::default(),
        }),
    )
    .unwrap();
    // A list names origins only.
    for bad in ["http://h/path", "ftp://h", "http://u:p@h", "not a url"] {
        assert!(AllowedEndpoints::parse(bad).is_err(), "{bad}");
    }
}

fn local(_project: &str, keep_last: Option<u32>) -> Settings {
    Settings {
        destination: Destination::Local,
        volumes: [(
            "data".to_owned(),
            VolumePolicy {
                schedule: None,
                keep_last,
                keep_days: None,
            },
        )]
        .into(),
    }
}

fn s3_dest(bucket: &str, endpoint: String) -> Destination {
    Destination::S3(S3Destination {
        endpoint: Some(endpoint),
        bucket: bucket.into(),
        region: "us-east-1".into(),
        prefix: Some("ci".into()),
        access_key_id: "testing".into(),
        secret_access_key: Secret::new("testing-secret"),
    })
}

fn sha(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Makes the labelled Docker volume (as a deployment would) and writes files into
/// it through a container.
async fn seed(rt: &DynRuntime, v: &VolumeRef) -> String {
    // An archive holding just the root folder: creates the volume, labelled.
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    tar.append_data(&mut h, "volume/", std::io::empty())
        .unwrap();
    let bytes = bytes::Bytes::from(tar.into_inner().unwrap());
    rt.import_volume(v, Box::pin(futures::stream::iter([Ok(bytes)])))
        .await
        .unwrap();
    let name = docker_name(v);
    in_volume(
        &name,
        "echo hello > /data/a.txt && mkdir /data/sub && echo deep > /data/sub/b.txt && echo dot > /data/.hidden",
    );
    name
}

/// Removes a test volume; a helper container of an export stopped early (dropped
/// stream) is removed in the background, so give it a few seconds.
async fn cleanup(rt: &DynRuntime, v: &VolumeRef) {
    for _ in 0..50 {
        match rt.remove_volume(v).await {
            Err(e) if e.kind() == ErrorKind::Conflict => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await
            }
            r => return r.unwrap(),
        }
    }
    panic!("volume {} still in use", v.name);
}

const READ_BACK: &str = "cat /data/a.txt /data/sub/b.txt /data/.hidden; ls /data";

#[tokio::test]
async fn docker_volume_to_a_local_folder_round_trips_and_a_corrupt_object_never_touches_the_volume()
{
    let Some(rt) = docker().await else { return };
    let project = wharf_testkit::unique("bk");
    let v = volume(&project);
    let name = seed(&rt, &v).await;
    let before = in_volume(&name, READ_BACK);
    assert_eq!(before, "hello\ndeep\ndot\na.txt\nsub");
    let dir = tempfile::tempdir().unwrap();
    let b = backups(rt.clone(), dir.path());
    b.set_settings(&project, Some(local(&project, None)))
        .unwrap();

    let r = b.backup_volume(&project, &v).await.unwrap();
    assert_eq!(r.state, BackupState::Succeeded, "{:?}", r.error);
    // The object as stored: its size and sha256 are the manifest's.
    let obj = dir.path().join("local").join(&project).join(&r.key);
    let stored = std::fs::read(&obj).unwrap();
    assert_eq!(r.size_bytes, Some(stored.len() as u64));
    assert_eq!(r.sha256.as_deref(), Some(sha(&stored).as_str()));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(format!("{}.json", obj.display())).unwrap()).unwrap();
    assert_eq!(manifest["sha256"], sha(&stored));
    assert_eq!(manifest["size_bytes"], stored.len() as u64);
    assert_eq!(manifest["state"], "succeeded");
    assert_eq!(manifest["source"], "volume");
    assert_eq!(manifest["project"], project.as_str());
    // Gzip of a tar holding the files under volume/.
    let mut names: Vec<String> = tar::Archive::new(flate2::read::GzDecoder::new(&stored[..]))
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    names.sort();
    assert!(names.contains(&"volume/sub/b.txt".to_owned()), "{names:?}");

    // Data destroyed, then restored: the files come back and the junk goes.
    in_volume(
        &name,
        "rm -rf /data/* /data/.hidden && echo junk > /data/junk",
    );
    b.restore(&r.id, &v).await.unwrap();
    assert_eq!(in_volume(&name, READ_BACK), before);

    // A corrupted object fails the restore before the volume is touched.
    in_volume(&name, "echo changed-after > /data/a.txt");
    let mut bad = stored.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    std::fs::write(&obj, &bad).unwrap();
    let err = b.restore(&r.id, &v).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(err.to_string().contains("corrupt"), "{err}");
    assert_eq!(in_volume(&name, "cat /data/a.txt"), "changed-after");

    // The record is in the index file, and survives reopening.
    let again = backups(rt.clone(), dir.path());
    assert_eq!(again.list(&project), vec![r]);
    cleanup(&rt, &v).await;
}

#[tokio::test]
async fn docker_volume_to_s3_round_trips_with_the_manifest_beside_the_object() {
    let Some(rt) = docker().await else { return };
    if !s3().await {
        return;
    }
    let addr = wharf_testkit::s3_addr();
    let project = wharf_testkit::unique("bk");
    let bucket = format!("wharf-{}", project.to_ascii_lowercase());
    wharf_testkit::s3_create_bucket(&addr, &bucket).await;
    let v = volume(&project);
    let name = seed(&rt, &v).await;
    let before = in_volume(&name, READ_BACK);
    let dir = tempfile::tempdir().unwrap();
    let b = backups(rt.clone(), dir.path());
    let dest = s3_dest(&bucket, format!("http://{addr}"));
    b.set_settings(
        &project,
        Some(Settings {
            destination: dest,
            volumes: Default::default(),
        }),
    )
    .unwrap();
    // The secret is sealed in the index file.
    let index = std::fs::read_to_string(dir.path().join("backups.json")).unwrap();
    assert!(!index.contains("testing-secret"), "{index}");

    let r = b.backup_volume(&project, &v).await.unwrap();
    assert_eq!(r.state, BackupState::Succeeded, "{:?}", r.error);
    assert!(r.key.starts_with(&format!("ci/{project}/")), "{}", r.key);
    // Read the object back from the bucket with a client of our own.
    let store = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(&bucket)
        .with_region("us-east-1")
        .with_access_key_id("testing")
        .with_secret_access_key("testing-secret")
        .with_endpoint(format!("http://{addr}"))
        .with_allow_http(true)
        .build()
        .unwrap();
    let stored = store
        .get(&object_store::path::Path::from(r.key.as_str()))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(r.size_bytes, Some(stored.len() as u64));
    assert_eq!(r.sha256.as_deref(), Some(sha(&stored).as_str()));
    let manifest = store
        .get(&object_store::path::Path::from(format!("{}.json", r.key)))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let manifest: wharf_backup::BackupRecord = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(manifest, r);

    in_volume(&name, "rm -rf /data/* /data/.hidden");
    b.restore(&r.id, &v).await.unwrap();
    assert_eq!(in_volume(&name, READ_BACK), before);

    // Into a new volume of the same project.
    let other = VolumeRef {
        name: "copy".into(),
        ..v.clone()
    };
    b.restore(&r.id, &other).await.unwrap();
    assert_eq!(in_volume(&docker_name(&other), READ_BACK), before);
    cleanup(&rt, &other).await;
    cleanup(&rt, &v).await;
}

#[tokio::test]
async fn a_backup_to_an_unreachable_or_refusing_store_is_recorded_failed_with_its_error() {
    let Some(rt) = docker().await else { return };
    let project = wharf_testkit::unique("bk");
    let v = volume(&project);
    seed(&rt, &v).await;
    let dir = tempfile::tempdir().unwrap();
    let b = backups(rt.clone(), dir.path());
    // Nothing listens on port 9 of loopback.
    let dead = s3_dest("wharf-nowhere", "http://127.0.0.1:9".into());
    b.set_settings(
        &project,
        Some(Settings {
            destination: dead,
            volumes: Default::default(),
        }),
    )
    .unwrap();
    let r = b.backup_volume(&project, &v).await.unwrap();
    assert_eq!(r.state, BackupState::Failed);
    let err = r.error.clone().unwrap();
    assert!(!err.is_empty());
    assert!(!err.contains("testing-secret"), "{err}");
    assert_eq!(r.sha256, None);
    assert_eq!(b.list(&project)[0].state, BackupState::Failed);
    // A failed backup is never restored.
    assert_eq!(
        b.restore(&r.id, &v).await.unwrap_err().kind(),
        ErrorKind::Conflict
    );

    if s3().await {
        // A bucket that does not exist on a store that answers.
        let addr = wharf_testkit::s3_addr();
        let missing = s3_dest("wharf-no-such-bucket", format!("http://{addr}"));
        b.set_settings(
            &project,
            Some(Settings {
                destination: missing,
                volumes: Default::default(),
            }),
        )
        .unwrap();
        let r = b.backup_volume(&project, &v).await.unwrap();
        assert_eq!(r.state, BackupState::Failed);
        assert!(
            r.error.as_deref().unwrap().contains("NoSuchBucket"),
            "{:?}",
            r.error
        );
    }
    // A volume that does not exist fails too, recorded.
    b.set_settings(&project, Some(local(&project, None)))
        .unwrap();
    let ghost = VolumeRef {
        name: "ghost".into(),
        ..v.clone()
    };
    let r = b.backup_volume(&project, &ghost).await.unwrap();
    assert_eq!(r.state, BackupState::Failed);
    assert!(
        r.error.as_deref().unwrap().contains("no volume"),
        "{:?}",
        r.error
    );
    cleanup(&rt, &v).await;
}

#[tokio::test]
async fn retention_keeps_exactly_the_last_n_and_deletes_older_objects() {
    let Some(rt) = docker().await else { return };
    let project = wharf_testkit::unique("bk");
    let v = volume(&project);
    seed(&rt, &v).await;
    let dir = tempfile::tempdir().unwrap();
    let b = backups(rt.clone(), dir.path());
    b.set_settings(&project, Some(local(&project, Some(2))))
        .unwrap();
    // One taken on demand first: retention never counts or deletes it.
    let manual = b.backup_volume(&project, &v).await.unwrap();
    let mut taken = Vec::new();
    for _ in 0..4 {
        let r = b.backup_volume_scheduled(&project, &v).await.unwrap();
        assert_eq!(r.state, BackupState::Succeeded, "{:?}", r.error);
        taken.push(r);
    }
    let left = b.list(&project);
    let ids: Vec<_> = left.iter().map(|r| r.id.clone()).collect();
    assert_eq!(
        ids,
        vec![taken[3].id.clone(), taken[2].id.clone(), manual.id.clone()]
    );
    let root = dir.path().join("local").join(&project);
    for (i, r) in taken.iter().enumerate() {
        let obj = root.join(&r.key);
        let manifest = root.join(format!("{}.json", r.key));
        assert_eq!(obj.exists(), i >= 2, "object {i}");
        assert_eq!(manifest.exists(), i >= 2, "manifest {i}");
    }
    cleanup(&rt, &v).await;
}

#[tokio::test]
async fn host_process_volume_round_trips_and_refuses_archives_that_climb_out() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = wharf_core::process::HostRuntimeConfig::new(dir.path().join("state"));
    let rt: DynRuntime = Arc::new(wharf_core::process::HostRuntime::open(cfg).await.unwrap());
    let project = wharf_testkit::unique("bk");
    let v = VolumeRef {
        project: ProjectId(project.clone()),
        scope: Some(format!("wharf-{project}")),
        name: "data".into(),
    };
    let folder = dir
        .path()
        .join("volumes")
        .join(&project)
        .join(format!("wharf-{project}.data"));
    std::fs::create_dir_all(folder.join("sub")).unwrap();
    std::fs::write(folder.join("a.txt"), "hello").unwrap();
    std::fs::write(folder.join("sub/b.txt"), "deep").unwrap();
    std::os::unix::fs::symlink("/etc/hostname", folder.join("link")).unwrap();
    let b = backups(rt.clone(), dir.path());
    b.set_settings(&project, Some(local(&project, None)))
        .unwrap();
    let r = b.backup_volume(&project, &v).await.unwrap();
    assert_eq!(r.state, BackupState::Succeeded, "{:?}", r.error);

    std::fs::remove_dir_all(&folder).unwrap();
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("junk"), "x").unwrap();
    b.restore(&r.id, &v).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(folder.join("a.txt")).unwrap(),
        "hello"
    );
    assert_eq!(
        std::fs::read_to_string(folder.join("sub/b.txt")).unwrap(),
        "deep"
    );
    assert!(!folder.join("junk").exists());
    // The link came back as a link (never followed into the backup).
    assert_eq!(
        std::fs::read_link(folder.join("link")).unwrap(),
        Path::new("/etc/hostname")
    );

    // An archive with an entry outside volume/ is refused and changes nothing.
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(3);
    h.set_mode(0o644);
    tar.append_data(&mut h, "volume/ok.txt", &b"new"[..])
        .unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_size(3);
    h.set_mode(0o644);
    tar.append_data(&mut h, "elsewhere.txt", &b"bad"[..])
        .unwrap();
    let bytes = bytes::Bytes::from(tar.into_inner().unwrap());
    let err = rt
        .import_volume(&v, Box::pin(futures::stream::iter([Ok(bytes)])))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(!folder.join("ok.txt").exists());
    assert_eq!(
        std::fs::read_to_string(folder.join("a.txt")).unwrap(),
        "hello"
    );
}

/// A dump taken and restored by commands inside a live container (as the database
/// backups are), here a "database" that is one file: the object holds what the dump
/// printed, a restore feeds it back, and a volume backup is never restored as a dump.
#[tokio::test]
async fn a_dump_by_commands_in_a_live_instance_round_trips() {
    let Some(rt) = docker().await else { return };
    let project = wharf_testkit::unique("bk");
    let v = volume(&project);
    let spec = wharf_testkit::spec(&format!("dump-{project}"), IMAGE)
        .command(["sh", "-c", "echo 'row 1' > /tmp/db && exec sleep 600"])
        .labels(
            [
                (wharf_core::label::MANAGED.to_owned(), "true".to_owned()),
                (wharf_core::label::PROJECT.to_owned(), project.clone()),
            ]
            .into(),
        )
        .build();
    let inst = rt.start(&spec).await.expect("start");
    let sh = |s: &str| vec!["sh".to_owned(), "-c".to_owned(), s.to_owned()];
    let source = ExecSource {
        runtime: rt.clone(),
        instance: inst.id.clone(),
        kind: SourceKind::PostgresDump,
        dump: sh("cat /tmp/db"),
        restore: sh("cat > /tmp/db"),
        env: Default::default(),
    };
    let dir = tempfile::tempdir().unwrap();
    let b = backups(rt.clone(), dir.path());
    b.set_settings(&project, Some(local(&project, None)))
        .unwrap();
    let r = b.backup_with(&project, &v, &source).await.unwrap();
    assert_eq!(r.state, BackupState::Succeeded, "{:?}", r.error);
    assert_eq!(r.source, SourceKind::PostgresDump);
    assert!(r.key.ends_with(".sql.gz"), "{}", r.key);
    assert_eq!(r.content_bytes, Some(6));

    let cat = || async {
        let mut s = rt
            .exec(&inst.id, &sh("cat /tmp/db"), &Default::default(), None)
            .await
            .unwrap();
        let mut out = Vec::new();
        while let Some(c) = futures::StreamExt::next(&mut s).await {
            out.extend_from_slice(&c.unwrap());
        }
        String::from_utf8(out).unwrap()
    };
    rt.exec(
        &inst.id,
        &sh("echo dropped > /tmp/db"),
        &Default::default(),
        None,
    )
    .await
    .unwrap()
    .for_each(|_| async {})
    .await;
    assert_eq!(cat().await, "dropped\n");
    b.restore_with(&r.id, &v, &source).await.unwrap();
    assert_eq!(cat().await, "row 1\n");
    // A volume restore of a dump is refused.
    let e = b.restore(&r.id, &v).await.unwrap_err();
    assert!(e.to_string().contains("postgres_dump"), "{e}");

    // A dump command that fails is a failed backup with its error, never a success.
    let broken = ExecSource {
        dump: sh("echo 'could not connect' >&2; exit 2"),
        ..source.clone()
    };
    let r = b.backup_with(&project, &v, &broken).await.unwrap();
    assert_eq!(r.state, BackupState::Failed);
    assert!(
        r.error.as_deref().unwrap().contains("could not connect"),
        "{r:?}"
    );
    rt.stop(&inst.id, std::time::Duration::ZERO).await.unwrap();
}
