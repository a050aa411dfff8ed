//! Zero-config detection: what kind of project a folder holds, and how to build it.
//!
//! [`detect`] looks at the files at the root of a source folder and returns a
//! [`BuildPlan`]: base image, install and build commands, start command and port.
//! [`resolve_plan`] turns a service's [`BuildSpec`] into a plan (detecting when asked
//! to), and [`render_dockerfile`] writes the plan as a Dockerfile, with base images
//! mapped through an [`ImageMap`] to the images the operator really has.
//!
//! The first rule that matches wins:
//!
//! | Kind | Found | Base image | Install | Build | Start | Port |
//! |---|---|---|---|---|---|---|
//! | Dockerfile | `Dockerfile` | its first `FROM` | | | (its own `CMD`) | its last `EXPOSE`, else 8080 |
//! | Node | `package.json` | `node:<engines.node major, else 20>-slim` | `npm ci` with `package-lock.json`, else `npm install`; none without dependencies | `npm run build` if `scripts.build` | `npm start` if `scripts.start` (run directly when it is a plain `node ...` command without `prestart`/`poststart`), else `node <main, index.js or server.js>` | 3000 |
//! | Python | `requirements.txt`, `pyproject.toml`, `app.py` or `main.py` | `python:<.python-version or runtime.txt, else 3.12>-slim` | `pip install --no-cache-dir -r requirements.txt` (none if it lists nothing), else `pip install --no-cache-dir .` with `pyproject.toml`, else none | | `python3 <app.py, main.py, server.py or wsgi.py>`, else Django's `manage.py runserver`, else the first `[project.scripts]` entry | 8000 |
//! | Go | `go.mod` | `golang:<go directive>` | | `go build -o /app/server .` | `/app/server` | 8080 |
//! | Rust | `Cargo.toml` | `rust:1-slim` | | `cargo build --release [--locked if Cargo.lock]` | `./target/release/<package name>` | 8080 |
//! | Static | `index.html` at the root, in `public/` or in `dist/` | `busybox:stable` | | | `httpd -f -p 8080 -h /app[/public or /dist]` | 8080 |
//!
//! A `Procfile` `web:` line replaces the start command of any kind but Dockerfile;
//! shell syntax in it (such as `$PORT`) is kept and run through `sh -c`. Its other
//! lines (`release:`, `worker:`, any name) become the plan's
//! [`BuildPlan::processes`], for every kind. Start
//! commands are in exec form (argv). Python start commands use `python3`, so images
//! where only `python3` exists (Debian's) work too, and a Python app with no
//! requirements needs no `pip`.
//!
//! ```
//! use wharf_core::detect::{detect, render_dockerfile, ImageMap};
//! use wharf_core::ProjectKind;
//!
//! // A throw-away folder holding a stdlib-only Python app.
//! let dir = std::env::temp_dir().join(format!("wharf-detect-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! std::fs::write(dir.join("app.py"), "print('hello')\n").unwrap();
//!
//! let plan = detect(&dir).unwrap();
//! assert_eq!(plan.kind, ProjectKind::Python);
//! assert_eq!(plan.base_image, "python:3.12-slim");
//! assert!(plan.install.is_empty());
//! assert_eq!(plan.start, ["python3", "app.py"]);
//! assert_eq!(plan.port, 8000);
//!
//! let images = ImageMap::new().with("python", "wharf/debian:bookworm");
//! let dockerfile = render_dockerfile(&plan, &images).unwrap();
//! assert_eq!(
//!     dockerfile,
//!     "FROM wharf/debian:bookworm\n\
//!      WORKDIR /app\n\
//!      COPY . /app\n\
//!      ENV PORT=8000\n\
//!      EXPOSE 8000\n\
//!      CMD [\"python3\",\"app.py\"]\n"
//! );
//! std::fs::remove_dir_all(&dir).unwrap();
//! ```

mod images;
mod render;

use std::collections::BTreeMap;
use std::path::{Component, Path};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::{BuildPlan, BuildSpec, ProjectKind};

pub use images::ImageMap;
pub use render::render_dockerfile;

