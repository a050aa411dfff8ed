//! The git program, run the same way by every test that makes repositories.

use std::path::Path;
use std::process::Command;

use crate::{command_runs, require, stdout_of};

/// Whether the git program runs (see [`require`]).
pub fn git_present() -> bool {
    require(
        "git",
        command_runs("git", &["--version"], "apt-get install git"),
    )
}

/// Runs git in `dir` with a test identity, no signing, `main` as the default branch,
/// and no system or inherited repository settings; panics unless it succeeds. Returns
/// its trimmed stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    stdout_of(
        Command::new("git")
            .args([
                "-c",
                "user.name=Wharf Test",
                "-c",
                "user.email=test@wharf.invalid",
            ])
            .args(["-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false"])
            .args(["-c", "init.defaultBranch=main"])
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE"),
    )
}

/// A bare clone of the repository `src` at `bare`, ready to be served over git's
/// "dumb" HTTP protocol by a static file server (see [`crate::StaticServer`]).
pub fn bare_clone(src: &Path, bare: &Path) {
    let (src, bare) = (src.to_str().unwrap(), bare.to_str().unwrap());
    git(Path::new("/"), &["clone", "-q", "--bare", src, bare]);
    git(Path::new(bare), &["update-server-info"]);
}
