//! The serve loop's editor of the spec: an admin or API edit is patched into the spec's
//! text, validated and planned against the live state, and only then written and applied.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::watch::Reconciler;
use super::{PlanError, Targets, plan_targets, render};
use crate::change::{EditCall, EditOutcome, Refusal, SpecEditor};
use crate::spec::edit::{EditError, SpecFiles, diff, write_atomically};
use crate::spec::{AdminChanges, location::Source};
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

fn refused(refusal: Refusal, errors: Vec<String>) -> EditOutcome {
    EditOutcome {
        refused: Some(refusal),
        errors,
        ..EditOutcome::default()
    }
}

impl Editor {
    /// Where edits go and the file new entries of a directory spec go to, as the spec
    /// on disk says now.
    fn settings(&self) -> (AdminChanges, String, Option<String>) {
        match crate::spec::load_unchecked(&self.spec_path) {
            Ok(loaded) => {
                let changes = loaded.admin_changes();
                let file = loaded
                    .spec
                    .admin
                    .changes_file
                    .clone()
                    .unwrap_or_else(|| "admin.toml".into());
                let why = match changes {
                    _ if loaded.spec.source.is_some() => Some(
                        "the spec is kept in git: pushing edits there (changes = \"commit\" or \"propose\") is not built yet; edit the repository"
                            .to_string(),
                    ),
                    AdminChanges::None => {
                        Some("edits are off here ([admin] changes = \"none\")".to_string())
                    }
                    AdminChanges::Commit | AdminChanges::Propose => Some(format!(
                        "[admin] changes = \"{}\" needs a spec kept in git ([source])",
                        changes.as_str()
                    )),
                    AdminChanges::Apply => None,
                };
                (changes, file, why)
            }
            Err(e) => (
                AdminChanges::None,
                String::new(),
                Some(format!("the spec cannot be read: {e}")),
            ),
        }
    }
}

impl SpecEditor for Editor {
    fn current(&self) -> (String, String) {
        let etag = SpecFiles::read(&self.spec_path)
            .map(|f| f.etag())
            .unwrap_or_default();
        let (changes, _, why) = self.settings();
        let mode = if why.is_some() {
            "none"
        } else {
            changes.as_str()
        };
        (etag, mode.to_string())
    }

    fn edit(&self, call: EditCall) -> EditOutcome {
        let _one_at_a_time = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let (_, changes_file, why_not) = self.settings();
        if let Some(why) = why_not {
            return refused(Refusal::ReadOnly, vec![why]);
        }
        let files = match SpecFiles::read(&self.spec_path) {
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
        let edited = match files.edit(&call.change, &changes_file) {
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
        let base_dir = if self.spec_path.is_dir() {
            self.spec_path.clone()
        } else {
            self.spec_path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("."))
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
        let loaded = match crate::spec::load_sources(sources, &base_dir) {
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
        let mut outcome = EditOutcome {
            plan: render::text(&plan, &render::Style { color: false }),
            add: summary.add,
            change: summary.change,
            destroy: summary.destroy,
            diff: changed
                .iter()
                .map(|(path, old, new)| {
                    // Named as in the spec's directory, not by the server's absolute path.
                    let name = path.strip_prefix(&base_dir).unwrap_or(path);
                    diff(&name.display().to_string(), old, new)
                })
                .collect(),
            etag: etag.clone(),
            ..EditOutcome::default()
        };
        if call.dry_run {
            return outcome;
        }
        for (path, _, new) in &changed {
            if let Err(e) = write_atomically(path, new) {
                outcome.refused = Some(Refusal::Failed);
                outcome
                    .errors
                    .push(format!("{}: not written: {e}", path.display()));
                return outcome;
            }
            outcome.written.push(path.display().to_string());
        }
        tracing::info!(
            change = %call.change.describe(),
            by = %call.author,
            files = %outcome.written.join(", "),
            "spec edited in the admin"
        );
        outcome.etag = SpecFiles::read(&self.spec_path)
            .map(|f| f.etag())
            .unwrap_or_default();
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