/// Every file detection may read.
const READS: [&str; 17] = [
    "Dockerfile",
    "Procfile",
    "package.json",
    "package-lock.json",
    "requirements.txt",
    "pyproject.toml",
    ".python-version",
    "runtime.txt",
    "app.py",
    "main.py",
    "server.py",
    "wsgi.py",
    "manage.py",
    "go.mod",
    "Cargo.toml",
    "Cargo.lock",
    "index.html",
];

/// Port used when nothing says otherwise (Dockerfile without `EXPOSE`, Go, Rust, static).
const DEFAULT_PORT: u16 = 8080;
/// Port of Node projects.
const NODE_PORT: u16 = 3000;
/// Port of Python projects.
const PYTHON_PORT: u16 = 8000;
/// Node major version when `engines.node` says nothing usable.
const DEFAULT_NODE_MAJOR: u32 = 20;
/// Python version when neither `.python-version` nor `runtime.txt` says one.
const DEFAULT_PYTHON: &str = "3.12";

/// What [`detect`] looks for, for the error message when nothing matches.
const LOOKED_FOR: &str =
    "Dockerfile, package.json, requirements.txt, pyproject.toml, app.py, main.py, go.mod, Cargo.toml or index.html";

/// Detects the kind of project in `dir` and how to build and run it (see the
/// [module docs](self) for the rules).
///
/// Errors, all naming the folder or file:
/// - [`crate::ErrorKind::NotFound`] if `dir` does not exist;
/// - [`crate::ErrorKind::InvalidInput`] if `dir` is not a directory, if nothing is
///   recognised (the message lists what was looked for), if a manifest is malformed
///   (`package.json` that is not a JSON object), or if a recognised project has no
///   way to start (a Python project without entry file, a Rust manifest without
///   `[package] name`);
/// - other kinds for I/O failures while reading files.
pub fn detect(dir: &Path) -> Result<BuildPlan> {
    check_dir(dir)?;
    // A file detection reads that is a link out of the source fails it, whichever
    // rule would have read it.
    for name in READS {
        source_file(dir, name)?;
    }
    let mut plan = if is_file(dir, "Dockerfile") {
        let mut plan = dockerfile_plan(dir, "Dockerfile")?;
        add_processes(&mut plan, dir)?;
        return Ok(plan);
    } else if is_file(dir, "package.json") {
        node_plan(dir)?
    } else if ["requirements.txt", "pyproject.toml", "app.py", "main.py"]
        .iter()
        .any(|f| is_file(dir, f))
    {
        python_plan(dir)?
    } else if is_file(dir, "go.mod") {
        go_plan(dir)?
    } else if is_file(dir, "Cargo.toml") {
        rust_plan(dir)?
    } else if let Some(root) = static_root(dir) {
        static_plan(root)
    } else {
        return Err(Error::invalid(format!(
            "cannot tell what kind of project this is: no {LOOKED_FOR} in {}",
            dir.display()
        )));
    };
    if let Some(web) = procfile_web(dir)? {
        plan.start = render::to_argv(&web);
    }
    add_processes(&mut plan, dir)?;
    if plan.start.is_empty() {
        return Err(Error::invalid(format!(
            "found a {} project in {} but no way to start it: add a Procfile with a `web:` line",
            plan.kind,
            dir.display()
        )));
    }
    Ok(plan)
}

/// Adds the process types of the `Procfile` in `dir` but `web` to `plan`, those it
/// has already taking precedence (any kind may declare them, a Dockerfile's too).
fn add_processes(plan: &mut BuildPlan, dir: &Path) -> Result<()> {
    for (name, cmd) in procfile(dir)? {
        if name != "web" {
            plan.processes
                .entry(name)
                .or_insert_with(|| render::to_argv(&cmd));
        }
    }
    Ok(())
}

