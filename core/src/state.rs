//! The deployment state machine, as a pure function.
//!
//! [`transition`] takes a state and an event and returns the next state, or an error
//! for an illegal move. The engine persists the new state (compare-and-set) before it
//! acts on it; nothing here has side effects.
//!
//! ```text
//! Queued -> Fetching -> Building -> [Releasing] -> Starting -> HealthChecking -> Routing -> Live
//!   |          \------------------------> [Releasing] -> Starting   (prebuilt image)
//!   \-----------------------------------> Starting   (rollback: artifact reused)
//! Releasing: the release command, when the service has one (Building --Release-->
//! Releasing --Released--> Starting; a prebuilt image enters it from Queued or Fetching)
//! any active state --Fail--> Failed{step, reason}
//! Queued..HealthChecking --Cancel--> Cancelled (Releasing too)
//! Queued --Supersede--> Superseded     Live --Supersede--> Superseded
//! Queued --Skip--> Skipped{reason}     Live --RollBack--> RolledBack
//! Live --Stop--> Stopped   (its service torn down: deleted, or its environment)
//! Routing --Canary--> Canary --Promote--> Live    Canary --Abort--> Cancelled
//! Canary --Fail--> Failed{canary, reason}
//! ```
//!
//! `Canary` is the last step before `Live`, but a parked one: the new release serves
//! a share of the traffic beside the live release until a person promotes or aborts
//! it, so it is not [`DeploymentState::is_active`] (nothing moves it by itself) and not
//! terminal either. It cannot be cancelled (there is nothing running to stop): it is
//! aborted.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The steps a deployment goes through before it is live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Waiting for its turn (one active deployment per service, build slots).
    Queued,
    /// Materialising the source.
    Fetching,
    /// Building the artifact.
    Building,
    /// Running the release command (migrations...) from the new artifact, before
    /// anything of the new release starts.
    Releasing,
    /// Starting the new instance.
    Starting,
    /// Waiting for the new instance to pass its health check.
    HealthChecking,
    /// Switching the route to the new instance.
    Routing,
    /// Serving a share of the traffic beside the live release, until promoted or
    /// aborted (a parked step: see [`DeploymentState::Canary`]).
    Canary,
}

impl Step {
    /// Every step, in order.
    pub const ALL: [Step; 8] = [
        Step::Queued,
        Step::Fetching,
        Step::Building,
        Step::Releasing,
        Step::Starting,
        Step::HealthChecking,
        Step::Routing,
        Step::Canary,
    ];

    /// The state of a deployment at this step.
    pub fn state(self) -> DeploymentState {
        match self {
            Step::Queued => DeploymentState::Queued,
            Step::Fetching => DeploymentState::Fetching,
            Step::Building => DeploymentState::Building,
            Step::Releasing => DeploymentState::Releasing,
            Step::Starting => DeploymentState::Starting,
            Step::HealthChecking => DeploymentState::HealthChecking,
            Step::Routing => DeploymentState::Routing,
            Step::Canary => DeploymentState::Canary,
        }
    }
}

impl fmt::Display for Step {
    /// A step's name is the name of the state at that step (`queued`, `fetching`, ...).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.state().name())
    }
}

/// Where a deployment is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "state", rename_all = "snake_case")]
#[non_exhaustive]
pub enum DeploymentState {
    /// Waiting for its turn.
    Queued,
    /// Materialising the source.
    Fetching,
    /// Building the artifact.
    Building,
    /// Running the release command.
    Releasing,
    /// Starting the new instance.
    Starting,
    /// Waiting for the new instance's health check.
    HealthChecking,
    /// Switching traffic to the new instance.
    Routing,
    /// Serving a share of the traffic (its [`crate::Deployment::canary`] percent, 0
    /// for blue-green) beside the live release, until promoted (it goes live, the
    /// old release is superseded) or aborted (it is cancelled, the old release keeps
    /// all the traffic).
    Canary,
    /// Serving traffic.
    Live,
    /// Failed at `step`; the previous release (if any) still serves.
    Failed {
        /// The step that failed.
        step: Step,
        /// Why, for people.
        reason: String,
    },
    /// Cancelled on request before it went live (a canary: aborted).
    Cancelled,
    /// Replaced: a queued request by a newer one, or a live release by a newer release.
    Superseded,
    /// A live release replaced by a rollback to an earlier one.
    RolledBack,
    /// A live release taken down with its service ([`crate::Engine::teardown`]):
    /// nothing of it runs any more, and no task or cron job starts from it.
    Stopped,
    /// Never started because a dependency failed to deploy.
    Skipped {
        /// Why, naming the dependency.
        reason: String,
    },
}

impl DeploymentState {
    /// The state's name (`queued`, `failed`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            DeploymentState::Queued => "queued",
            DeploymentState::Fetching => "fetching",
            DeploymentState::Building => "building",
            DeploymentState::Releasing => "releasing",
            DeploymentState::Starting => "starting",
            DeploymentState::HealthChecking => "health_checking",
            DeploymentState::Routing => "routing",
            DeploymentState::Canary => "canary",
            DeploymentState::Live => "live",
            DeploymentState::Failed { .. } => "failed",
            DeploymentState::Cancelled => "cancelled",
            DeploymentState::Superseded => "superseded",
            DeploymentState::RolledBack => "rolled_back",
            DeploymentState::Stopped => "stopped",
            DeploymentState::Skipped { .. } => "skipped",
        }
    }

    /// The step this state is, for the states before `Live` (`Canary` included).
    pub fn step(&self) -> Option<Step> {
        Some(match self {
            DeploymentState::Queued => Step::Queued,
            DeploymentState::Fetching => Step::Fetching,
            DeploymentState::Building => Step::Building,
            DeploymentState::Releasing => Step::Releasing,
            DeploymentState::Starting => Step::Starting,
            DeploymentState::HealthChecking => Step::HealthChecking,
            DeploymentState::Routing => Step::Routing,
            DeploymentState::Canary => Step::Canary,
            _ => return None,
        })
    }

    /// Whether the deployment is still on its way by itself (queued or in a step
    /// other than the parked `Canary`, which waits for a person).
    pub fn is_active(&self) -> bool {
        self.step().is_some_and(|s| s != Step::Canary)
    }

    /// Whether it serves traffic: `Live`, or a `Canary` beside the live release.
    pub fn is_serving(&self) -> bool {
        matches!(self, DeploymentState::Live | DeploymentState::Canary)
    }

    /// Whether no event can move it any more.
    pub fn is_terminal(&self) -> bool {
        !self.is_active() && !self.is_serving()
    }
}

