//! Reads a spec from a file or a directory of `*.toml` files, merges the files, and
//! turns every syntax, type and unknown-key problem into a located, actionable error.

use std::path::{Path, PathBuf};

use toml::{Table, Value};

use super::location::{Locator, Seg, Source, SpecPath, location_of};
use super::model::{GitSource, Spec};
use super::{SpecError, SpecErrors};

/// A spec as loaded: the typed model plus the sources it came from.
#[derive(Debug, Clone)]
pub struct LoadedSpec {
    pub spec: Spec,
    pub sources: Vec<Source>,
    /// Relative paths in the spec (data_dir, secret files) are taken from here.
    pub base_dir: PathBuf,
    /// Where the spec came from when not from the file given ("git URL@commit").
    pub origin: Option<String>,
    /// The repository it was read from (the `[source]` of the file given), and the
    /// checkout it was read in.
    pub git: Option<(GitSource, PathBuf)>,
}

/// Tables that are collections of independent entries; the same key in two files merges
/// there. Anything else defined in two files is a duplicate definition.
fn merges_at(path: &[String]) -> bool {
    matches!(
        path.iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice(),
        [] | ["domains"]
            | ["domains", _]
            | ["domains", _, "aliases"]
            | ["dns"]
            | ["dns", "providers"]
    )
}

/// Loads the spec at `path` (file or directory). Structural errors are returned together;
/// the partially valid spec is still returned alongside them so semantic checks can run.
pub fn load(path: &Path) -> Result<(LoadedSpec, Vec<SpecError>), SpecErrors> {
    let files = spec_files(path)?;
    let base_dir = if path.is_dir() {
        path.to_path_buf()
    } else {
        path.parent().map(Path::to_path_buf).unwrap_or_default()
    };
    let base_dir = if base_dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base_dir
    };

    let mut sources = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .map_err(|e| SpecErrors::one(format!("{}: cannot read: {e}", file.display())))?;
        sources.push(Source { path: file, text });
    }
    load_sources(sources, base_dir)
}

/// Loads a spec from texts already read (`name` is how errors locate them), with
/// relative paths read from `base_dir`.
pub fn load_sources(
    sources: Vec<Source>,
    base_dir: PathBuf,
) -> Result<(LoadedSpec, Vec<SpecError>), SpecErrors> {
    // The common case, one valid file, deserializes straight from the text with
    // basic-toml, which keeps no span tree: a 100,000-alias spec peaks at ~90 MB of heap
    // instead of ~315 MB. Anything it refuses takes the path below, whose spans locate
    // every error.
    if let [single] = sources.as_slice()
        && let Ok(spec) = basic_toml::from_str::<Spec>(&single.text)
    {
        return Ok((
            LoadedSpec {
                origin: None,
                git: None,
                spec,
                sources,
                base_dir,
            },
            Vec::new(),
        ));
    }

    let mut errors = Vec::new();
    let mut merged = Table::new();
    for (i, source) in sources.iter().enumerate() {
        match source.text.parse::<Table>() {
            Ok(table) => merge(
                &mut merged,
                table,
                &mut Vec::new(),
                i,
                &sources,
                &mut errors,
            ),
            Err(e) => {
                let at = e.span().map(|s| location_of(source, s).to_string());
                let at = at.unwrap_or_else(|| source.path.display().to_string());
                let mut message = first_line(e.message());
                if message == "duplicate key"
                    && let Some(span) = e.span()
                {
                    message = duplicate(&source.text, span.start);
                }
                errors.push(SpecError::at_text(at, message));
            }
        }
    }
    if !errors.is_empty() {
        return Err(SpecErrors::render(errors, &sources));
    }

    let (spec, structural) = deserialize_all(Value::Table(merged));
    Ok((
        LoadedSpec {
            spec,
            sources,
            base_dir,
            origin: None,
            git: None,
        },
        structural,
    ))
}

/// toml says only "duplicate key": name the key, and where it was first defined (the
/// same table header, or the same key earlier in the same table).
fn duplicate(text: &str, at: usize) -> String {
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("").trim();
    let earlier: Vec<&str> = text[..line_start].lines().collect();
    let first = if line.starts_with('[') {
        let header = line.split('#').next().unwrap_or(line).trim();
        earlier.iter().position(|l| l.trim() == header)
    } else {
        let key = line.split('=').next().unwrap_or(line).trim();
        // Back to this table's header: the key is a duplicate within it.
        let table = earlier
            .iter()
            .rposition(|l| l.trim_start().starts_with('['));
        let from = table.map_or(0, |t| t + 1);
        earlier[from..]
            .iter()
            .position(|l| l.split('=').next().is_some_and(|k| k.trim() == key))
            .map(|i| i + from)
    };
    let what = line.split(" =").next().unwrap_or(line).trim();
    match first {
        Some(i) => format!(
            "{what} is defined twice (first at line {}); merge the two into one",
            i + 1
        ),
        None => format!("{what} is defined twice; merge the two into one"),
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).trim().to_string()
}