/// Turns a service's build spec into a plan for the source in `dir`.
///
/// - [`BuildSpec::Auto`] runs [`detect`].
/// - [`BuildSpec::Dockerfile`] gives a plan of kind [`ProjectKind::Dockerfile`] for that
///   file, which must exist ([`crate::ErrorKind::NotFound`]) and stay inside `dir`:
///   an absolute path, a `..` component or a symbolic link leading out is refused
///   with [`crate::ErrorKind::InvalidInput`]. Base image and port are read from it
///   like [`detect`] does.
/// - [`BuildSpec::Plan`] gives that plan (if of kind Dockerfile, its `dockerfile` path,
///   `Dockerfile` if unset, is checked the same way).
///
/// `port` (the service's own) then overrides the plan's; for a static site served by
/// busybox `httpd`, the `-p` argument of the start command follows it. Port 0 is
/// refused.
pub fn resolve_plan(spec: &BuildSpec, port: Option<u16>, dir: &Path) -> Result<BuildPlan> {
    let mut plan = match spec {
        BuildSpec::Auto => detect(dir)?,
        BuildSpec::Dockerfile { path } => {
            check_dir(dir)?;
            dockerfile_plan(dir, path)?
        }
        BuildSpec::Plan { plan } => {
            let mut plan = plan.clone();
            if plan.kind == ProjectKind::Dockerfile {
                check_dir(dir)?;
                let path = plan.dockerfile.as_deref().unwrap_or("Dockerfile");
                plan.dockerfile = Some(check_dockerfile_path(dir, path)?);
            }
            plan
        }
    };
    // Every kind, a Dockerfile's too, may declare its other process types.
    add_processes(&mut plan, dir)?;
    if let Some(port) = port {
        if port == 0 {
            return Err(Error::invalid("the service's port is 0"));
        }
        if plan.kind == ProjectKind::Static {
            if let [httpd, rest @ ..] = plan.start.as_mut_slice() {
                if httpd == "httpd" {
                    if let Some(i) = rest.iter().position(|a| a == "-p") {
                        if let Some(p) = rest.get_mut(i + 1) {
                            *p = port.to_string();
                        }
                    }
                }
            }
        }
        plan.port = port;
    }
    Ok(plan)
}

/// `dir` must exist (NotFound) and be a directory (InvalidInput).
fn check_dir(dir: &Path) -> Result<()> {
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(Error::invalid(format!(
            "{} is not a directory",
            dir.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::not_found(format!(
            "source folder {} does not exist",
            dir.display()
        ))),
        Err(e) => Err(Error::from(e).context(format!("cannot read {}", dir.display()))),
    }
}

fn is_file(dir: &Path, name: &str) -> bool {
    matches!(source_file(dir, name), Ok(Some(_)))
}

/// The most bytes detection reads of one file (a manifest, a `Procfile`).
const MAX_FILE: u64 = 256 * 1024;

/// `dir/name` if it is a regular file of the source: a symbolic link is followed only
/// while it stays inside `dir` (one leading out, to the control plane's own files say,
/// is refused: what detection reads can end up in messages people see).
fn source_file(dir: &Path, name: &str) -> Result<Option<std::path::PathBuf>> {
    let path = dir.join(name);
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::from(e).context(format!("cannot read {name}"))),
    };
    if meta.file_type().is_symlink() {
        let (Ok(target), Ok(root)) = (std::fs::canonicalize(&path), std::fs::canonicalize(dir))
        else {
            return Ok(None);
        };
        if !target.starts_with(&root) {
            return Err(Error::invalid(format!(
                "{name} is a symbolic link leading out of the source: refused"
            )));
        }
        return Ok(target.is_file().then_some(target));
    }
    Ok(meta.is_file().then_some(path))
}

/// Reads `dir/name` as text, or `None` if it is not a file of the source.
fn read_optional(dir: &Path, name: &str) -> Result<Option<String>> {
    let Some(path) = source_file(dir, name)? else {
        return Ok(None);
    };
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    if size > MAX_FILE {
        return Err(Error::invalid(format!(
            "{name} is {size} bytes: detection reads files of at most {MAX_FILE} bytes"
        )));
    }
    std::fs::read_to_string(&path)
        .map(Some)
        .map_err(|e| Error::from(e).context(format!("cannot read {name}")))
}

fn read(dir: &Path, name: &str) -> Result<String> {
    read_optional(dir, name)?
        .ok_or_else(|| Error::not_found(format!("{name} is not a file of {}", dir.display())))
}

// ---------------------------------------------------------------- Dockerfile

