//! Look-ups of one record: a project, an environment or a service by name, an
//! environment or a release by id.
//!
//! Every store must answer them from its own records (the SQL stores with indexed
//! queries), give back exactly what was stored (secrets included) and say NotFound
//! for nothing, as [`Store::project`] and [`Store::service`] do for an unknown id.

use super::*;

#[track_caller]
fn not_found<T: Debug>(r: Result<T>, what: &str) {
    expect_err(r, ErrorKind::NotFound, what);
}

/// Projects by name: found as stored, NotFound for an unknown name or an id, the new
/// name (not the old one) after a rename, nothing after a delete.
pub async fn project_by_name(store: &dyn Store) {
    let p = new_project(store).await;
    let other = new_project(store).await;
    assert_eq!(
        ok(store.project_by_name(&p.name).await, "project_by_name"),
        p,
        "store conformance: project_by_name must return the project as stored (secrets included)"
    );
    assert_eq!(
        ok(store.project_by_name(&other.name).await, "project_by_name").id,
        other.id,
        "store conformance: project_by_name must return the project with that name"
    );
    not_found(
        store.project_by_name(&unique_name("nope")).await,
        "project_by_name of an unknown name",
    );
    not_found(
        store.project_by_name(p.id.as_str()).await,
        "project_by_name of a project's id (an id is not a name)",
    );

    let mut renamed = p.clone();
    renamed.name = unique_name("r");
    ok(store.put_project(&renamed).await, "put_project (rename)");
    assert_eq!(
        ok(
            store.project_by_name(&renamed.name).await,
            "project_by_name (new name)"
        ),
        renamed,
        "store conformance: project_by_name must find a renamed project by its new name"
    );
    not_found(
        store.project_by_name(&p.name).await,
        "project_by_name of a project's old name after a rename",
    );

    ok(store.delete_project(&renamed.id).await, "delete_project");
    not_found(
        store.project_by_name(&renamed.name).await,
        "project_by_name of a deleted project",
    );
}

/// Environments by id and by name: found as stored (kind and secrets included), by
/// name only in the project asked for (not another project's namesake); NotFound for
/// an unknown id or name, a name given as id or an id given as name; the new name
/// (not the old one) after a rename; nothing after a delete, of the environment or of
/// its project, while other environments stay.
pub async fn environment_lookups(store: &dyn Store) {
    environment_scopes(store).await;
    environment_changes(store).await;
}

/// `store.environment(id)` and `store.environment_by_name(project, name)`, which must
/// both succeed and agree; returns what they found.
async fn env_found(store: &dyn Store, e: &Environment) -> Environment {
    let by_id = ok(store.environment(&e.id).await, "environment(id)");
    let by_name = ok(
        store.environment_by_name(&e.project, &e.name).await,
        &format!("environment_by_name({:?})", e.name),
    );
    assert_eq!(
        by_id, by_name,
        "store conformance: environment(id) and environment_by_name must return the same \
         environment"
    );
    by_id
}

async fn environment_scopes(store: &dyn Store) {
    let p = new_project(store).await;
    let q = new_project(store).await;
    let preview = preview_environment(&p.id, "pr-7", 7, "feature/y", Timestamp(3));
    ok(store.put_environment(&preview).await, "put_environment");
    let staging = new_environment(store, &p.id, "staging").await;
    let elsewhere = new_environment(store, &q.id, "staging").await;
    let q_only = new_environment(store, &q.id, "production").await;

    for e in [&preview, &staging, &elsewhere, &q_only] {
        assert_eq!(
            &env_found(store, e).await,
            e,
            "store conformance: environment look-ups must return the environment as \
             stored (kind and secrets included)"
        );
    }
    assert_eq!(
        ok(
            store.environment_by_name(&q.id, "staging").await,
            "environment_by_name"
        )
        .id,
        elsewhere.id,
        "store conformance: environment_by_name must look in the project asked for"
    );

    let unknown_project = ProjectId::random();
    for (project, name, what) in [
        (&p.id, "production", "another project's environment name"),
        (&p.id, "nope", "an unknown name"),
        (&p.id, staging.id.as_str(), "an environment's id"),
        (&unknown_project, "staging", "an unknown project"),
    ] {
        not_found(
            store.environment_by_name(project, name).await,
            &format!("environment_by_name of {what}"),
        );
    }
    for (id, what) in [
        (EnvironmentId::random(), "an unknown id"),
        (EnvironmentId(staging.name.clone()), "an environment's name"),
        (EnvironmentId(p.id.0.clone()), "a project's id"),
    ] {
        not_found(
            store.environment(&id).await,
            &format!("environment of {what}"),
        );
    }
}

/// `env` is gone: NotFound by id and by (project and) name, after `why`.
async fn env_gone(store: &dyn Store, env: &Environment, why: &str) {
    not_found(
        store.environment(&env.id).await,
        &format!("environment of {why}"),
    );
    not_found(
        store.environment_by_name(&env.project, &env.name).await,
        &format!("environment_by_name of {why}"),
    );
}

async fn environment_changes(store: &dyn Store) {
    let p = new_project(store).await;
    let q = new_project(store).await;
    let staging = new_environment(store, &p.id, "staging").await;
    let production = new_environment(store, &p.id, "production").await;
    let elsewhere = new_environment(store, &q.id, "staging").await;

    let renamed = renamed_environment(store, &staging, "qa").await;
    assert_eq!(
        env_found(store, &renamed).await,
        renamed,
        "store conformance: environment look-ups must see a rename"
    );
    not_found(
        store.environment_by_name(&p.id, "staging").await,
        "environment_by_name of an environment's old name after a rename",
    );
    assert_eq!(env_found(store, &elsewhere).await, elsewhere);

    ok(
        store.delete_environment(&renamed.id).await,
        "delete_environment",
    );
    env_gone(store, &renamed, "a deleted environment").await;
    assert_eq!(
        env_found(store, &production).await,
        production,
        "store conformance: deleting an environment must leave the project's others"
    );

    ok(store.delete_project(&q.id).await, "delete_project");
    env_gone(store, &elsewhere, "a deleted project's environment").await;
    assert_eq!(env_found(store, &production).await, production);
}

