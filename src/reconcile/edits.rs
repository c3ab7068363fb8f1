//! The serve loop's editor of the spec: an admin or API edit is patched into the spec's
//! text, validated and planned against the live state, and only then written (or, for a
//! spec kept in git, committed and pushed) and applied.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::watch::Reconciler;
use super::{PlanError, Targets, plan_targets, render};
use crate::change::{EditCall, EditOutcome, Refusal, SpecEditor};
use crate::source::{Publish, PublishError};
use crate::spec::edit::{EditError, SpecFiles, diff, write_atomically};
use crate::spec::{AdminChanges, GitSource, location::Source};
use crate::store::Store;

/// Edits the spec `serve` was started with, one at a time.
pub struct Editor {
    pub spec_path: PathBuf,
    pub store: Arc<dyn Store>,
    pub reconciler: Arc<Reconciler>,
    /// Held from reading the files to writing them: two edits racing on one ETag must
    /// not both pass its check.
    pub lock: Mutex<()>,
}

/// Where an edit is made.
struct Target {
    /// The spec to patch: the local file or directory, or the one in the edit checkout.
    spec: PathBuf,
    /// Relative paths of the spec are read from here.
    base_dir: PathBuf,
    changes: AdminChanges,
    changes_file: String,
    hostname: String,
    /// A spec kept in git: its source, its data directory, and the edit checkout.
    git: Option<(GitSource, PathBuf, PathBuf)>,
}

fn refused(refusal: Refusal, errors: Vec<String>) -> EditOutcome {
    EditOutcome {
        refused: Some(refusal),
        errors,
        ..EditOutcome::default()
    }
}

fn read_only(why: String) -> Box<EditOutcome> {
    Box::new(refused(Refusal::ReadOnly, vec![why]))
}

impl Editor {
    /// Where edits go, as the spec says now. A spec kept in git is fetched to the
    /// branch's newest commit first, in a checkout of its own.
    fn target(&self) -> Result<Target, Box<EditOutcome>> {
        let bootstrap = crate::spec::load_unchecked(&self.spec_path)
            .map_err(|e| Box::new(refused(Refusal::Failed, e.0)))?;
        let changes_file = |spec: &crate::spec::Spec| {
            spec.admin
                .changes_file
                .clone()
                .unwrap_or_else(|| "admin.toml".into())
        };
        let Some(source) = bootstrap.spec.source.clone() else {
            let changes = bootstrap.admin_changes();
            return match changes {
                AdminChanges::Apply => Ok(Target {
                    spec: self.spec_path.clone(),
                    base_dir: bootstrap.base_dir.clone(),
                    changes,
                    changes_file: changes_file(&bootstrap.spec),
                    hostname: bootstrap.spec.server.hostname.clone(),
                    git: None,
                }),
                AdminChanges::None => Err(read_only(
                    "edits are off here ([admin] changes = \"none\")".into(),
                )),
                AdminChanges::Commit | AdminChanges::Propose => Err(read_only(format!(
                    "[admin] changes = \"{}\" needs a spec kept in git ([source])",
                    changes.as_str()
                ))),
            };
        };
        let data_dir = bootstrap.data_dir();
        let checkout = crate::source::edit_checkout(&source, &bootstrap.base_dir, &data_dir)
            .map_err(|e| Box::new(refused(Refusal::Failed, vec![e.to_string()])))?;
        let inner = checkout.join(source.path.as_deref().unwrap_or("ferrymail.toml"));
        let spec = crate::spec::load_unchecked(&inner)
            .map_err(|e| Box::new(refused(Refusal::Failed, e.0)))?;
        // In git, edits are off until the repository's spec says where they go.
        let changes = spec.spec.admin.changes.unwrap_or(AdminChanges::None);
        match changes {
            AdminChanges::Commit | AdminChanges::Propose => Ok(Target {
                spec: inner,
                base_dir: bootstrap.base_dir.clone(),
                changes,
                changes_file: changes_file(&spec.spec),
                hostname: spec.spec.server.hostname.clone(),
                git: Some((source, data_dir, checkout)),
            }),
            AdminChanges::None => Err(read_only(
                "edits are off: the spec is kept in git and says no [admin] changes (\"commit\" or \"propose\")".into(),
            )),
            AdminChanges::Apply => Err(read_only(
                "[admin] changes = \"apply\" writes a local spec file; a spec kept in git takes \"commit\" or \"propose\"".into(),
            )),
        }
    }
}

/// "Name <name@host>" for a commit: the admin user, or the API token, who made it.
fn author(who: &str, hostname: &str) -> String {
    let name: String = who
        .chars()
        .filter(|c| !matches!(c, '<' | '>' | '\n' | '\r' | '\0'))
        .collect();
    let local: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let host = if hostname.is_empty() {
        "localhost"
    } else {
        hostname
    };
    format!("{name} <{local}@{host}>")
}

impl SpecEditor for Editor {
    fn current(&self) -> (String, String) {
        let _one_at_a_time = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        match self.target() {
            Ok(target) => (
                SpecFiles::read(&target.spec)
                    .map(|f| f.etag())
                    .unwrap_or_default(),
                target.changes.as_str().to_string(),
            ),
            Err(_) => (String::new(), "none".to_string()),
        }
    }