/// Checks a Dockerfile path given relative to `dir`: relative, no `..`, exists, and
/// (symbolic links resolved) inside `dir`. Returns it normalised (`/`-separated,
/// without `.` components).
fn check_dockerfile_path(dir: &Path, path: &str) -> Result<String> {
    let refuse = |why: &str| {
        Err(Error::invalid(format!(
            "Dockerfile path {path:?} {why}: it must be a relative path inside the source"
        )))
    };
    if path.trim().is_empty() {
        return refuse("is empty");
    }
    if path.chars().any(char::is_control) {
        return refuse("holds control characters");
    }
    let mut parts = Vec::new();
    for component in Path::new(path).components() {
        match component {
            Component::Normal(part) => match part.to_str() {
                Some(part) => parts.push(part),
                None => return refuse("is not valid UTF-8"),
            },
            Component::CurDir => {}
            Component::ParentDir => return refuse("goes up with '..'"),
            Component::RootDir | Component::Prefix(_) => return refuse("is absolute"),
        }
    }
    if parts.is_empty() {
        return refuse("names no file");
    }
    let normalised = parts.join("/");
    let full = dir.join(&normalised);
    if !full.is_file() {
        return Err(Error::not_found(format!(
            "Dockerfile {normalised} not found in {}",
            dir.display()
        )));
    }
    let real_dir = dir.canonicalize()?;
    let real_file = full.canonicalize()?;
    if !real_file.starts_with(&real_dir) {
        return refuse("leads out of the source through a symbolic link");
    }
    Ok(normalised)
}

fn dockerfile_plan(dir: &Path, path: &str) -> Result<BuildPlan> {
    let path = check_dockerfile_path(dir, path)?;
    let text = read(dir, &path)?;
    let mut base_image = None;
    let mut port = None;
    for line in text.lines() {
        let line = line.trim();
        let mut words = line.split_whitespace();
        let Some(instruction) = words.next() else {
            continue;
        };
        if instruction.eq_ignore_ascii_case("FROM") && base_image.is_none() {
            // Skip flags such as --platform=...
            base_image = words.find(|w| !w.starts_with("--")).map(str::to_owned);
        } else if instruction.eq_ignore_ascii_case("EXPOSE") {
            // The first port of the last EXPOSE that names one (8080/tcp -> 8080).
            if let Some(p) = words
                .filter_map(|w| w.split('/').next()?.parse::<u16>().ok())
                .find(|p| *p != 0)
            {
                port = Some(p);
            }
        }
    }
    let base_image = base_image.ok_or_else(|| {
        Error::invalid(format!(
            "{} has no FROM instruction",
            dir.join(&path).display()
        ))
    })?;
    Ok(BuildPlan {
        processes: Default::default(),
        kind: ProjectKind::Dockerfile,
        base_image,
        install: vec![],
        build: vec![],
        start: vec![],
        port: port.unwrap_or(DEFAULT_PORT),
        dockerfile: Some(path),
    })
}

// ---------------------------------------------------------------- Procfile

/// The command of the `web:` process of a `Procfile`, if there is one.
fn procfile_web(dir: &Path) -> Result<Option<String>> {
    Ok(procfile(dir)?.remove("web"))
}

/// The process types of the `Procfile` in `dir` (none without one): `name: command`
/// lines; blank lines and `#` comments are skipped, a name that is not a valid
/// process type name ([`crate::validate_process`]) is refused with the line number,
/// and so is a name given twice.
pub fn procfile(dir: &Path) -> Result<BTreeMap<String, String>> {
    let Some(text) = read_optional(dir, "Procfile")? else {
        return Ok(BTreeMap::new());
    };
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // Messages name the line, never repeat it: what a file holds stays out of
        // errors people read.
        let at = |why: &str| Error::invalid(format!("Procfile line {}: {why}", i + 1));
        let Some((name, cmd)) = line.split_once(':') else {
            return Err(at("not `name: command`"));
        };
        let (name, cmd) = (name.trim(), cmd.trim());
        if crate::model::validate_name(name).is_err() {
            return Err(at(
                "the process type is not a name (1 to 63 of a-z, 0-9 and -, starting with a letter)",
            ));
        }
        crate::model::validate_process(name, cmd).map_err(|e| at(e.message()))?;
        if out.insert(name.to_owned(), cmd.to_owned()).is_some() {
            return Err(at(&format!("process {name} is defined twice")));
        }
        if out.len() > crate::model::MAX_PROCESS_TYPES {
            return Err(at(&format!(
                "more than {} process types",
                crate::model::MAX_PROCESS_TYPES
            )));
        }
    }
    Ok(out)
}

