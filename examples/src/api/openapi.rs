//! The OpenAPI 3.1 document served at `/openapi.json`, generated from the handlers'
//! `#[utoipa::path]` attributes and the [`crate::dto`] types as the router is built
//! ([`super::routes`]), so a route cannot exist without its entry, nor an entry
//! without its route. What the attributes cannot say is added here: the
//! `{environment}` parameter of every service route repeated under an environment,
//! unique operation ids for those, the bearer scheme, and links from the operations
//! that create things to the operations that use their ids.

use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ObjectBuilder, OpenApi, RefOr, Required, Type};

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
    for (path, item) in doc.paths.paths.iter_mut() {
        let scoped = path.contains(ENV_SERVICES);
        for op in operations(item) {
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

fn environment_param() -> Parameter {
    ParameterBuilder::new()
        .name("environment")
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some("The environment's name or id."))
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
        .build()
}

/// (operation, status) → links: (name, target operation, [(parameter, runtime expression)]).
type LinkSpec = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

const LINKS: &[(&str, &str, &[LinkSpec])] = &[
    (
        "create_project",
        "201",
        &[
            (
                "GetProject",
                "get_project",
                &[("project", "$response.body#/name")],
            ),
            (
                "ListServices",
                "list_services",
                &[("project", "$response.body#/name")],
            ),
            (
                "CreateEnvironment",
                "create_environment",
                &[("project", "$response.body#/name")],
            ),
        ],
    ),
    (
        "put_service",
        "201",
        &[
            (
                "GetService",
                "get_service",
                &[
                    ("project", "$request.path.project"),
                    ("service", "$response.body#/name"),
                ],
            ),
            (
                "Deploy",
                "deploy",
                &[
                    ("project", "$request.path.project"),
                    ("service", "$response.body#/name"),
                ],
            ),
        ],
    ),
    (
        "deploy",
        "202",
        &[
            (
                "GetDeployment",
                "get_deployment",
                &[("id", "$response.body#/id")],
            ),
            (
                "DeploymentEvents",
                "deployment_events",
                &[("id", "$response.body#/id")],
            ),
            (
                "CancelDeployment",
                "cancel_deployment",
                &[("id", "$response.body#/id")],
            ),
        ],
    ),
    (
        "rollback",
        "202",
        &[
            (
                "GetDeployment",
                "get_deployment",
                &[("id", "$response.body#/id")],
            ),
            (
                "DeploymentEvents",
                "deployment_events",
                &[("id", "$response.body#/id")],
            ),
        ],
    ),
    (
        "create_environment",
        "201",
        &[(
            "GetEnvironment",
            "get_environment",
            &[
                ("project", "$request.path.project"),
                ("environment", "$response.body#/name"),
            ],
        )],
    ),
    (
        "add_domain",
        "202",
        &[(
            "VerifyDomain",
            "verify_domain",
            &[
                ("project", "$request.path.project"),
                ("service", "$request.path.service"),
                ("domain", "$response.body#/domain"),
            ],
        )],
    ),
];

fn add_links(doc: &mut OpenApi) {
    for item in doc.paths.paths.values_mut() {
        for op in operations(item) {
            let Some(id) = op.operation_id.clone() else {
                continue;
            };
            for (source, status, links) in LINKS {
                if id != *source {
                    continue;
                }
                let Some(RefOr::T(resp)) = op.responses.responses.get_mut(*status) else {
                    continue;
                };
                for (name, target, params) in *links {
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
}
