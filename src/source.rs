//! GitOps: a spec that names a git repository (`[source]`) is read from a checkout of
//! its branch in data_dir/source, fetched on each load (the git CLI: it speaks every
//! transport, credential helper and ssh setup users already have; gix would not).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::spec::{self, GitSource, LoadedSpec, SpecErrors};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{0}")]
    Spec(#[from] SpecErrors),
    #[error("spec source {url}: git {what} failed: {detail}")]
    Git {
        url: String,
        what: &'static str,
        detail: String,
    },
}

/// Loads the spec at `path`; when it names a repository, the repository's spec instead
/// (fetched first), keeping `path`'s data directory and its directory for relative paths
/// (secret files stay out of git).
pub fn load(path: &Path) -> Result<LoadedSpec, SourceError> {
    load_commit(path, None)
}

/// `load`, except that a branch whose newest commit is broken falls back to the last
/// commit that loaded (for `serve` starting: a broken push must not keep mail down).
pub fn load_for_serving(path: &Path) -> Result<LoadedSpec, SourceError> {
    match load(path) {
        Err(SourceError::Spec(errors)) => {
            let bootstrap = spec::load_unchecked(path)?;
            let good = std::fs::read_to_string(bootstrap.data_dir().join("source.good"))
                .ok()
                .map(|c| c.trim().to_string())
                .filter(|c| !c.is_empty());
            match good {
                Some(commit) => {
                    for line in &errors.0 {
                        tracing::error!("spec not applied: {line}");
                    }
                    tracing::warn!(commit, "serving the last good commit of the spec");
                    load_commit(path, Some(&commit))
                }
                None => Err(SourceError::Spec(errors)),
            }
        }
        other => other,
    }
}

fn load_commit(path: &Path, pinned: Option<&str>) -> Result<LoadedSpec, SourceError> {
    // Read once: a spec without `[source]` is the spec itself, and reading a large one
    // is most of a restart's time.
    let parsed = spec::parse(path)?;
    let Some(source) = parsed.unchecked().spec.source.clone() else {
        return Ok(parsed.check()?);
    };
    let bootstrap = parsed.unchecked();
    let data_dir = bootstrap.data_dir();
    let (checkout, commit) = sync(&source, &bootstrap.base_dir, &data_dir, pinned)?;
    let inner = checkout.join(source.path.as_deref().unwrap_or("ferrymail.toml"));
    let short: String = commit.chars().take(12).collect();
    let mut loaded = spec::load(&inner).map_err(|mut errors| {
        errors.0.insert(
            0,
            format!(
                "commit {short} of {} ({}) is not applied:",
                shown_url(&source.git),
                source.branch
            ),
        );
        errors
    })?;
    // Remembered, so a restart can fall back to it when the branch breaks.
    let _ = std::fs::write(data_dir.join("source.good"), &commit);
    loaded.spec.server.data_dir = Some(data_dir);
    loaded.base_dir = bootstrap.base_dir.clone();
    loaded.origin = Some(format!(
        "git {}@{short} ({})",
        shown_url(&source.git),
        source.branch
    ));
    loaded.git = Some((source, checkout));
    Ok(loaded)
}

/// A clone of the branch kept for edits (data_dir/source.edit), apart from the checkout
/// the serve loop reads: an edit never races the loop's fetch. Fetched to the branch's
/// newest commit; returns its directory.
pub fn edit_checkout(
    source: &GitSource,
    base: &Path,
    data_dir: &Path,
) -> Result<PathBuf, SourceError> {
    let git = Git::new(source, base, data_dir)?;
    let checkout = data_dir.join("source.edit");
    git.fetch_into(&checkout, &source.branch)?;
    // A fresh clone has fetched nothing yet; FETCH_HEAD is what an edit is put back to.
    if !checkout.join(".git/FETCH_HEAD").exists() {
        let dir = checkout.display().to_string();
        git.run(
            "fetch",
            &["-C", &dir, "fetch", "--quiet", &git.url, &source.branch],
        )?;
    }
    Ok(checkout)
}