/// The process types a deployment of `plan` has besides `web`, in exec form: the
/// plan's (from its `Procfile`) with the service's own `processes` taking
/// precedence.
pub fn processes(
    plan: Option<&BuildPlan>,
    service: &BTreeMap<String, String>,
) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> =
        plan.map(|p| p.processes.clone()).unwrap_or_default();
    for (name, cmd) in service {
        if name != "web" {
            out.insert(name.clone(), command_argv(cmd));
        }
    }
    out
}

/// A command line as exec-form argv, as a `Procfile` line runs: split on
/// whitespace when it has no shell syntax, else `["sh", "-c", line]`.
pub fn command_argv(line: &str) -> Vec<String> {
    render::to_argv(line)
}

// ---------------------------------------------------------------- Node

fn node_plan(dir: &Path) -> Result<BuildPlan> {
    let path = dir.join("package.json");
    let text = read(dir, "package.json")?;
    let json: Value = serde_json::from_str(&text)
        .map_err(|e| Error::invalid(format!("malformed {}: {e}", path.display())).with_source(e))?;
    let Some(pkg) = json.as_object() else {
        return Err(Error::invalid(format!(
            "malformed {}: it is not a JSON object",
            path.display()
        )));
    };

    let major = pkg
        .get("engines")
        .and_then(|e| e.get("node"))
        .and_then(Value::as_str)
        .and_then(first_number)
        .filter(|m| *m > 0)
        .unwrap_or(DEFAULT_NODE_MAJOR);

    let has_deps = ["dependencies", "devDependencies"].iter().any(|key| {
        pkg.get(*key)
            .and_then(Value::as_object)
            .is_some_and(|deps| !deps.is_empty())
    });
    let install = if !has_deps {
        vec![]
    } else if is_file(dir, "package-lock.json") {
        vec!["npm ci".to_owned()]
    } else {
        vec!["npm install".to_owned()]
    };

    let script = |name: &str| {
        pkg.get("scripts")
            .and_then(|s| s.get(name))
            .and_then(Value::as_str)
            .is_some_and(|s| !s.trim().is_empty())
    };
    let build = if script("build") {
        vec!["npm run build".to_owned()]
    } else {
        vec![]
    };
    let start_script = pkg
        .get("scripts")
        .and_then(|s| s.get("start"))
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let start = if let Some(start_script) = start_script {
        // `"start": "node server.js"` runs as `node server.js` directly: node gets
        // the stop signal itself, and images without npm (Debian's `nodejs`) work.
        // Anything else (shell syntax, other programs, pre/post hooks) is `npm start`.
        let direct = start_script.starts_with("node ")
            && !render::needs_shell(start_script)
            && !script("prestart")
            && !script("poststart");
        if direct {
            render::to_argv(start_script)
        } else {
            vec!["npm".to_owned(), "start".to_owned()]
        }
    } else {
        let main = pkg
            .get("main")
            .and_then(Value::as_str)
            .filter(|m| !m.trim().is_empty())
            .map(str::to_owned)
            .or_else(|| {
                ["index.js", "server.js"]
                    .into_iter()
                    .find(|f| is_file(dir, f))
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "index.js".to_owned());
        vec!["node".to_owned(), main]
    };

    Ok(BuildPlan {
        processes: Default::default(),
        kind: ProjectKind::Node,
        base_image: format!("node:{major}-slim"),
        install,
        build,
        start,
        port: NODE_PORT,
        dockerfile: None,
    })
}

/// The first run of ASCII digits in `s` (`">=18.2"` -> 18).
fn first_number(s: &str) -> Option<u32> {
    let start = s.find(|c: char| c.is_ascii_digit())?;
    let digits: String = s[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

// ---------------------------------------------------------------- Python

fn python_plan(dir: &Path) -> Result<BuildPlan> {
    let version = python_version(dir)?.unwrap_or_else(|| DEFAULT_PYTHON.to_owned());

    let install = if let Some(reqs) = read_optional(dir, "requirements.txt")? {
        // A requirements file that lists nothing (blank lines, comments) needs no pip.
        let lists_something = reqs.lines().any(|l| {
            let l = l.trim();
            !l.is_empty() && !l.starts_with('#')
        });
        if lists_something {
            vec!["pip install --no-cache-dir -r requirements.txt".to_owned()]
        } else {
            vec![]
        }
    } else if is_file(dir, "pyproject.toml") {
        vec!["pip install --no-cache-dir .".to_owned()]
    } else {
        vec![]
    };

    let start = if let Some(entry) = ["app.py", "main.py", "server.py", "wsgi.py"]
        .into_iter()
        .find(|f| is_file(dir, f))
    {
        vec!["python3".to_owned(), entry.to_owned()]
    } else if is_file(dir, "manage.py") {
        vec![
            "sh".to_owned(),
            "-c".to_owned(),
            "python3 manage.py runserver 0.0.0.0:$PORT".to_owned(),
        ]
    } else if let Some(script) = read_optional(dir, "pyproject.toml")?
        .as_deref()
        .and_then(|t| toml_first_key(t, "project.scripts"))
    {
        vec![script]
    } else {
        vec![]
    };

    Ok(BuildPlan {
        processes: Default::default(),
        kind: ProjectKind::Python,
        base_image: format!("python:{version}-slim"),
        install,
        build: vec![],
        start,
        port: PYTHON_PORT,
        dockerfile: None,
    })
}

/// The Python version from `.python-version` (`3.11.4`) or `runtime.txt`
/// (`python-3.11.4`), as `major.minor`. Versions that are not plain numbers
/// (`pypy3.9`, a virtualenv name) are ignored.
fn python_version(dir: &Path) -> Result<Option<String>> {
    for (file, prefix) in [(".python-version", ""), ("runtime.txt", "python-")] {
        let Some(text) = read_optional(dir, file)? else {
            continue;
        };
        let Some(line) = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
        else {
            continue;
        };
        let version = line.strip_prefix(prefix).unwrap_or(line);
        if let Some(v) = major_minor(version) {
            return Ok(Some(v));
        }
    }
    Ok(None)
}

/// At most `major.minor` of a dot-separated numeric version: `"3.11.4"` -> `"3.11"`,
/// `"1.22"` -> `"1.22"`, `"3"` -> `"3"`; `None` for anything else (`"pypy3.9"`).
fn major_minor(version: &str) -> Option<String> {
    let parts: Vec<&str> = version.trim().split('.').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || !p.chars().all(|c| c.is_ascii_digit()))
    {
        return None;
    }
    Some(parts.iter().take(2).copied().collect::<Vec<_>>().join("."))
}

// ---------------------------------------------------------------- Go

fn go_plan(dir: &Path) -> Result<BuildPlan> {
    let text = read(dir, "go.mod")?;
    let version = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("go ").map(str::trim))
        .and_then(major_minor)
        .unwrap_or_else(|| "1".to_owned());
    Ok(BuildPlan {
        processes: Default::default(),
        kind: ProjectKind::Go,
        base_image: format!("golang:{version}"),
        install: vec![],
        build: vec!["go build -o /app/server .".to_owned()],
        start: vec!["/app/server".to_owned()],
        port: DEFAULT_PORT,
        dockerfile: None,
    })
}

// ---------------------------------------------------------------- Rust

fn rust_plan(dir: &Path) -> Result<BuildPlan> {
    let text = read(dir, "Cargo.toml")?;
    let binary = toml_string(&text, "package", "default-run")
        .or_else(|| toml_string(&text, "package", "name"))
        .ok_or_else(|| {
            Error::invalid(format!(
                "{} has no [package] name (a workspace root is not supported: build a member, or add a Dockerfile)",
                dir.join("Cargo.toml").display()
            ))
        })?;
    if binary.is_empty() || binary.contains(['/', '\\']) || binary.chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "{} has an invalid package name {binary:?}",
            dir.join("Cargo.toml").display()
        )));
    }
    let build = if is_file(dir, "Cargo.lock") {
        "cargo build --release --locked"
    } else {
        "cargo build --release"
    };
    Ok(BuildPlan {
        processes: Default::default(),
        kind: ProjectKind::Rust,
        base_image: "rust:1-slim".to_owned(),
        install: vec![],
        build: vec![build.to_owned()],
        start: vec![format!("./target/release/{binary}")],
        port: DEFAULT_PORT,
        dockerfile: None,
    })
}

