//! Exhaustive tests of the deployment state machine: every (state, event) pair against
//! a table written from the diagram in `wharf_core::state`, independently of the code.

use wharf_core::state::transition;
use wharf_core::{DeployEvent, DeploymentState, ErrorKind, Step};

const REASON: &str = "sample reason";

/// The active states, in step order.
fn active_states() -> [DeploymentState; 7] {
    use DeploymentState as S;
    [
        S::Queued,
        S::Fetching,
        S::Building,
        S::Releasing,
        S::Starting,
        S::HealthChecking,
        S::Routing,
    ]
}

/// The states that are a step: the active ones and the parked `Canary`, in step order.
fn stepped_states() -> Vec<DeploymentState> {
    let mut states = active_states().to_vec();
    states.push(DeploymentState::Canary);
    states
}

/// Every state: the unit ones, `Failed` at each step, `Skipped` with a sample reason.
fn all_states() -> Vec<DeploymentState> {
    use DeploymentState as S;
    let mut states = stepped_states();
    states.extend([
        S::Live,
        S::Cancelled,
        S::Superseded,
        S::RolledBack,
        S::Stopped,
        S::Skipped {
            reason: REASON.into(),
        },
    ]);
    for step in Step::ALL {
        states.push(S::Failed {
            step,
            reason: REASON.into(),
        });
    }
    states
}

/// Every event (with a sample reason where it carries one).
fn all_events() -> Vec<DeployEvent> {
    use DeployEvent as E;
    vec![
        E::Begin,
        E::Fetched,
        E::Built,
        E::ArtifactReady,
        E::Release,
        E::Released,
        E::Started,
        E::Healthy,
        E::Routed,
        E::Canary,
        E::Promote,
        E::Abort,
        E::Fail {
            reason: REASON.into(),
        },
        E::Cancel,
        E::Supersede,
        E::RollBack,
        E::Stop,
        E::Skip {
            reason: REASON.into(),
        },
    ]
}

/// The legal moves, as the module's diagram draws them:
///
/// ```text
/// Queued -> Fetching -> Building -> [Releasing] -> Starting -> HealthChecking -> Routing -> Live
///   |          \------------------------> [Releasing] -> Starting   (prebuilt image)
///   \-----------------------------------> Starting   (rollback: artifact reused)
/// Building|Queued|Fetching --Release--> Releasing --Released--> Starting
/// any active state, and Canary --Fail--> Failed{step, reason}
/// Queued..HealthChecking (Releasing included) --Cancel--> Cancelled
/// Queued --Supersede--> Superseded     Live --Supersede--> Superseded
/// Queued --Skip--> Skipped{reason}     Live --RollBack--> RolledBack
/// Live --Stop--> Stopped
/// Routing --Canary--> Canary --Promote--> Live     Canary --Abort--> Cancelled
/// ```
fn legal() -> Vec<(DeploymentState, DeployEvent, DeploymentState)> {
    use DeployEvent as E;
    use DeploymentState as S;
    let fail = || E::Fail {
        reason: REASON.into(),
    };
    let failed = |step| S::Failed {
        step,
        reason: REASON.into(),
    };
    let active = active_states();
    // Failure at every step (the parked canary included).
    let failures = stepped_states().into_iter().zip(Step::ALL);
    let failures = failures.map(|(state, step)| (state, fail(), failed(step)));
    // Cancel, up to (not including) routing.
    let cancels = active[..6]
        .iter()
        .map(|s| (s.clone(), E::Cancel, S::Cancelled));
    let mut rows: Vec<_> = failures.chain(cancels).collect();
    rows.extend([
        // The happy path.
        (S::Queued, E::Begin, S::Fetching),
        (S::Fetching, E::Fetched, S::Building),
        (S::Building, E::Built, S::Starting),
        (S::Starting, E::Started, S::HealthChecking),
        (S::HealthChecking, E::Healthy, S::Routing),
        (S::Routing, E::Routed, S::Live),
        // Canary and blue-green: share the route, then promote or abort.
        (S::Routing, E::Canary, S::Canary),
        (S::Canary, E::Promote, S::Live),
        (S::Canary, E::Abort, S::Cancelled),
        // Skipping the build: prebuilt image (after fetch), rollback (from the queue).
        (S::Fetching, E::ArtifactReady, S::Starting),
        (S::Queued, E::ArtifactReady, S::Starting),
        // The release command: after a build, or before a prebuilt image starts.
        (S::Building, E::Release, S::Releasing),
        (S::Fetching, E::Release, S::Releasing),
        (S::Queued, E::Release, S::Releasing),
        (S::Releasing, E::Released, S::Starting),
        // Supersede, skip, roll back.
        (S::Queued, E::Supersede, S::Superseded),
        (S::Live, E::Supersede, S::Superseded),
        (
            S::Queued,
            E::Skip {
                reason: REASON.into(),
            },
            S::Skipped {
                reason: REASON.into(),
            },
        ),
        (S::Live, E::RollBack, S::RolledBack),
        // Torn down with its service.
        (S::Live, E::Stop, S::Stopped),
    ]);
    rows
}