/// Services by name: scoped to the project and to the environment asked for (the
/// project's own services with `None`), with no fallback from an environment to the
/// project's own; NotFound for an unknown name, an id, another project's service;
/// the new name (not the old one) after a rename, nothing after a delete.
pub async fn service_by_name(store: &dyn Store) {
    service_scopes(store).await;
    service_changes(store).await;
}

/// `store.service_by_name(project, env, name)`, which must succeed.
async fn found(
    store: &dyn Store,
    project: &ProjectId,
    env: Option<&EnvironmentId>,
    name: &str,
) -> Service {
    ok(
        store.service_by_name(project, env, name).await,
        &format!("service_by_name({name:?}, environment {env:?})"),
    )
}

async fn service_scopes(store: &dyn Store) {
    let p = new_project(store).await;
    let q = new_project(store).await;
    let staging = new_environment(store, &p.id, "staging").await;
    let own = new_service(store, &p.id, "web", None).await;
    let in_env = new_service(store, &p.id, "web", Some(&staging.id)).await;
    let own_only = new_service(store, &p.id, "api", None).await;
    let env_only = new_service(store, &p.id, "worker", Some(&staging.id)).await;
    let elsewhere = new_service(store, &q.id, "web", None).await;
    let staging = Some(&staging.id);

    assert_eq!(
        found(store, &p.id, None, "web").await,
        own,
        "store conformance: service_by_name without an environment must return the \
         project's own service, as stored (secrets included)"
    );
    assert_eq!(
        found(store, &p.id, staging, "web").await,
        in_env,
        "store conformance: service_by_name in an environment must return that \
         environment's service, not the project's namesake"
    );
    assert_eq!(found(store, &p.id, None, "api").await, own_only);
    assert_eq!(found(store, &p.id, staging, "worker").await, env_only);
    assert_eq!(
        found(store, &q.id, None, "web").await,
        elsewhere,
        "store conformance: service_by_name must look in the project asked for"
    );

    let (unknown_project, unknown_env) = (ProjectId::random(), EnvironmentId::random());
    for (project, env, name, what) in [
        (
            &p.id,
            staging,
            "api",
            "a project-level name in an environment",
        ),
        (
            &p.id,
            None,
            "worker",
            "an environment's name at project level",
        ),
        (&p.id, None, "nope", "an unknown name"),
        (&p.id, None, own.id.as_str(), "a service's id"),
        (&q.id, staging, "web", "another project's environment"),
        (&p.id, Some(&unknown_env), "web", "an unknown environment"),
        (&unknown_project, None, "web", "an unknown project"),
    ] {
        not_found(
            store.service_by_name(project, env, name).await,
            &format!("service_by_name of {what}"),
        );
    }
}

async fn service_changes(store: &dyn Store) {
    let p = new_project(store).await;
    let staging = new_environment(store, &p.id, "staging").await;
    let own = new_service(store, &p.id, "web", None).await;
    let in_env = new_service(store, &p.id, "web", Some(&staging.id)).await;

    let mut renamed = own.clone();
    renamed.name = "site".into();
    ok(store.put_service(&renamed).await, "put_service (rename)");
    assert_eq!(found(store, &p.id, None, "site").await, renamed);
    not_found(
        store.service_by_name(&p.id, None, "web").await,
        "service_by_name of a service's old name after a rename",
    );
    assert_eq!(
        found(store, &p.id, Some(&staging.id), "web").await,
        in_env,
        "store conformance: renaming the project's own service must not touch the \
         environment's namesake"
    );

    ok(
        store.delete_environment(&staging.id).await,
        "delete_environment",
    );
    not_found(
        store.service_by_name(&p.id, Some(&staging.id), "web").await,
        "service_by_name in a deleted environment",
    );
    ok(store.delete_service(&renamed.id).await, "delete_service");
    not_found(
        store.service_by_name(&p.id, None, "site").await,
        "service_by_name of a deleted service",
    );
}

/// Releases by id: found as stored (its configuration's secrets included), NotFound
/// for an unknown id or another record's id, nothing once its service is deleted.
pub async fn release_by_id(store: &dyn Store) {
    let p = new_project(store).await;
    let s = new_service(store, &p.id, "web", None).await;
    let t = new_service(store, &p.id, "worker", None).await;
    let d = new_deployment(store, &s).await;
    let e = new_deployment(store, &t).await;
    let r1 = release(&s, &d.id, 1);
    let r2 = release(&s, &d.id, 2);
    let other = release(&t, &e.id, 1);
    for r in [&r1, &r2, &other] {
        ok(store.insert_release(r).await, "insert_release");
    }
    for r in [&r1, &r2, &other] {
        assert_eq!(
            &ok(store.release(&r.id).await, "release"),
            r,
            "store conformance: release(id) must return the release as stored (its \
             configuration's secrets included)"
        );
    }
    not_found(
        store.release(&ReleaseId::random()).await,
        "release of an unknown id",
    );
    not_found(
        store.release(&ReleaseId(d.id.0.clone())).await,
        "release of a deployment's id",
    );

    ok(store.delete_service(&s.id).await, "delete_service");
    not_found(store.release(&r1.id).await, "release of a deleted service");
    assert_eq!(
        ok(store.release(&other.id).await, "release of another service"),
        other,
        "store conformance: deleting a service must leave other services' releases"
    );
}