    fn edit(&self, call: EditCall) -> EditOutcome {
        let _one_at_a_time = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let target = match self.target() {
            Ok(target) => target,
            Err(refusal) => return *refusal,
        };
        let files = match SpecFiles::read(&target.spec) {
            Ok(files) => files,
            Err(e) => return refused(Refusal::Failed, vec![e.to_string()]),
        };
        let etag = files.etag();
        if call.etag.as_ref().is_some_and(|given| *given != etag) {
            return refused(
                Refusal::Stale,
                vec![
                    "the spec changed since this form was loaded (another edit was saved); nothing was written: load it again and redo the change"
                        .into(),
                ],
            );
        }
        let edited = match files.edit(&call.change, &target.changes_file) {
            Ok(edited) => edited,
            Err(e) => {
                let refusal = match e {
                    EditError::NotFound(_) => Refusal::NotFound,
                    EditError::Exists(_) => Refusal::Exists,
                    EditError::Invalid(_) | EditError::Unparsable { .. } => Refusal::Invalid,
                    EditError::Io { .. } => Refusal::Failed,
                };
                return refused(refusal, vec![e.to_string()]);
            }
        };
        let sources: Vec<Source> = edited
            .files
            .iter()
            .map(|(path, text)| Source {
                path: path.clone(),
                text: text.clone(),
            })
            .collect();
        // Never written unless the whole spec, with the edit, is valid.
        let loaded = match crate::spec::load_sources(sources, &target.base_dir) {
            Ok(loaded) => loaded,
            Err(errors) => return refused(Refusal::Invalid, errors.0),
        };
        let targets = Targets {
            store: true,
            dns: false,
        };
        let plan = match plan_targets(&loaded, Some(self.store.as_ref()), "admin edit", targets) {
            Ok(plan) => plan,
            Err(PlanError::Spec(errors)) => return refused(Refusal::Invalid, errors.0),
            Err(e) => return refused(Refusal::Failed, vec![e.to_string()]),
        };
        let summary = plan.summary();
        let changed = edited.changed(&files);
        // Named as in the spec's directory or repository, not by the server's paths.
        let root = match &target.git {
            Some((_, _, checkout)) => checkout.clone(),
            None => target.base_dir.clone(),
        };
        let shown = |path: &Path| {
            path.strip_prefix(&root)
                .unwrap_or(path)
                .display()
                .to_string()
        };
        let mut outcome = EditOutcome {
            plan: render::text(&plan, &render::Style { color: false }),
            add: summary.add,
            change: summary.change,
            destroy: summary.destroy,
            diff: changed
                .iter()
                .map(|(path, old, new)| diff(&shown(path), old, new))
                .collect(),
            etag: etag.clone(),
            ..EditOutcome::default()
        };
        if call.dry_run || changed.is_empty() {
            return outcome;
        }
        if let Some((source, data_dir, checkout)) = &target.git {
            let branch = match target.changes {
                AdminChanges::Propose => format!("ferrymail/{}", call.change.slug()),
                _ => source.branch.clone(),
            };
            let files: Vec<(PathBuf, String)> = changed
                .iter()
                .map(|(path, _, new)| (path.to_path_buf(), new.to_string()))
                .collect();
            let by = author(&call.author, &target.hostname);
            let message = format!(
                "{}\n\nMade in the ferrymail admin by {}.",
                call.change.describe(),
                call.author
            );
            let publish = Publish {
                files: &files,
                author: &by,
                message: &message,
                branch: &branch,
            };
            let commit = match crate::source::publish(
                source,
                &target.base_dir,
                data_dir,
                checkout,
                &publish,
            ) {
                Ok(commit) => commit,
                Err(PublishError::Moved) if target.changes == AdminChanges::Propose => {
                    return refused(
                        Refusal::Exists,
                        vec![format!(
                            "the branch {branch} is there already (an earlier proposal?); merge or delete it first"
                        )],
                    );
                }
                Err(PublishError::Moved) => {
                    return refused(
                        Refusal::Stale,
                        vec![format!(
                            "the branch {} moved while the edit was made (someone pushed); nothing was pushed: load the form again",
                            source.branch
                        )],
                    );
                }
                Err(e) => return refused(Refusal::Failed, vec![e.to_string()]),
            };
            let short: String = commit.chars().take(12).collect();
            tracing::info!(change = %call.change.describe(), by = %call.author, commit = %short, %branch, "spec edited in the admin");
            outcome.written = changed.iter().map(|(path, _, _)| shown(path)).collect();
            outcome.commit = Some(short);
            outcome.branch = Some(branch);
            outcome.etag = SpecFiles::read(&target.spec)
                .map(|f| f.etag())
                .unwrap_or_default();
            if target.changes == AdminChanges::Propose {
                return outcome;
            }
        } else {
            for (path, _, new) in &changed {
                if let Err(e) = write_atomically(path, new) {
                    outcome.refused = Some(Refusal::Failed);
                    outcome
                        .errors
                        .push(format!("{}: not written: {e}", shown(path)));
                    return outcome;
                }
                outcome.written.push(shown(path));
            }
            tracing::info!(
                change = %call.change.describe(),
                by = %call.author,
                files = %outcome.written.join(", "),
                "spec edited in the admin"
            );
            outcome.etag = SpecFiles::read(&target.spec)
                .map(|f| f.etag())
                .unwrap_or_default();
        }
        let status = self.reconciler.reconcile_once();
        if status.ok {
            outcome.applied = Some(format!("revision {}: {}", status.revision, status.summary));
        } else {
            outcome.errors = status.errors;
            outcome.errors.insert(
                0,
                "written, but not applied; the last good state keeps serving:".into(),
            );
        }
        outcome
    }
}