/// A string value `key = "value"` in the `[table]` of a TOML text (line-based: good
/// for the simple manifests detection reads, not a TOML parser).
fn toml_string(text: &str, table: &str, key: &str) -> Option<String> {
    toml_table(text, table).find_map(|(k, v)| (k == key).then(|| unquote(v)).flatten())
}

/// The first key of the `[table]` of a TOML text.
fn toml_first_key(text: &str, table: &str) -> Option<String> {
    toml_table(text, table)
        .next()
        .map(|(k, _)| k.trim_matches('"').to_owned())
        .filter(|k| !k.is_empty())
}

/// The `key = value` lines of `[table]`.
fn toml_table<'a>(text: &'a str, table: &'a str) -> impl Iterator<Item = (&'a str, &'a str)> {
    let mut current: Option<&str> = None;
    text.lines().filter_map(move |line| {
        let line = line.trim();
        if line.starts_with('[') {
            current = line
                .trim_start_matches('[')
                .split(']')
                .next()
                .map(str::trim);
            return None;
        }
        if current != Some(table) || line.starts_with('#') {
            return None;
        }
        let (k, v) = line.split_once('=')?;
        Some((k.trim(), v.trim()))
    })
}

/// `"text"` or `'text'` (then an optional comment) -> `text`.
fn unquote(value: &str) -> Option<String> {
    let quote = value.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let rest = &value[1..];
    let end = rest.find(quote)?;
    Some(rest[..end].to_owned())
}

