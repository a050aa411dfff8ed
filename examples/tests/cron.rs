//! Cron jobs end to end on `wharf serve`'s embedded defaults (host processes): a job
//! declared in wharf.toml runs on schedule from the live release (its files, its
//! volume), its runs are in the history the API and `wharf cron` show, and a control
//! plane killed for several periods fires no burst when it comes back. On Docker: a
//! job runs on schedule from the release's image with the volume, and `forbid` skips
//! a run while the previous one still runs.

mod common;

use std::time::Duration;

use common::{docker_and_caddy, Server};
use serde_json::Value;
use wharf_testkit::{python_present, write_hello_app};

fn now_ms() -> i64 {
    wharf_core::Timestamp::now().0
}

/// The runs of project `project`'s service web, newest first.
async fn runs(server: &Server, project: &str) -> Vec<Value> {
    let path = format!("/projects/{project}/services/web/cron/runs?limit=500");
    let (status, body) = server.read(&path).await;
    assert_eq!(status, 200, "{body}");
    body.as_array().unwrap().clone()
}

fn field(run: &Value, name: &str) -> i64 {
    run[name]
        .as_i64()
        .unwrap_or_else(|| panic!("{name} of {run}"))
}

/// Waits until `ok` holds for the runs of shop's web (at most `secs` seconds); the
/// runs then.
async fn runs_until(server: &Server, secs: u64, ok: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    runs_of_until(server, "shop", secs, ok).await
}

