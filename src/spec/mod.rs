//! The desired state: the spec model users write, loading from a file or directory,
//! secret references, and validation that reports every problem with its location.

pub mod edit;
mod load;
pub mod location;
pub mod model;
pub mod secret;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};

pub use load::LoadedSpec;
pub use location::{Location, SpecPath};
pub use model::*;
pub use secret::{Secret, SecretRef, UrlRef};
pub use validate::{DNS_RECORD_TYPES, check_password_hash, parse_size};

/// One problem in a spec: where (a spec path, or an already rendered location) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub path: Option<SpecPath>,
    pub at: Option<String>,
    pub message: String,
}

impl SpecError {
    pub fn new(path: SpecPath, message: impl Into<String>) -> Self {
        SpecError {
            path: Some(path),
            at: None,
            message: message.into(),
        }
    }

    pub fn at_text(at: String, message: impl Into<String>) -> Self {
        SpecError {
            path: None,
            at: Some(at),
            message: message.into(),
        }
    }
}

/// Every problem found, rendered as `file:line:col: message` lines in source order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecErrors(pub Vec<String>);

impl SpecErrors {
    pub fn one(message: String) -> Self {
        SpecErrors(vec![message])
    }

    pub fn render(errors: Vec<SpecError>, sources: &[location::Source]) -> Self {
        let locator = location::Locator::new(sources);
        let mut located: Vec<(Option<Location>, String)> = errors
            .into_iter()
            .map(|e| {
                let loc = e.path.as_ref().and_then(|p| locator.locate(p));
                let line = match (&e.at, &loc, &e.path) {
                    (Some(at), _, _) => format!("{at}: {}", e.message),
                    (None, Some(loc), _) => format!("{loc}: {}", e.message),
                    (None, None, Some(p)) => format!("{p}: {}", e.message),
                    (None, None, None) => e.message,
                };
                (loc, line)
            })
            .collect();
        located.sort_by(|(a, _), (b, _)| {
            let key = |l: &Option<Location>| l.as_ref().map(|l| (l.file.clone(), l.line, l.column));
            key(a).cmp(&key(b))
        });
        let mut lines: Vec<String> = located.into_iter().map(|(_, l)| l).collect();
        lines.dedup();
        SpecErrors(lines)
    }
}

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in &self.0 {
            writeln!(f, "error: {line}")?;
        }
        let n = self.0.len();
        write!(
            f,
            "{n} error{} in the spec; nothing was changed.",
            if n == 1 { "" } else { "s" }
        )
    }
}

impl std::error::Error for SpecErrors {}

/// Loads and fully validates the spec at `path` (file or directory of *.toml).
pub fn load(path: &Path) -> Result<LoadedSpec, SpecErrors> {
    checked(load::load(path)?)
}

/// Loads and checks a spec given as text (a spec pasted into the web admin), named
/// `name` in its errors, with relative paths read from `base_dir`.
pub fn load_text(name: &str, text: String, base_dir: &Path) -> Result<LoadedSpec, SpecErrors> {
    let source = location::Source {
        path: PathBuf::from(name),
        text,
    };
    checked(load::load_sources(vec![source], base_dir.to_path_buf())?)
}

/// Loads and checks a spec made of texts not (yet) on disk: an edit before it is
/// written. Relative paths are read from `base_dir`.
pub fn load_sources(
    sources: Vec<location::Source>,
    base_dir: &Path,
) -> Result<LoadedSpec, SpecErrors> {
    checked(load::load_sources(sources, base_dir.to_path_buf())?)
}

/// `load_sources` without the checks (which read secret files): the structure only.
pub fn load_sources_unchecked(
    sources: Vec<location::Source>,
    base_dir: &Path,
) -> Result<LoadedSpec, SpecErrors> {
    load::load_sources(sources, base_dir.to_path_buf()).map(|(loaded, _)| loaded)
}

/// `load_text` without the checks (which read secret files): the structure only.
pub fn load_text_unchecked(
    name: &str,
    text: String,
    base_dir: &Path,
) -> Result<LoadedSpec, SpecErrors> {
    let source = location::Source {
        path: PathBuf::from(name),
        text,
    };
    load_sources_unchecked(vec![source], base_dir)
}

fn checked((loaded, mut errors): (LoadedSpec, Vec<SpecError>)) -> Result<LoadedSpec, SpecErrors> {
    // A key pruned for a structural error leaves its entity incomplete: semantic
    // complaints about that entity would only repeat the same mistake.
    let broken: Vec<SpecPath> = errors.iter().filter_map(|e| e.path.clone()).collect();
    errors.extend(validate::validate(&loaded).into_iter().filter(|e| {
        e.path.as_ref().is_none_or(|p| {
            !broken
                .iter()
                .any(|b| b.0.starts_with(&p.0) || p.0.starts_with(&b.0))
        })
    }));
    if errors.is_empty() {
        Ok(loaded)
    } else {
        Err(SpecErrors::render(errors, &loaded.sources))
    }
}

/// Loads a spec without judging it, for commands that only need to find the data
/// directory (status, queue) and must work while the spec is broken. Only unreadable or
/// syntactically broken TOML fails.
pub fn load_unchecked(path: &Path) -> Result<LoadedSpec, SpecErrors> {
    parse(path).map(|parsed| parsed.0)
}

/// A spec read and deserialized, not yet judged: the structure is there to look at (the
/// `[source]` table, the data directory) before `check` runs the semantic checks.
pub struct Parsed(LoadedSpec, Vec<SpecError>);

/// Reads and deserializes the spec at `path` once, for a caller that looks at it before
/// checking it (`load` is `parse` then `check`).
pub fn parse(path: &Path) -> Result<Parsed, SpecErrors> {
    load::load(path).map(|(loaded, structural)| Parsed(loaded, structural))
}

impl Parsed {
    /// The spec as read; keys that did not deserialize are left out.
    pub fn unchecked(&self) -> &LoadedSpec {
        &self.0
    }

    /// The spec, if it passes every check (`load`'s answer).
    pub fn check(self) -> Result<LoadedSpec, SpecErrors> {
        checked((self.0, self.1))
    }
}

impl LoadedSpec {
    /// Where the store, spool, mailboxes and keys live.
    pub fn data_dir(&self) -> std::path::PathBuf {
        let dir = self
            .spec
            .server
            .data_dir
            .clone()
            .unwrap_or_else(|| "data".into());
        if dir.is_absolute() {
            dir
        } else {
            self.base_dir.join(dir)
        }
    }

    /// The apply mode in effect: as declared, else auto for a spec kept in git (a
    /// commit is the reviewed change), manual for a local file.
    pub fn apply_mode(&self) -> ApplyMode {
        self.spec.server.apply.unwrap_or(if self.git.is_some() {
            ApplyMode::Auto
        } else {
            ApplyMode::Manual
        })
    }

    /// Where admin edits go: as declared, else "apply" for a local spec, "none" for one
    /// in git (pushing is a choice to declare).
    pub fn admin_changes(&self) -> AdminChanges {
        self.spec.admin.changes.unwrap_or(if self.git.is_some() {
            AdminChanges::None
        } else {
            AdminChanges::Apply
        })
    }

    /// Reports an error found after validation (e.g. while computing desired state).
    pub fn errors(&self, errors: Vec<SpecError>) -> SpecErrors {
        SpecErrors::render(errors, &self.sources)
    }
}
