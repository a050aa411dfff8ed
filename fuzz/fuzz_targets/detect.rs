//! Zero-config detection (`wharf_core::detect::detect`) and Dockerfile rendering on
//! hostile project files: Procfile, package.json, pyproject.toml, Cargo.toml, go.mod,
//! Dockerfile, .python-version...
//!
//! Input: sections `=== <name>\n<content>`; each section is written as that file into
//! a fresh temp dir (names outside [`FILES`] pick one of them by length, so every
//! mutation still lands in a file detection reads). Text before the first section is
//! the Procfile. Checked:
//! - `detect` does not panic; a plan of any kind but Dockerfile has a start command;
//! - `resolve_plan(Auto, port)` agrees with `detect` and applies the port;
//! - a rendered Dockerfile holds only the instructions the renderer writes (FROM,
//!   WORKDIR, COPY, RUN, ENV, EXPOSE, CMD), one per line, with no line continuation,
//!   no RUN flag and no heredoc, and its CMD is the JSON of an argv.
#![no_main]

use std::fs;

use libfuzzer_sys::fuzz_target;
use wharf_core::detect::{detect, render_dockerfile, resolve_plan, ImageMap};
use wharf_core::{BuildSpec, ProjectKind};

/// The files detection looks at.
const FILES: &[&str] = &[
    "Procfile",
    "package.json",
    "package-lock.json",
    "pyproject.toml",
    "requirements.txt",
    ".python-version",
    "runtime.txt",
    "app.py",
    "main.py",
    "manage.py",
    "Dockerfile",
    "go.mod",
    "Cargo.toml",
    "Cargo.lock",
    "index.html",
    "public/index.html",
    "dist/index.html",
    "index.js",
    "server.js",
];

fuzz_target!(|data: &[u8]| {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for (name, content) in sections(data) {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(path, content).unwrap();
    }
    let Ok(plan) = detect(dir) else { return };
    if plan.kind != ProjectKind::Dockerfile {
        assert!(!plan.start.is_empty(), "a plan with no start: {plan:?}");
    }
    let resolved = resolve_plan(&BuildSpec::Auto, Some(4321), dir).expect("detect was ok");
    assert_eq!(resolved.port, 4321);
    assert_eq!(resolved.kind, plan.kind);
    if let Ok(text) = render_dockerfile(&plan, &ImageMap::new()) {
        check_dockerfile(&text);
    }
});

/// Splits the input into (file name, content) pairs at `=== <name>` lines.
fn sections(data: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let mut out = vec![("Procfile", Vec::new())];
    for line in data.split_inclusive(|b| *b == b'\n') {
        match line.strip_prefix(b"=== ") {
            Some(header) => out.push((pick(header.strip_suffix(b"\n").unwrap_or(header)), vec![])),
            None => out.last_mut().unwrap().1.extend_from_slice(line),
        }
    }
    if out[0].1.is_empty() {
        out.remove(0);
    }
    out
}

fn pick(name: &[u8]) -> &'static str {
    FILES
        .iter()
        .find(|f| f.as_bytes() == name)
        .copied()
        .unwrap_or(FILES[name.len() % FILES.len()])
}

/// The rendered Dockerfile holds only the renderer's own instructions.
fn check_dockerfile(text: &str) {
    const OWN: &[&str] = &[
        "FROM ", "WORKDIR ", "COPY ", "RUN ", "ENV ", "EXPOSE ", "CMD ",
    ];
    assert!(text.ends_with('\n'));
    let lines: Vec<&str> = text.split('\n').collect();
    for line in &lines[..lines.len() - 1] {
        assert!(
            OWN.iter().any(|i| line.starts_with(i)),
            "injected line {line:?} in\n{text}"
        );
        assert!(!line.ends_with('\\'), "line continuation in {line:?}");
        assert!(!line.contains('\r'), "carriage return in {line:?}");
        if let Some(cmd) = line.strip_prefix("RUN ") {
            assert!(!cmd.starts_with('-') && !cmd.contains("<<"), "{line:?}");
        }
    }
    let cmd = lines[lines.len() - 2]
        .strip_prefix("CMD ")
        .expect("CMD comes last");
    let argv: Vec<String> = serde_json::from_str(cmd).expect("CMD is a JSON argv");
    assert!(!argv.is_empty());
}