/// As [`runs_until`], for project `project`.
async fn runs_of_until(
    server: &Server,
    project: &str,
    secs: u64,
    ok: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let r = runs(server, project).await;
        if ok(&r) {
            return r;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "runs never got there: {}",
                serde_json::to_string_pretty(&r).unwrap()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The last line a run printed (the host runtime notes where the volume is first).
fn last_line(run: &Value) -> &str {
    run["output"]
        .as_str()
        .unwrap()
        .lines()
        .last()
        .unwrap_or_default()
}

/// `wharf serve` in `dir` with project shop's service web deployed, its job `tick`
/// running `command` every 2 seconds with `concurrency`.
async fn deployed(dir: &std::path::Path, command: &str, concurrency: &str) -> Server {
    let app = dir.join("shop");
    write_hello_app(&app, "127.0.0.1", "v1");
    std::fs::write(
        app.join("wharf.toml"),
        format!(
            r#"project = "shop"

[services.web]
volumes = [{{ name = "data", mount = "/data" }}]

[[services.web.cron]]
name = "tick"
schedule = "*/2 * * * * *"
command = '{command}'
concurrency = "{concurrency}"
timeout = "30s"
"#
        ),
    )
    .unwrap();
    let mut server = Server::start(dir);
    server.wait_ready(dir).await;
    let (ok, out) = server.cli(&["deploy", app.to_str().unwrap()]);
    assert!(ok, "wharf deploy failed:\n{out}");
    server
}

fn succeeded(runs: &[Value]) -> Vec<&Value> {
    runs.iter()
        .filter(|r| r["outcome"] == "succeeded")
        .collect()
}

#[tokio::test]
async fn a_cron_job_runs_from_the_live_release_and_a_restart_fires_no_burst() {
    if !python_present() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // Every 2 seconds; each run appends to a file in the service's volume and prints
    // the release's version and how many lines the file holds.
    let tick = r#"sleep 1 && echo "tick $(cat version.txt)" >> "$WHARF_VOLUME_DATA/ticks" && echo "ran $(cat version.txt), $(wc -l < "$WHARF_VOLUME_DATA/ticks") ticks""#;
    let mut first = deployed(tmp.path(), tick, "forbid").await;
    let before = runs_until(&first, 30, |r| succeeded(r).len() >= 3).await;
    let done = succeeded(&before);
    for r in &done {
        assert_eq!(r["job"], "tick");
        assert_eq!(r["exit_code"], 0, "{r}");
        assert!(last_line(r).starts_with("ran v1, "), "{r}");
        assert_eq!(
            field(r, "scheduled_for") % 2000,
            0,
            "on an even second: {r}"
        );
    }
    // The volume keeps what earlier runs wrote: the count grows run after run.
    let count = |r: &Value| -> u64 {
        let out = last_line(r);
        out.trim_end_matches(" ticks")
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap_or_else(|_| panic!("{out:?}"))
    };
    assert!(count(done[0]) > count(done[done.len() - 1]), "{before:?}");

    let (ok, out) = first.cli(&["cron", "ls", "-p", "shop", "-s", "web"]);
    assert!(
        ok && out.contains("tick") && out.contains("*/2 * * * * *"),
        "{out}"
    );
    let (ok, out) = first.cli(&[
        "cron", "runs", "-p", "shop", "-s", "web", "tick", "--output",
    ]);
    assert!(
        ok && out.contains("succeeded") && out.contains("ran v1"),
        "{out}"
    );

    // The control plane dies (SIGKILL) and stays down for 4 periods.
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let stopped = now_ms();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let spawned = now_ms();
    // `first` stays in scope: dropping it would kill the apps the second one runs.
    let mut second = Server::start(tmp.path());
    second.wait_ready(tmp.path()).await;
    let up = now_ms();
    let after = runs_until(&second, 30, |r| {
        r.iter()
            .any(|r| field(r, "scheduled_for") > up && r["outcome"] == "succeeded")
    })
    .await;

    // At most one run for the times missed while it was down, not one per time.
    let missed: Vec<&Value> = after
        .iter()
        .filter(|r| (stopped + 1..=spawned).contains(&field(r, "scheduled_for")))
        .collect();
    assert!(missed.len() <= 1, "a burst after the restart: {missed:?}");
    let due_while_down = (stopped / 2000 + 1..=spawned / 2000).count();
    assert!(
        due_while_down >= 3,
        "the downtime covered {due_while_down} periods"
    );
    // Each scheduled time ran at most once.
    let mut times: Vec<i64> = after.iter().map(|r| field(r, "scheduled_for")).collect();
    times.sort();
    let len = times.len();
    times.dedup();
    assert_eq!(times.len(), len, "a time ran twice: {after:?}");
    // No run of the first control plane is left running: it ended, or the restart
    // failed it.
    for r in after.iter().filter(|r| field(r, "started_at") < stopped) {
        assert_ne!(r["outcome"], "running", "{r}");
        if r["outcome"] == "failed" {
            assert_eq!(
                r["reason"], "the control plane restarted while it ran",
                "{r}"
            );
        }
    }
    // The schedule goes on from the same release.
    let later = after
        .iter()
        .find(|r| field(r, "scheduled_for") > up && r["outcome"] == "succeeded")
        .unwrap();
    assert!(last_line(later).starts_with("ran v1, "), "{later}");
    assert!(
        count(later) > count(done[0]),
        "the volume kept its data: {later}"
    );
}

/// The runs that ran (not skipped) never overlapped.
fn never_overlapped(runs: &[Value]) {
    let mut ran: Vec<(i64, i64)> = runs
        .iter()
        .filter(|r| r["outcome"] != "skipped")
        .filter_map(|r| Some((r["started_at"].as_i64()?, r["ended_at"].as_i64()?)))
        .collect();
    ran.sort();
    for w in ran.windows(2) {
        assert!(w[0].1 <= w[1].0, "two runs overlapped: {w:?}");
    }
}

#[tokio::test]
async fn on_docker_a_job_runs_from_the_release_image_and_forbid_skips_overlaps() {
    let Some(caddy) = docker_and_caddy().await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let project = wharf_testkit::unique("cron");
    let app = tmp.path().join(&project);
    write_hello_app(&app, "0.0.0.0", "v1");
    // Every 2 s, each run 3 s long: every other one is skipped. Each appends to the
    // volume (mounted at /data) and prints the release's version and the count.
    std::fs::write(
        app.join("wharf.toml"),
        format!(
            r#"project = "{project}"

[services.web]
volumes = [{{ name = "data", mount = "/data" }}]

[[services.web.cron]]
name = "tick"
schedule = "*/2 * * * * *"
command = 'sleep 3 && echo "tick" >> /data/ticks && echo "ran $(cat version.txt), $(wc -l < /data/ticks) ticks"'
concurrency = "forbid"
timeout = "30s"
"#
        ),
    )
    .unwrap();
    let mut server = Server::start_on_docker(tmp.path(), &caddy, &[]);
    server.wait_ready(tmp.path()).await;
    let (ok, out) = server.cli(&["deploy", app.to_str().unwrap()]);
    assert!(ok, "wharf deploy on Docker failed:\n{out}");
    let r = runs_of_until(&server, &project, 90, |r| {
        succeeded(r).len() >= 2 && r.iter().any(|r| r["outcome"] == "skipped")
    })
    .await;
    let done = succeeded(&r);
    for d in &done {
        assert_eq!(d["exit_code"], 0, "{d}");
        assert!(last_line(d).starts_with("ran v1, "), "{d}");
    }
    // The volume keeps what earlier runs wrote.
    assert_ne!(last_line(done[0]), last_line(done[done.len() - 1]), "{r:?}");
    never_overlapped(&r);
    let (status, _) = server
        .call(
            reqwest::Method::DELETE,
            &format!("/projects/{project}?volumes=delete&confirm={project}"),
            Value::Null,
        )
        .await;
    assert!(status < 300, "deleting the project: {status}");
}

#[tokio::test]
async fn forbid_skips_a_run_while_the_previous_one_still_runs() {
    if !python_present() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // Each run takes 3 s, longer than the 2 s period.
    let server = deployed(tmp.path(), "sleep 3 && echo done", "forbid").await;
    let r = runs_until(&server, 40, |r| {
        succeeded(r).len() >= 2 && r.iter().any(|r| r["outcome"] == "skipped")
    })
    .await;
    let skipped = r.iter().find(|r| r["outcome"] == "skipped").unwrap();
    assert!(
        skipped["reason"]
            .as_str()
            .unwrap()
            .starts_with("the previous run (crn_"),
        "{skipped}"
    );
    assert!(
        skipped.get("exit_code").is_none(),
        "a skipped run never ran: {skipped}"
    );
    never_overlapped(&r);
    for d in succeeded(&r) {
        assert_eq!(last_line(d), "done", "{d}");
    }
}