fn expected(state: &DeploymentState, event: &DeployEvent) -> Option<DeploymentState> {
    legal()
        .into_iter()
        .find(|(s, e, _)| s == state && e == event)
        .map(|(_, _, next)| next)
}

#[test]
fn enumerations_are_complete_and_distinct() {
    // 15 state kinds (Failed once per step) and 18 event kinds, all names distinct.
    let states = all_states();
    assert_eq!(states.len(), 14 + Step::ALL.len());
    let mut names: Vec<&str> = states.iter().map(|s| s.name()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), 15);
    let mut events: Vec<&str> = all_events().iter().map(|e| e.name()).collect();
    events.sort_unstable();
    events.dedup();
    assert_eq!(events.len(), 18);
    // The table only uses states and events from the enumerations.
    for (s, e, next) in legal() {
        assert!(
            states.contains(&s) && states.contains(&next),
            "{s:?} / {next:?}"
        );
        assert!(all_events().contains(&e), "{e:?}");
    }
}

#[test]
fn every_state_event_pair() {
    let mut legal_seen = 0;
    let mut illegal_seen = 0;
    for state in all_states() {
        for event in all_events() {
            let got = transition(&state, &event);
            match expected(&state, &event) {
                Some(next) => {
                    legal_seen += 1;
                    let got = got.unwrap_or_else(|e| {
                        panic!("{event:?} in {state:?} should be legal, got {e}")
                    });
                    assert_eq!(got, next, "{event:?} in {state:?}");
                }
                None => {
                    illegal_seen += 1;
                    let err = match got {
                        Ok(next) => {
                            panic!("{event:?} in {state:?} should be illegal, got {next:?}")
                        }
                        Err(err) => err,
                    };
                    assert_eq!(err.kind(), ErrorKind::Conflict, "{event:?} in {state:?}");
                    let msg = err.message();
                    assert!(
                        msg.contains(&format!("event {}", event.name())),
                        "{msg:?} should name event {}",
                        event.name()
                    );
                    assert!(
                        msg.contains(&format!("state {}", state.name())),
                        "{msg:?} should name state {}",
                        state.name()
                    );
                }
            }
        }
    }
    assert_eq!(
        legal_seen,
        legal().len(),
        "every table row was exercised once"
    );
    assert_eq!(
        legal_seen + illegal_seen,
        all_states().len() * all_events().len()
    );
}

#[test]
fn no_event_is_legal_from_a_terminal_state() {
    let terminal: Vec<DeploymentState> = all_states()
        .into_iter()
        .filter(|s| s.is_terminal())
        .collect();
    // Failed (x8), Cancelled, Superseded, RolledBack, Stopped, Skipped.
    assert_eq!(terminal.len(), Step::ALL.len() + 5);
    for state in &terminal {
        assert!(!state.is_active());
        assert_eq!(state.step(), None);
        for event in all_events() {
            let err = transition(state, &event).expect_err("terminal states do not move");
            assert_eq!(err.kind(), ErrorKind::Conflict);
        }
    }
}

#[test]
fn activity_and_terminality_match_the_diagram() {
    use DeploymentState as S;
    for state in all_states() {
        let active = matches!(
            state,
            S::Queued
                | S::Fetching
                | S::Building
                | S::Releasing
                | S::Starting
                | S::HealthChecking
                | S::Routing
        );
        assert_eq!(state.is_active(), active, "{state:?}");
        let serving = matches!(state, S::Live | S::Canary);
        assert_eq!(state.is_serving(), serving, "{state:?}");
        assert_eq!(state.is_terminal(), !active && !serving, "{state:?}");
        // Every non-terminal state has at least one legal move.
        let moves = all_events()
            .iter()
            .filter(|e| transition(&state, e).is_ok())
            .count();
        assert_eq!(moves > 0, !state.is_terminal(), "{state:?}");
    }
}

#[test]
fn fail_records_the_step_it_failed_at() {
    for step in Step::ALL {
        let state = step.state();
        assert_eq!(state.step(), Some(step));
        let reason = format!("boom at {step}");
        let next = transition(
            &state,
            &DeployEvent::Fail {
                reason: reason.clone(),
            },
        )
        .unwrap();
        assert_eq!(
            next,
            DeploymentState::Failed {
                step,
                reason: reason.clone()
            }
        );
        assert_eq!(next.to_string(), format!("failed at {step}: {reason}"));
    }
}