// ---------------------------------------------------------------- Static

/// Where the static site's `index.html` is: `""` (root), `"public"` or `"dist"`.
fn static_root(dir: &Path) -> Option<&'static str> {
    ["", "public", "dist"]
        .into_iter()
        .find(|sub| dir.join(sub).join("index.html").is_file())
}

fn static_plan(root: &str) -> BuildPlan {
    let docroot = if root.is_empty() {
        "/app".to_owned()
    } else {
        format!("/app/{root}")
    };
    BuildPlan {
        processes: Default::default(),
        kind: ProjectKind::Static,
        base_image: "busybox:stable".to_owned(),
        install: vec![],
        build: vec![],
        start: ["httpd", "-f", "-p", "8080", "-h", &docroot]
            .into_iter()
            .map(str::to_owned)
            .collect(),
        port: DEFAULT_PORT,
        dockerfile: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_versions() {
        assert_eq!(first_number(">=18.2 <21"), Some(18));
        assert_eq!(first_number("^20.11.0"), Some(20));
        assert_eq!(first_number("lts/*"), None);
        assert_eq!(major_minor("3.11.4").as_deref(), Some("3.11"));
        assert_eq!(major_minor("1.22").as_deref(), Some("1.22"));
        assert_eq!(major_minor("pypy3.9"), None);
    }

    #[test]
    fn toml_lines() {
        let text = "[package]\nname = \"demo\" # the name\nversion = '0.1.0'\n\n[dependencies]\nname = \"no\"\n";
        assert_eq!(
            toml_string(text, "package", "name").as_deref(),
            Some("demo")
        );
        assert_eq!(
            toml_string(text, "package", "version").as_deref(),
            Some("0.1.0")
        );
        assert_eq!(toml_string(text, "package", "edition"), None);
        let py = "[project]\nname = \"x\"\n[project.scripts]\nserve = \"x.cli:main\"\n";
        assert_eq!(
            toml_first_key(py, "project.scripts").as_deref(),
            Some("serve")
        );
    }
}