pub(super) fn spec_files(path: &Path) -> Result<Vec<PathBuf>, SpecErrors> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    if !path.is_dir() {
        return Err(SpecErrors::one(format!(
            "{}: no such spec file or directory (set --spec or FERRYMAIL_SPEC)",
            path.display()
        )));
    }
    let mut files = Vec::new();
    let mut dirs = vec![path.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| SpecErrors::one(format!("{}: cannot list: {e}", dir.display())))?;
        for entry in entries.flatten() {
            let p = entry.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|e| e == "toml") {
                files.push(p);
            }
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(SpecErrors::one(format!(
            "{}: no *.toml files in this directory",
            path.display()
        )));
    }
    Ok(files)
}

fn merge(
    into: &mut Table,
    from: Table,
    path: &mut Vec<String>,
    file: usize,
    sources: &[Source],
    errors: &mut Vec<SpecError>,
) {
    for (key, value) in from {
        path.push(key.clone());
        match (into.get_mut(&key), value) {
            (None, value) => {
                into.insert(key, value);
            }
            (Some(Value::Table(existing)), Value::Table(incoming)) if merges_at(path) => {
                merge(existing, incoming, path, file, sources, errors);
            }
            (Some(_), _) => {
                let spec_path = SpecPath(path.iter().cloned().map(Seg::Key).collect());
                let locator = Locator::new(&sources[..file]);
                let first = locator
                    .locate(&spec_path)
                    .map(|l| l.to_string())
                    .unwrap_or_default();
                let here = Locator::new(&sources[file..=file])
                    .locate(&spec_path)
                    .map(|l| l.to_string())
                    .unwrap_or_else(|| sources[file].path.display().to_string());
                errors.push(SpecError::at_text(
                    here,
                    format!(
                        "`{spec_path}` is already defined at {first}; define it in one file only"
                    ),
                ));
            }
        }
        path.pop();
    }
}

/// Deserializes the merged table, collecting every structural error: after each error
/// the offending key is pruned and deserialization retried, so one run reports all.
fn deserialize_all(mut value: Value) -> (Spec, Vec<SpecError>) {
    let mut errors = Vec::new();
    for _ in 0..200 {
        match serde_path_to_error::deserialize::<_, Spec>(value.clone()) {
            Ok(spec) => return (spec, errors),
            Err(e) => {
                let path = convert_path(e.path());
                let message = e.inner().to_string();
                let (error, prune) = explain(path, &message);
                let pruned = prune.0.last().is_some() && remove(&mut value, &prune);
                errors.push(error);
                if !pruned {
                    break;
                }
            }
        }
    }
    (Spec::default(), errors)
}

fn convert_path(path: &serde_path_to_error::Path) -> SpecPath {
    use serde_path_to_error::Segment;
    SpecPath(
        path.iter()
            .filter_map(|s| match s {
                Segment::Seq { index } => Some(Seg::Index(*index)),
                Segment::Map { key } => Some(Seg::Key(key.clone())),
                Segment::Enum { .. } | Segment::Unknown => None,
            })
            .collect(),
    )
}

/// Turns serde's message into the user's words and says which key to prune.
fn explain(path: SpecPath, message: &str) -> (SpecError, SpecPath) {
    let message = first_line(message);
    if let Some(rest) = message.strip_prefix("unknown field ") {
        let (field, candidates) = split_expected(rest);
        let at = if path.0.last() == Some(&Seg::Key(field.clone())) {
            path
        } else {
            path.key(&field)
        };
        let mut text = format!("unknown field \"{field}\"");
        if let Some(best) = did_you_mean(&field, &candidates) {
            text.push_str(&format!(", did you mean \"{best}\"?"));
        } else if !candidates.is_empty() {
            text.push_str(&format!(" (expected one of: {})", candidates.join(", ")));
        }
        return (SpecError::new(at.clone(), text), at);
    }
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        let (variant, candidates) = split_expected(rest);
        let mut text = format!("unknown value \"{variant}\"");
        match did_you_mean(&variant, &candidates) {
            Some(best) => text.push_str(&format!(", did you mean \"{best}\"?")),
            None => text.push_str(&format!(" (expected one of: {})", candidates.join(", "))),
        }
        return (SpecError::new(path.clone(), text), path);
    }
    if message.starts_with("missing field ") {
        // The entity lacks a required key: report it, then drop the whole entity.
        let text = format!("{message} in `{path}`");
        return (SpecError::new(path.clone(), text), path);
    }
    let mut text = message.replace("invalid type: ", "wrong type: ");
    for (rust, plain) in [
        ("expected u32", "expected a whole number"),
        ("expected u64", "expected a whole number"),
        ("expected a sequence", "expected a list"),
        ("expected a map", "expected a table"),
        ("expected a boolean", "expected true or false"),
        (
            "expected struct PasswordRef",
            "expected a password hash, e.g. password = { hash = \"$argon2id$…\" } (`ferrymail passwd` makes one), or { env = \"VAR\" } or { file = \"path\" } holding it",
        ),
        (
            "expected struct SecretRef",
            "expected a secret kept outside the spec: { env = \"VAR\" } or { file = \"path\" }",
        ),
        (
            "expected socket address",
            "expected an address and port in quotes, e.g. \"127.0.0.1:2525\" or \"[::]:25\"",
        ),
        (
            "invalid socket address syntax",
            "not an address and port: expected e.g. \"127.0.0.1:2525\" or \"[::]:25\"",
        ),
        (
            "invalid IP address syntax",
            "not an IP address: expected e.g. \"192.0.2.1\" or \"2001:db8::1\"",
        ),
    ] {
        text = text.replace(rust, plain);
    }
    // Any other struct is a table in the spec.
    if let Some(at) = text.find("expected struct ") {
        text.replace_range(at.., "expected a table");
    }
    (SpecError::new(path.clone(), text), path)
}