#[test]
fn skip_keeps_its_reason() {
    let next = transition(
        &DeploymentState::Queued,
        &DeployEvent::Skip {
            reason: "dependency db failed".into(),
        },
    )
    .unwrap();
    assert_eq!(
        next,
        DeploymentState::Skipped {
            reason: "dependency db failed".into()
        }
    );
    assert_eq!(next.to_string(), "skipped: dependency db failed");
}

#[test]
fn release_path_walk() {
    use DeployEvent as E;
    let mut state = DeploymentState::Queued;
    let mut seen = Vec::new();
    for event in [
        E::Begin,
        E::Fetched,
        E::Release,
        E::Released,
        E::Started,
        E::Healthy,
        E::Routed,
    ] {
        state = transition(&state, &event).unwrap();
        seen.push(state.name());
    }
    assert_eq!(
        seen,
        [
            "fetching",
            "building",
            "releasing",
            "starting",
            "health_checking",
            "routing",
            "live"
        ]
    );
    // Built goes straight to starting: a service without a release command.
    let s = transition(&DeploymentState::Building, &E::Built).unwrap();
    assert_eq!(s, DeploymentState::Starting);
    // A release that fails leaves a failure at the releasing step.
    let f = transition(
        &DeploymentState::Releasing,
        &E::Fail {
            reason: "exit code 1".into(),
        },
    )
    .unwrap();
    assert_eq!(f.to_string(), "failed at releasing: exit code 1");
}

#[test]
fn canary_walks() {
    use DeployEvent as E;
    use DeploymentState as S;
    let canary = transition(&S::Routing, &E::Canary).unwrap();
    assert_eq!(canary.name(), "canary");
    // Parked: it waits for a person, so it is neither active nor terminal, and a
    // cancel (meant for running deployments) does not apply: it is aborted.
    assert!(!canary.is_active() && !canary.is_terminal() && canary.is_serving());
    assert!(transition(&canary, &E::Cancel).is_err());
    assert!(transition(&canary, &E::Routed).is_err());
    assert_eq!(transition(&canary, &E::Promote).unwrap(), S::Live);
    assert_eq!(transition(&canary, &E::Abort).unwrap(), S::Cancelled);
    let f = transition(
        &canary,
        &E::Fail {
            reason: "its instances are gone".into(),
        },
    )
    .unwrap();
    assert_eq!(f.to_string(), "failed at canary: its instances are gone");
    // Only a deployment being routed becomes a canary; a live one is not promoted.
    assert!(transition(&S::Live, &E::Promote).is_err());
    assert!(transition(&S::HealthChecking, &E::Canary).is_err());
}

#[test]
fn happy_path_walk() {
    use DeployEvent as E;
    let mut state = DeploymentState::Queued;
    for event in [
        E::Begin,
        E::Fetched,
        E::Built,
        E::Started,
        E::Healthy,
        E::Routed,
    ] {
        state = transition(&state, &event).unwrap();
    }
    assert_eq!(state, DeploymentState::Live);
    assert!(!state.is_terminal());
    assert_eq!(
        transition(&state, &E::RollBack).unwrap(),
        DeploymentState::RolledBack
    );
}

/// `value` reads back from its JSON, which is internally tagged by `tag` with `name`.
#[track_caller]
fn assert_tagged_round_trip<T>(value: &T, tag: &str, name: &str)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let json = serde_json::to_string(value).unwrap();
    let back: T = serde_json::from_str(&json).unwrap();
    assert_eq!(&back, value, "{json}");
    let tagged: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(tagged[tag], name, "{json}");
}

#[test]
fn serde_round_trip_of_every_state() {
    for state in all_states() {
        assert_tagged_round_trip(&state, "state", state.name());
    }
    assert_eq!(
        serde_json::to_value(DeploymentState::Failed {
            step: Step::HealthChecking,
            reason: "timeout".into()
        })
        .unwrap(),
        serde_json::json!({"state": "failed", "step": "health_checking", "reason": "timeout"})
    );
}

#[test]
fn serde_round_trip_of_every_event() {
    for event in all_events() {
        assert_tagged_round_trip(&event, "event", event.name());
    }
    for step in Step::ALL {
        let json = serde_json::to_string(&step).unwrap();
        assert_eq!(json, format!("\"{step}\""));
        assert_eq!(serde_json::from_str::<Step>(&json).unwrap(), step);
    }
}
