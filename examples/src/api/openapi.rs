//! The OpenAPI 3.1 document served at `/openapi.json`, generated from the handlers'
//! `#[utoipa::path]` attributes and the [`crate::dto`] types as the router is built
//! ([`super::routes()`]), so a route cannot exist without its entry, nor an entry
//! without its route. What the attributes cannot say is added here: the
//! `{environment}` parameter of every service route repeated under an environment,
//! unique operation ids for those, the bearer scheme, every operation's error answer
//! (`default`: [`crate::dto::ErrorBody`]), and links from the operations that create
//! things to the operations that use their ids.

use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ObjectBuilder, OpenApi, Ref, RefOr, Required, Type};

/// A project: its name or id.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // read by utoipa only
pub(crate) struct ProjectParams {
    /// The project's name or id.
    project: String,
}

/// A service of a project: names or ids.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // read by utoipa only
pub(crate) struct ServiceParams {
    /// The project's name or id.
    project: String,
    /// The service's name or id.
    service: String,
}

/// A custom domain of a service.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // read by utoipa only
pub(crate) struct DomainParams {
    /// The project's name or id.
    project: String,
    /// The service's name or id.
    service: String,
    /// The domain.
    domain: String,
}

/// An environment of a project.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // read by utoipa only
pub(crate) struct EnvironmentParams {
    /// The project's name or id.
    project: String,
    /// The environment's name or id.
    environment: String,
}

/// A deployment.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // read by utoipa only
pub(crate) struct DeploymentParams {
    /// The deployment's id.
    id: String,
}

/// The document's frame: title, version, the bearer scheme.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Wharf API", description = "Deploy apps from git, an upload or an image; \
        roles per project: viewer < developer < owner; the operator creates projects. \
        Each operation's `security` names the least role it needs."),
    security(("bearer" = [])),
    components(schemas(crate::dto::ErrorBody))
)]
pub(crate) struct Frame;

/// Where environment services live.
const ENV_SERVICES: &str = "/environments/{environment}/services/{service}";

/// Completes the generated document (see the module docs).
pub(crate) fn finish(mut doc: OpenApi) -> OpenApi {
    let components = doc.components.get_or_insert_with(Default::default);
    components.security_schemes.insert(
        "bearer".into(),
        RefOr::T(SecurityScheme::Http(
            HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build(),
        )),
    );
    let error = error_response();
    for (path, item) in doc.paths.paths.iter_mut() {
        let scoped = path.contains(ENV_SERVICES);
        for op in operations(item) {
            op.responses
                .responses
                .insert("default".into(), RefOr::T(error.clone()));
            if scoped {
                op.operation_id = op
                    .operation_id
                    .take()
                    .map(|id| format!("{id}_in_environment"));
                let params = op.parameters.get_or_insert_with(Vec::new);
                let at = params
                    .iter()
                    .position(|p| matches!(p, RefOr::T(p) if p.name == "project"))
                    .map_or(0, |i| i + 1);
                params.insert(at, RefOr::T(environment_param()));
            }
        }
    }
    add_links(&mut doc);
    doc
}

fn operations(item: &mut utoipa::openapi::PathItem) -> Vec<&mut utoipa::openapi::path::Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.patch,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
    .collect()
}

/// Every operation's other answers: an error with a stable code.
fn error_response() -> Response {
    let body = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("ErrorBody")))
        .build();
    ResponseBuilder::new()
        .description("An error with a stable code")
        .content("application/json", body)
        .build()
}

fn environment_param() -> Parameter {
    ParameterBuilder::new()
        .name("environment")
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some("The environment's name or id."))
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
        .build()
}

/// Runtime expressions that links take their parameters from.
const BODY_NAME: &str = "$response.body#/name";
const BODY_ID: &str = "$response.body#/id";
const BODY_DOMAIN: &str = "$response.body#/domain";
const PATH_PROJECT: &str = "$request.path.project";
const PATH_SERVICE: &str = "$request.path.service";

/// A link: from (operation, status), its name, the target operation and its
/// parameters as (name, runtime expression).
type Link = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

#[rustfmt::skip]
const LINKS: &[Link] = &[
    ("create_project", "201", "GetProject", "get_project", &[("project", BODY_NAME)]),
    ("create_project", "201", "ListServices", "list_services", &[("project", BODY_NAME)]),
    ("create_project", "201", "CreateEnvironment", "create_environment", &[("project", BODY_NAME)]),
    ("put_service", "201", "GetService", "get_service", &[("project", PATH_PROJECT), ("service", BODY_NAME)]),
    ("put_service", "201", "Deploy", "deploy", &[("project", PATH_PROJECT), ("service", BODY_NAME)]),
    ("deploy", "202", "GetDeployment", "get_deployment", &[("id", BODY_ID)]),
    ("deploy", "202", "DeploymentEvents", "deployment_events", &[("id", BODY_ID)]),
    ("deploy", "202", "CancelDeployment", "cancel_deployment", &[("id", BODY_ID)]),
    ("rollback", "202", "GetDeployment", "get_deployment", &[("id", BODY_ID)]),
    ("rollback", "202", "DeploymentEvents", "deployment_events", &[("id", BODY_ID)]),
    ("create_environment", "201", "GetEnvironment", "get_environment", &[("project", PATH_PROJECT), ("environment", BODY_NAME)]),
    ("add_domain", "202", "VerifyDomain", "verify_domain", &[("project", PATH_PROJECT), ("service", PATH_SERVICE), ("domain", BODY_DOMAIN)]),
];

fn add_links(doc: &mut OpenApi) {
    for item in doc.paths.paths.values_mut() {
        for op in operations(item) {
            let Some(id) = op.operation_id.clone() else {
                continue;
            };
            for (_, status, name, target, params) in LINKS.iter().filter(|l| l.0 == id) {
                let Some(RefOr::T(resp)) = op.responses.responses.get_mut(*status) else {
                    continue;
                };
                let link = params
                    .iter()
                    .fold(LinkBuilder::new().operation_id(*target), |b, (p, e)| {
                        b.parameter(*p, *e)
                    })
                    .build();
                resp.links.insert((*name).to_owned(), RefOr::T(link));
            }
        }
    }
}
