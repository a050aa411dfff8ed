//! [`render_dockerfile`]: a [`BuildPlan`] as Dockerfile text.

use std::fmt::Write as _;

use super::images::ImageMap;
use crate::error::{Error, Result};
use crate::model::{BuildPlan, ProjectKind};

/// Characters that make a command need a shell (expansion, quoting, redirection,
/// pipes, lists, globbing, comments, grouping).
const SHELL_CHARS: &[char] = &[
    '$', '`', '\\', '"', '\'', '|', '&', ';', '<', '>', '(', ')', '{', '}', '*', '?', '[', ']',
    '#', '~', '!',
];

/// Whether `cmd` must run through `sh -c` (it uses shell syntax, or starts with a
/// `VAR=value` assignment).
pub(super) fn needs_shell(cmd: &str) -> bool {
    cmd.contains(SHELL_CHARS)
        || cmd
            .split_whitespace()
            .next()
            .is_some_and(|first| first.contains('='))
}

/// A command line as exec-form argv: split on whitespace when it has no shell
/// syntax, else `["sh", "-c", cmd]`.
pub(super) fn to_argv(cmd: &str) -> Vec<String> {
    let cmd = cmd.trim();
    if needs_shell(cmd) {
        vec!["sh".into(), "-c".into(), cmd.into()]
    } else {
        cmd.split_whitespace().map(str::to_owned).collect()
    }
}

/// Refuses text that could break out of its Dockerfile line: line breaks and other
/// control characters (a tab is fine).
fn check_line(what: &str, text: &str) -> Result<()> {
    if let Some(c) = text.chars().find(|c| c.is_control() && *c != '\t') {
        return Err(Error::invalid(format!(
            "{what} {text:?} holds the control character {c:?}: commands must fit on one line"
        )));
    }
    Ok(())
}

/// Checks a shell-form `RUN` command: one line, not empty, not ending in the
/// Dockerfile line continuation `\`, not starting with `-` (it would be read as a
/// `RUN --flag`), and no heredoc `<<` (it would swallow the following lines).
fn check_run(what: &str, cmd: &str) -> Result<()> {
    check_line(what, cmd)?;
    let trimmed = cmd.trim();
    let why = if trimmed.is_empty() {
        "is empty"
    } else if trimmed.ends_with('\\') {
        "ends with '\\' (a Dockerfile line continuation)"
    } else if trimmed.starts_with('-') {
        "starts with '-' (it would be read as a RUN flag)"
    } else if trimmed.contains("<<") {
        "uses '<<' (a Dockerfile heredoc)"
    } else {
        return Ok(());
    };
    Err(Error::invalid(format!("{what} {cmd:?} {why}")))
}

/// Files copied before the install step so installed dependencies stay cached in
/// their own layer while only the code changes. `None`: copy everything first.
fn manifest_files(plan: &BuildPlan) -> Option<&'static str> {
    if plan.install.is_empty() {
        return None;
    }
    match plan.kind {
        // Matches package.json and package-lock.json (npm ci needs both).
        ProjectKind::Node => Some("package*.json"),
        ProjectKind::Python
            if plan
                .install
                .iter()
                .all(|c| c.contains("-r requirements.txt")) =>
        {
            // requirements.txt and its usual companions (requirements-dev.txt...).
            Some("requirements*.txt")
        }
        // `pip install .` and the others need the whole source.
        _ => None,
    }
}

/// Renders `plan` as a Dockerfile, with its base image mapped through `images`.
///
/// The result is, in order: `FROM <mapped base>`, `WORKDIR /app`, the source copy
/// (for Node and `requirements.txt` Python projects the manifests are copied and
/// installed first, so the dependency layer is cached while only code changes), one
/// `RUN` per install and build command (shell form), `ENV PORT=<port>`,
/// `EXPOSE <port>`, and `CMD` in exec (JSON) form.
///
/// The start command: a plan's `start` of several elements is used as argv as is; a
/// single element is a command line, split on whitespace when it has no shell syntax,
/// else run as `["sh", "-c", "<command>"]`.
///
/// Fails with [`crate::ErrorKind::Unsupported`] for [`ProjectKind::Dockerfile`] (the
/// project's own Dockerfile is used as is), and with
/// [`crate::ErrorKind::InvalidInput`] for a plan that could not render safely: a
/// command or base image holding a line break or other control character (it could
/// add Dockerfile instructions), an install/build command ending in `\`, starting
/// with `-` or using `<<`, a base image with spaces, an empty start command, or
/// port 0.
pub fn render_dockerfile(plan: &BuildPlan, images: &ImageMap) -> Result<String> {
    if plan.kind == ProjectKind::Dockerfile {
        return Err(Error::unsupported(
            "the project's own Dockerfile is used as is: there is nothing to render",
        ));
    }
    let base = images.resolve(&plan.base_image);
    check_line("base image", &base)?;
    if base.is_empty() || base.starts_with('-') || base.chars().any(char::is_whitespace) {
        return Err(Error::invalid(format!(
            "base image {base:?} is not an image name"
        )));
    }
    if plan.port == 0 {
        return Err(Error::invalid("the plan's port is 0"));
    }
    for cmd in &plan.install {
        check_run("install command", cmd)?;
    }
    for cmd in &plan.build {
        check_run("build command", cmd)?;
    }
    let argv = match plan.start.as_slice() {
        [] => {
            return Err(Error::invalid(
                "the plan has no start command: set one (or add a Procfile with a web: line)",
            ))
        }
        [cmd] => {
            check_line("start command", cmd)?;
            if cmd.trim().is_empty() {
                return Err(Error::invalid("the plan's start command is empty"));
            }
            to_argv(cmd)
        }
        many => {
            for arg in many {
                check_line("start command argument", arg)?;
            }
            many.to_vec()
        }
    };
    let cmd_json = serde_json::to_string(&argv)
        .map_err(|e| Error::internal(format!("cannot encode the start command: {e}")))?;

    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(out, "FROM {base}");
    let _ = writeln!(out, "WORKDIR /app");
    match manifest_files(plan) {
        Some(manifests) => {
            let _ = writeln!(out, "COPY {manifests} /app/");
            for cmd in &plan.install {
                let _ = writeln!(out, "RUN {}", cmd.trim());
            }
            let _ = writeln!(out, "COPY . /app");
        }
        None => {
            let _ = writeln!(out, "COPY . /app");
            for cmd in &plan.install {
                let _ = writeln!(out, "RUN {}", cmd.trim());
            }
        }
    }
    for cmd in &plan.build {
        let _ = writeln!(out, "RUN {}", cmd.trim());
    }
    let _ = writeln!(out, "ENV PORT={}", plan.port);
    let _ = writeln!(out, "EXPOSE {}", plan.port);
    let _ = writeln!(out, "CMD {cmd_json}");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_splits_only_plain_commands() {
        assert_eq!(to_argv("npm start"), ["npm", "start"]);
        assert_eq!(
            to_argv("gunicorn --bind=0.0.0.0:8000 app:app"),
            ["gunicorn", "--bind=0.0.0.0:8000", "app:app"]
        );
        assert_eq!(
            to_argv("python3 app.py --port $PORT"),
            ["sh", "-c", "python3 app.py --port $PORT"]
        );
        assert_eq!(
            to_argv("NODE_ENV=production node index.js"),
            ["sh", "-c", "NODE_ENV=production node index.js"]
        );
        assert_eq!(to_argv("a && b"), ["sh", "-c", "a && b"]);
    }
}
