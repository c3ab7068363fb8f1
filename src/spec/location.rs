//! Spec paths (`domains."example.com".aliases.hello.forward[1]`) and how a path is found
//! back in the TOML source, so every error a user sees says file:line:col.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};

/// One step of a path into the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// Where in the spec something is, independent of which file holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecPath(pub Vec<Seg>);

impl SpecPath {
    pub fn root() -> Self {
        SpecPath(Vec::new())
    }

    pub fn key(&self, k: impl Into<String>) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Key(k.into()));
        p
    }

    pub fn index(&self, i: usize) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }

    pub fn keys(parts: &[&str]) -> Self {
        SpecPath(parts.iter().map(|k| Seg::Key(k.to_string())).collect())
    }
}

impl fmt::Display for SpecPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for seg in &self.0 {
            match seg {
                Seg::Key(k) => {
                    if !first {
                        f.write_str(".")?;
                    }
                    let bare = !k.is_empty()
                        && k.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
                    if bare {
                        f.write_str(k)?;
                    } else {
                        write!(f, "{k:?}")?;
                    }
                }
                Seg::Index(i) => write!(f, "[{i}]")?,
            }
            first = false;
        }
        Ok(())
    }
}

/// One spec file's text.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
    pub text: String,
}

/// A position a person can jump to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// Line and column (both 1-based, column in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..text.floor_char_boundary(offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    (line, before[line_start..].chars().count() + 1)
}

pub fn location_of(source: &Source, span: Range<usize>) -> Location {
    let (line, column) = line_col(&source.text, span.start);
    Location {
        file: source.path.clone(),
        line,
        column,
    }
}

/// Finds where `path` is written, searching every source; the deepest match wins, so an
/// error in a nested key points at that key rather than at its table.
pub struct Locator<'a> {
    sources: &'a [Source],
    parsed: Vec<Option<toml::Spanned<DeTable<'a>>>>,
}

impl<'a> Locator<'a> {
    pub fn new(sources: &'a [Source]) -> Self {
        let parsed = sources
            .iter()
            .map(|s| DeTable::parse(&s.text).ok())
            .collect();
        Locator { sources, parsed }
    }

    pub fn locate(&self, path: &SpecPath) -> Option<Location> {
        let mut best: Option<(usize, usize, Range<usize>)> = None;
        for (i, table) in self.parsed.iter().enumerate() {
            let Some(table) = table else { continue };
            if let Some((depth, span)) = deepest(table.get_ref(), path)
                && best.as_ref().is_none_or(|(d, _, _)| depth > *d)
            {
                best = Some((depth, i, span));
            }
        }
        match best {
            Some((_, i, span)) => Some(location_of(&self.sources[i], span)),
            None if self.sources.len() == 1 => Some(Location {
                file: self.sources[0].path.clone(),
                line: 1,
                column: 1,
            }),
            None => None,
        }
    }

    pub fn path_of(&self, index: usize) -> &Path {
        &self.sources[index].path
    }
}

/// Walks `path` as far as it goes; returns the depth reached and the span to point at
/// (the key's span for a table entry, the element's span for an array item).
fn deepest(root: &DeTable<'_>, path: &SpecPath) -> Option<(usize, Range<usize>)> {
    let mut current: Option<&DeValue<'_>> = None;
    let mut table = Some(root);
    let mut found = None;
    for (depth, seg) in path.0.iter().enumerate() {
        match seg {
            Seg::Key(k) => {
                let t = table.or_else(|| current.and_then(|v| v.as_table()))?;
                let Some((key, value)) = t.iter().find(|(key, _)| key.get_ref() == k) else {
                    break;
                };
                found = Some((depth + 1, key.span()));
                current = Some(value.get_ref());
                table = None;
            }
            Seg::Index(i) => {
                let arr = current.and_then(|v| v.as_array())?;
                let Some(item) = arr.get(*i) else {
                    break;
                };
                found = Some((depth + 1, item.span()));
                current = Some(item.get_ref());
                table = None;
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_keys_in_table_headers_and_arrays() {
        let text = "[server]\nhostname = \"x\"\n\n[domains.\"a.test\".aliases.hello]\nforward = [\"a@b\", \"c@d\"]\n";
        let sources = vec![Source {
            path: "s.toml".into(),
            text: text.into(),
        }];
        let loc = Locator::new(&sources);
        let p = SpecPath::keys(&["domains", "a.test", "aliases", "hello", "forward"]).index(1);
        let at = loc.locate(&p).unwrap();
        assert_eq!((at.line, at.column), (5, 19));
        let p = SpecPath::keys(&["server", "hostname"]);
        assert_eq!(loc.locate(&p).unwrap().line, 2);
    }

    #[test]
    fn paths_print_like_toml_keys() {
        let p = SpecPath::keys(&["domains", "a.test", "aliases"]).index(2);
        assert_eq!(p.to_string(), "domains.\"a.test\".aliases[2]");
    }
}