/// A commit to make from an edit.
pub struct Publish<'a> {
    /// Files inside the checkout with their new text.
    pub files: &'a [(PathBuf, String)],
    /// "Name <address>".
    pub author: &'a str,
    pub message: &'a str,
    /// The branch it is pushed to (the source's own, or a new one for review).
    pub branch: &'a str,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The branch has moved since the edit was made on it.
    #[error("the branch moved while the edit was made (someone pushed); load the form again")]
    Moved,
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("{0}")]
    Write(String),
}

/// Writes the files in the edit checkout, commits them as `author` and pushes the commit
/// to `branch`; returns the commit id. The checkout is put back to the branch afterwards
/// (a proposal's commit lives only on its own branch).
pub fn publish(
    source: &GitSource,
    base: &Path,
    data_dir: &Path,
    checkout: &Path,
    change: &Publish,
) -> Result<String, PublishError> {
    let git = Git::new(source, base, data_dir)?;
    let dir = checkout.display().to_string();
    let result = (|| {
        let mut names = Vec::new();
        for (path, text) in change.files {
            crate::spec::edit::write_atomically(path, text)
                .map_err(|e| PublishError::Write(format!("{}: {e}", path.display())))?;
            names.push(
                path.strip_prefix(checkout)
                    .unwrap_or(path)
                    .display()
                    .to_string(),
            );
        }
        let mut add = vec!["-C", &dir, "add", "--"];
        add.extend(names.iter().map(String::as_str));
        git.run("add", &add)?;
        git.run(
            "commit",
            &[
                "-C",
                &dir,
                "-c",
                "user.name=ferrymail",
                "-c",
                "user.email=ferrymail@localhost",
                "commit",
                "--quiet",
                "--author",
                change.author,
                "-m",
                change.message,
            ],
        )?;
        let commit = git.run("rev-parse", &["-C", &dir, "rev-parse", "HEAD"])?;
        let target = format!("HEAD:refs/heads/{}", change.branch);
        match git.run("push", &["-C", &dir, "push", "--quiet", &git.url, &target]) {
            Ok(_) => Ok(commit),
            Err(SourceError::Git { detail, .. })
                if detail.contains("non-fast-forward")
                    || detail.contains("fetch first")
                    || detail.contains("rejected") =>
            {
                Err(PublishError::Moved)
            }
            Err(e) => Err(e.into()),
        }
    })();
    // Back to the branch as fetched: nothing of a failed or proposed edit stays behind.
    let _ = git.run(
        "checkout",
        &["-C", &dir, "reset", "--quiet", "--hard", "FETCH_HEAD"],
    );
    result
}

/// Clones or fetches the branch into data_dir/source; returns the checkout and its commit.
fn sync(
    source: &GitSource,
    base: &Path,
    data_dir: &Path,
    pinned: Option<&str>,
) -> Result<(PathBuf, String), SourceError> {
    let git = Git::new(source, base, data_dir)?;
    let checkout = data_dir.join("source");
    let dir = checkout.display().to_string();
    match pinned {
        Some(commit) => {
            git.run(
                "checkout",
                &["-C", &dir, "reset", "--quiet", "--hard", commit],
            )?;
        }
        None => git.fetch_into(&checkout, &source.branch)?,
    }
    let commit = git.run("rev-parse", &["-C", &dir, "rev-parse", "HEAD"])?;
    Ok((checkout, commit))
}

/// The git CLI pointed at one source: its URL (a local path read from the spec's
/// directory) and the ssh command of its deploy key.
struct Git {
    url: String,
    shown: String,
    ssh: Option<String>,
}