impl fmt::Display for DeploymentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeploymentState::Failed { step, reason } => write!(f, "failed at {step}: {reason}"),
            DeploymentState::Skipped { reason } => write!(f, "skipped: {reason}"),
            other => f.write_str(other.name()),
        }
    }
}

/// What happened, moving a deployment on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum DeployEvent {
    /// Its turn came: start fetching.
    Begin,
    /// Source fetched: start building.
    Fetched,
    /// Artifact built: start the instance.
    Built,
    /// The artifact is already there (rollback, prebuilt image): start the instance.
    ArtifactReady,
    /// The artifact is there (built or prebuilt) and the service has a release
    /// command: run it.
    Release,
    /// The release command succeeded: start the instance.
    Released,
    /// Instance started: check its health.
    Started,
    /// Health check passed: switch the route.
    Healthy,
    /// Route switched: live.
    Routed,
    /// Route shared with the live release (a canary or blue-green deployment):
    /// serve beside it until promoted or aborted.
    Canary,
    /// The canary takes all the traffic: live.
    Promote,
    /// The canary is taken out of the route: the live release keeps serving.
    Abort,
    /// The current step failed.
    Fail {
        /// Why.
        reason: String,
    },
    /// Cancel requested.
    Cancel,
    /// A newer request or release replaces this one.
    Supersede,
    /// A rollback replaced this live release.
    RollBack,
    /// The live release's service is torn down.
    Stop,
    /// A dependency failed; this one will not run.
    Skip {
        /// Why.
        reason: String,
    },
}

impl DeployEvent {
    /// The event's name.
    pub fn name(&self) -> &'static str {
        match self {
            DeployEvent::Begin => "begin",
            DeployEvent::Fetched => "fetched",
            DeployEvent::Built => "built",
            DeployEvent::ArtifactReady => "artifact_ready",
            DeployEvent::Release => "release",
            DeployEvent::Released => "released",
            DeployEvent::Started => "started",
            DeployEvent::Healthy => "healthy",
            DeployEvent::Routed => "routed",
            DeployEvent::Canary => "canary",
            DeployEvent::Promote => "promote",
            DeployEvent::Abort => "abort",
            DeployEvent::Fail { .. } => "fail",
            DeployEvent::Cancel => "cancel",
            DeployEvent::Supersede => "supersede",
            DeployEvent::RollBack => "roll_back",
            DeployEvent::Stop => "stop",
            DeployEvent::Skip { .. } => "skip",
        }
    }
}

/// The next state after `event` in `state`, or [`crate::ErrorKind::Conflict`] if the
/// move is illegal. Pure: no side effects.
///
/// ```
/// use wharf_core::state::{transition, DeployEvent, DeploymentState, Step};
/// let s = transition(&DeploymentState::Queued, &DeployEvent::Begin).unwrap();
/// assert_eq!(s, DeploymentState::Fetching);
/// let f = transition(&s, &DeployEvent::Fail { reason: "no such branch".into() }).unwrap();
/// assert_eq!(f, DeploymentState::Failed { step: Step::Fetching, reason: "no such branch".into() });
/// assert!(transition(&f, &DeployEvent::Begin).is_err());
/// ```
pub fn transition(state: &DeploymentState, event: &DeployEvent) -> Result<DeploymentState> {
    use DeployEvent as E;
    use DeploymentState as S;
    let next = match (state, event) {
        (S::Queued, E::Begin) => S::Fetching,
        (S::Fetching, E::Fetched) => S::Building,
        (S::Building, E::Built) => S::Starting,
        (S::Queued | S::Fetching, E::ArtifactReady) => S::Starting,
        (S::Queued | S::Fetching | S::Building, E::Release) => S::Releasing,
        (S::Releasing, E::Released) => S::Starting,
        (S::Starting, E::Started) => S::HealthChecking,
        (S::HealthChecking, E::Healthy) => S::Routing,
        (S::Routing, E::Routed) => S::Live,
        (S::Routing, E::Canary) => S::Canary,
        (S::Canary, E::Promote) => S::Live,
        (S::Canary, E::Abort) => S::Cancelled,
        (s, E::Fail { reason }) if s.step().is_some() => S::Failed {
            step: s.step().expect("checked by the guard"),
            reason: reason.clone(),
        },
        (
            S::Queued | S::Fetching | S::Building | S::Releasing | S::Starting | S::HealthChecking,
            E::Cancel,
        ) => S::Cancelled,
        (S::Queued | S::Live, E::Supersede) => S::Superseded,
        (S::Live, E::RollBack) => S::RolledBack,
        (S::Live, E::Stop) => S::Stopped,
        (S::Queued, E::Skip { reason }) => S::Skipped {
            reason: reason.clone(),
        },
        (s, e) => {
            return Err(Error::conflict(format!(
                "illegal deployment transition: event {} in state {}",
                e.name(),
                s.name()
            )))
        }
    };
    Ok(next)
}