/// Splits "`fowrard`, expected one of `forward`, `mailbox`" into the name and candidates.
fn split_expected(rest: &str) -> (String, Vec<String>) {
    let mut parts = rest.split('`').skip(1).step_by(2).map(str::to_string);
    let name = parts.next().unwrap_or_default();
    (name, parts.collect())
}

pub(crate) fn did_you_mean(word: &str, candidates: &[String]) -> Option<String> {
    candidates
        .iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(d, c)| *d <= (c.len() / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.clone())
}

fn remove(root: &mut Value, path: &SpecPath) -> bool {
    let Some((last, parents)) = path.0.split_last() else {
        return false;
    };
    let mut current = root;
    for seg in parents {
        current = match (seg, current) {
            (Seg::Key(k), Value::Table(t)) => match t.get_mut(k) {
                Some(v) => v,
                None => return false,
            },
            (Seg::Index(i), Value::Array(a)) => match a.get_mut(*i) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, current) {
        (Seg::Key(k), Value::Table(t)) => t.remove(k).is_some(),
        (Seg::Index(i), Value::Array(a)) if *i < a.len() => {
            a.remove(*i);
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_the_closest_field() {
        let c = vec![
            "forward".to_string(),
            "mailbox".to_string(),
            "reject".to_string(),
        ];
        assert_eq!(did_you_mean("fowrard", &c).as_deref(), Some("forward"));
        assert_eq!(did_you_mean("zzzzzzzz", &c), None);
    }

    #[test]
    fn collects_every_unknown_key_in_one_run() {
        let v: Value = toml::from_str(
            "[server]\nhostnme = \"a\"\n[domains.\"a.test\".aliases.x]\nfowrard = [\"a@b.c\"]\n",
        )
        .unwrap();
        let (_, errors) = deserialize_all(v);
        let texts: Vec<String> = errors.iter().map(|e| e.message.clone()).collect();
        assert_eq!(texts.len(), 2, "{texts:?}");
        assert!(
            texts
                .iter()
                .any(|t| t.contains("did you mean \"hostname\""))
        );
        assert!(texts.iter().any(|t| t.contains("did you mean \"forward\"")));
    }

    #[test]
    fn type_errors_are_located_and_pruned() {
        let v: Value = toml::from_str(
            "[listeners]\nmx = \"127.0.0.1\"\n[domains.\"a.test\".aliases.x]\nmailbox = { password = \"secret\" }\n[domains.\"a.test\".aliases.y]\nforward = [\"z@a.test\"]\n",
        )
        .unwrap();
        let (spec, errors) = deserialize_all(v);
        let found: Vec<String> = errors.iter().map(|e| e.message.clone()).collect();
        assert_eq!(
            found,
            [
                "wrong type: string \"secret\", expected a password hash, e.g. password = { hash = \"$argon2id$…\" } (`ferrymail passwd` makes one), or { env = \"VAR\" } or { file = \"path\" } holding it",
                "not an address and port: expected e.g. \"127.0.0.1:2525\" or \"[::]:25\""
            ]
        );
        // Pruned, the rest is there for the checks that need the whole spec.
        assert!(spec.domains["a.test"].aliases.contains_key("y"));
    }

    #[test]
    fn a_duplicate_says_what_and_where_it_was_first() {
        let text = "[a]\nx = 1\n\n[b]\nx = 1\ny = 2\nx = 3\n[a]\n";
        let at = text.rfind("x = 3").unwrap();
        assert_eq!(
            duplicate(text, at),
            "x is defined twice (first at line 5); merge the two into one"
        );
        let at = text.rfind("[a]").unwrap() + 1;
        assert_eq!(
            duplicate(text, at),
            "[a] is defined twice (first at line 1); merge the two into one"
        );
    }
}
