//! SIGKILL the control plane at every step of a redeploy (and of a canary deploy and
//! its promotion), then check what a fresh one recovers: no deployment is left
//! mid-way, no instance is orphaned, exactly one release is live and the route points
//! at its instance (and, with a canary still out, at the canary's too, 90/10).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

use std::os::unix::process::ExitStatusExt;
use wharf_core::engine::RecoveryReport;
use wharf_core::store::SqliteStore;
use wharf_core::*;
use wharf_tests::crash::{CrashPoint, FileRouter, FileRuntime};

fn child(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_crash-child"))
        .arg(dir)
        .args(args)
        .output()
        .expect("run crash-child")
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

async fn check(point: CrashPoint) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let first = ok(child(dir, &["setup"]), "setup");

    let out = child(dir, &["deploy", point.name()]);
    assert_eq!(
        out.status.signal(),
        Some(9),
        "{}: the control plane should have died by SIGKILL, it ended {} ({})",
        point.name(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );

    // Before recovery: the crash really left a deployment mid-way.
    let store = SqliteStore::open(dir.join("wharf.db")).unwrap();
    let active = store
        .deployments(&DeploymentFilter {
            active_only: true,
            ..Default::default()
        })
        .await
        .unwrap();
    // Left in a step: all but a crash once the old release was being stopped, and
    // but a canary already out (parked, not active).
    let in_a_step = !matches!(
        point,
        CrashPoint::StopOld
            | CrashPoint::CanaryOut
            | CrashPoint::PromoteRoute
            | CrashPoint::PromoteStopOld
    );
    if in_a_step {
        assert_eq!(active.len(), 1, "{}: {active:?}", point.name());
    }

    let report: RecoveryReport =
        serde_json::from_str(&ok(child(dir, &["recover"]), "recover")).unwrap();

    let all = store
        .deployments(&DeploymentFilter::default())
        .await
        .unwrap();
    let unsettled: Vec<_> = all.iter().filter(|d| d.state.is_active()).collect();
    assert!(
        unsettled.is_empty(),
        "{}: deployments left mid-way: {unsettled:?}",
        point.name()
    );
    let live: Vec<_> = all
        .iter()
        .filter(|d| d.state == DeploymentState::Live)
        .collect();
    assert_eq!(live.len(), 1, "{}: live deployments {live:?}", point.name());
    let live = live[0];
    let new_is_live = live.id.as_str() != first;
    if point == CrashPoint::Release {
        // The release command may have done part of its work: recovery fails the
        // deployment saying so, and never runs the command again by itself.
        let failed: Vec<_> = all
            .iter()
            .filter(|d| matches!(&d.state, DeploymentState::Failed { step: Step::Releasing, reason } if reason.contains("not run again")))
            .collect();
        assert_eq!(failed.len(), 1, "release: {all:?}");
    }
    assert_eq!(
        new_is_live,
        point.new_release_wins(),
        "{}: the wrong release is live (report {report:?})",
        point.name()
    );
    // An interrupted deployment that was the newest request is failed and asked
    // for again, once: its retry is what went live.
    if point.retried() {
        assert_eq!(
            report.retried,
            std::slice::from_ref(&live.id),
            "{}",
            point.name()
        );
        let interrupted = live.retry_of.as_ref().expect("the live one is a retry");
        let failed = all.iter().find(|d| &d.id == interrupted).unwrap();
        assert!(
            matches!(&failed.state, DeploymentState::Failed { reason, .. } if reason.contains("interrupted")),
            "{}: {failed:?}",
            point.name()
        );
    } else {
        assert!(report.retried.is_empty(), "{}: {report:?}", point.name());
    }

    // A canary the crash left out stays out, beside the live release.
    let canaries: Vec<_> = all
        .iter()
        .filter(|d| d.state == DeploymentState::Canary)
        .collect();
    assert_eq!(
        canaries.len(),
        usize::from(point.canary_stays_out()),
        "{}: canaries {canaries:?}",
        point.name()
    );
    if point.canary_stays_out() {
        check_canary_out(dir, point, live, canaries[0], &report).await;
        return;
    }

    // No orphan: the runtime runs exactly the live instance.
    let inst = live
        .instance
        .as_ref()
        .expect("live deployment has an instance");
    let running: BTreeSet<String> = FileRuntime::state(dir)
        .unwrap()
        .instances
        .into_keys()
        .collect();
    assert_eq!(
        running,
        BTreeSet::from([inst.id.0.clone()]),
        "{}: instances after recovery (report {report:?})",
        point.name()
    );

    // The route serves the live instance.
    let routes = FileRouter::routes(dir).unwrap();
    assert_eq!(routes.len(), 1, "{}: {routes:?}", point.name());
    let route = routes.values().next().unwrap();
    assert_eq!(
        route
            .upstreams
            .iter()
            .map(|u| &u.endpoint)
            .collect::<Vec<_>>(),
        vec![&inst.endpoint],
        "{}: the route does not point at the live instance",
        point.name()
    );

    // A second recovery finds nothing to do.
    let again: RecoveryReport =
        serde_json::from_str(&ok(child(dir, &["recover"]), "recover again")).unwrap();
    assert_eq!(again, RecoveryReport::default(), "{}", point.name());
}

/// After a crash with a canary out: both releases' instances run (neither swept as
/// an orphan), the route shares the traffic 90/10, and a second recovery only keeps
/// the canary out.
async fn check_canary_out(
    dir: &Path,
    point: CrashPoint,
    live: &Deployment,
    canary: &Deployment,
    report: &RecoveryReport,
) {
    let name = point.name();
    let (old, new) = (
        live.instance.as_ref().unwrap(),
        canary.instance.as_ref().unwrap(),
    );
    let running: BTreeSet<String> = FileRuntime::state(dir)
        .unwrap()
        .instances
        .into_keys()
        .collect();
    assert_eq!(
        running,
        BTreeSet::from([old.id.0.clone(), new.id.0.clone()]),
        "{name}: instances after recovery (report {report:?})"
    );
    assert_eq!(report.canaries, vec![canary.id.clone()], "{name}");
    let routes = FileRouter::routes(dir).unwrap();
    assert_eq!(routes.len(), 1, "{name}: {routes:?}");
    let route = routes.values().next().unwrap();
    let shares: Vec<_> = route
        .upstreams
        .iter()
        .map(|u| (&u.endpoint, u.weight))
        .collect();
    assert_eq!(
        shares,
        vec![(&old.endpoint, 9), (&new.endpoint, 1)],
        "{name}: the route does not share the traffic 90/10"
    );
    let again: RecoveryReport =
        serde_json::from_str(&ok(child(dir, &["recover"]), "recover again")).unwrap();
    let expected = RecoveryReport {
        canaries: vec![canary.id.clone()],
        ..Default::default()
    };
    assert_eq!(again, expected, "{name}");
}

/// One test per crash point (so each fails on its own), all checked by [`check`].
macro_rules! crash_tests {
    ($($test:ident: $point:ident,)*) => {$(
        #[tokio::test]
        async fn $test() {
            check(CrashPoint::$point).await;
        }
    )*};
}

crash_tests! {
    crash_during_build: Build,
    crash_during_the_release_command: Release,
    crash_after_the_new_instance_started: AfterStart,
    crash_during_the_health_check: Health,
    crash_after_the_route_switched: AfterRoute,
    crash_while_retiring_the_old_release: StopOld,
    crash_while_routing_a_canary: CanaryRoute,
    crash_with_a_canary_out: CanaryOut,
    crash_after_a_promote_moved_the_route: PromoteRoute,
    crash_while_a_promote_retires_the_old_release: PromoteStopOld,
}