impl Git {
    fn new(source: &GitSource, base: &Path, data_dir: &Path) -> Result<Git, SourceError> {
        use std::os::unix::fs::DirBuilderExt;
        let shown = shown_url(&source.git);
        let fail = |what: &'static str, detail: String| SourceError::Git {
            url: shown.clone(),
            what,
            detail,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data_dir)
            .map_err(|e| fail("preparing the data directory", e.to_string()))?;
        // A local repository named relative to the spec.
        let url = if source.git.contains("://")
            || source.git.contains('@')
            || source.git.starts_with('/')
        {
            source.git.clone()
        } else {
            base.join(&source.git).display().to_string()
        };
        let ssh = ssh_command(source, base, data_dir).map_err(|e| fail("reading ssh_key", e))?;
        Ok(Git { url, shown, ssh })
    }

    fn run(&self, what: &'static str, args: &[&str]) -> Result<String, SourceError> {
        let fail = |detail: String| SourceError::Git {
            url: self.shown.clone(),
            what,
            detail,
        };
        let mut command = Command::new("git");
        command.args(args).env("GIT_TERMINAL_PROMPT", "0");
        if let Some(ssh) = &self.ssh {
            command.env("GIT_SSH_COMMAND", ssh);
        }
        let out = command
            .output()
            .map_err(|e| fail(format!("cannot run git: {e}")))?;
        if !out.status.success() {
            return Err(fail(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// `checkout` at the newest commit of `branch`: cloned the first time, fetched and
    /// reset after.
    fn fetch_into(&self, checkout: &Path, branch: &str) -> Result<(), SourceError> {
        let dir = checkout.display().to_string();
        if checkout.join(".git").exists() {
            self.run(
                "fetch",
                &["-C", &dir, "fetch", "--quiet", &self.url, branch],
            )?;
            self.run(
                "checkout",
                &["-C", &dir, "reset", "--quiet", "--hard", "FETCH_HEAD"],
            )?;
        } else {
            self.run(
                "clone",
                &[
                    "clone",
                    "--quiet",
                    "--single-branch",
                    "--branch",
                    branch,
                    &self.url,
                    &dir,
                ],
            )?;
        }
        Ok(())
    }
}

/// The ssh command that uses the deploy key, when one is given.
fn ssh_command(source: &GitSource, base: &Path, data_dir: &Path) -> Result<Option<String>, String> {
    let Some(key) = &source.ssh_key else {
        return Ok(None);
    };
    let path = match &key.file {
        Some(file) => base.join(file),
        None => {
            let secret = key.resolve(base).map_err(|e| e.to_string())?;
            let path = data_dir.join("source.key");
            crate::private_file::write(&path, format!("{}\n", secret.expose()).as_bytes())
                .map_err(|e| e.to_string())?;
            path
        }
    };
    // Without a home directory (systemd's DynamicUser) ssh has no known_hosts of its
    // own: the spec's, or the first key seen, pinned in the data dir.
    let known = data_dir.join("source.known_hosts");
    let checking = match &source.known_hosts {
        Some(lines) => {
            crate::private_file::write(&known, format!("{}\n", lines.trim()).as_bytes())
                .map_err(|e| e.to_string())?;
            "yes"
        }
        None => "accept-new",
    };
    Ok(Some(format!(
        "ssh -i {} -o IdentitiesOnly=yes -o BatchMode=yes -o UserKnownHostsFile={} -o StrictHostKeyChecking={checking}",
        shell_quote(&path.display().to_string()),
        shell_quote(&known.display().to_string()),
    )))
}

/// The repository URL as shown in status, pages and logs: a token or password written
/// into it (https://user:TOKEN@host/…, as credential setups often do) left out.
fn shown_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(None);
            let _ = parsed.set_username("");
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

/// Quotes a word for the shell git runs GIT_SSH_COMMAND with.
fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''"))
}

#[cfg(test)]
mod shown_url_tests {
    #[test]
    fn credentials_in_a_repository_url_are_not_shown() {
        assert_eq!(
            super::shown_url("https://x-access-token:ghp_secret@github.com/o/r.git"),
            "https://github.com/o/r.git"
        );
        assert_eq!(
            super::shown_url("git@github.com:o/r.git"),
            "git@github.com:o/r.git"
        );
        assert_eq!(super::shown_url("repo"), "repo");
    }
}
