//! Edits of the spec's text for the web admin and the API: each change is a minimal
//! patch made with toml_edit, so comments, key order and formatting stay as written.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::Digest;
use toml_edit::{Array, ArrayOfTables, DocumentMut, InlineTable, Item, Table, TableLike, Value};

use crate::change::{AliasFields, Change, DomainFields, PatternFields};

/// A table being edited, and whether it is written inline (`{ … }`).
struct Node<'a> {
    table: &'a mut dyn TableLike,
    inline: bool,
}

fn node(item: &mut Item) -> Option<Node<'_>> {
    let inline = matches!(item, Item::Value(Value::InlineTable(_)));
    item.as_table_like_mut().map(|table| Node { table, inline })
}

#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// What the change names is not in the spec.
    #[error("{0}")]
    NotFound(String),
    /// What the change would add is there already.
    #[error("{0}")]
    Exists(String),
    /// The change itself does not make sense (a quota without a mailbox, say).
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: cannot be edited: {message}")]
    Unparsable { path: String, message: String },
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
}

/// The spec's files as read now: what an edit patches and what its ETag covers.
#[derive(Debug, Clone)]
pub struct SpecFiles {
    pub files: Vec<(PathBuf, String)>,
    /// Set when the spec is a directory: new entries go to a file in it.
    pub directory: Option<PathBuf>,
}

/// What an edit made: every file's text afterwards (unchanged ones as they were).
#[derive(Debug, Clone)]
pub struct Edited {
    pub files: Vec<(PathBuf, String)>,
}

/// The tag of spec files given as (path, text): `SpecFiles::etag`'s, also for the texts
/// a load read (`LoadedSpec::sources`).
pub fn tag_of<'a>(files: impl IntoIterator<Item = (&'a Path, &'a str)>) -> String {
    let mut digest = sha2::Sha256::new();
    for (path, text) in files {
        digest.update(path.as_os_str().as_encoded_bytes());
        digest.update([0]);
        digest.update((text.len() as u64).to_be_bytes());
        digest.update(text.as_bytes());
    }
    let hash = digest.finalize();
    hash.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

impl SpecFiles {
    /// Reads the spec at `path`: the file, or every *.toml of the directory.
    pub fn read(path: &Path) -> Result<SpecFiles, EditError> {
        let io = |p: &Path, error| EditError::Io {
            path: p.display().to_string(),
            error,
        };
        let names = super::load::spec_files(path).map_err(|e| EditError::Io {
            path: path.display().to_string(),
            error: std::io::Error::other(e.to_string()),
        })?;
        let mut files = Vec::new();
        for name in names {
            let text = std::fs::read_to_string(&name).map_err(|e| io(&name, e))?;
            files.push((name, text));
        }
        Ok(SpecFiles {
            files,
            directory: path.is_dir().then(|| path.to_path_buf()),
        })
    }

    /// A tag of every file's name and bytes: a form loaded under one tag is refused
    /// once the spec has changed under it.
    pub fn etag(&self) -> String {
        tag_of(
            self.files
                .iter()
                .map(|(path, text)| (path.as_path(), text.as_str())),
        )
    }

    /// The files after `change`; new entries of a directory spec go to `changes_file`.
    pub fn edit(&self, change: &Change, changes_file: &str) -> Result<Edited, EditError> {
        let mut files = self.files.clone();
        let mut docs = Vec::new();
        for (path, text) in &files {
            let doc = text
                .parse::<DocumentMut>()
                .map_err(|e| EditError::Unparsable {
                    path: path.display().to_string(),
                    message: e.message().lines().next().unwrap_or_default().to_string(),
                })?;
            docs.push(doc);
        }
        let target = |files: &mut Vec<(PathBuf, String)>, docs: &mut Vec<DocumentMut>| {
            new_entries_file(&self.directory, changes_file, files, docs)
        };
        match change {
            Change::AddDomain { name, fields } => {
                if find(&docs, &["domains", name]).is_some() {
                    return Err(EditError::Exists(format!(
                        "domain {name} is in the spec already"
                    )));
                }
                let i = target(&mut files, &mut docs)?;
                let domain = insert_domain(&mut docs[i], name);
                domain_fields(domain, fields)?;
            }
            Change::EditDomain { name, fields } => {
                let i = find(&docs, &["domains", name]).ok_or_else(|| no_domain(name))?;
                let domain =
                    table_at(&mut docs[i], &["domains", name]).ok_or_else(|| no_domain(name))?;
                domain_fields(domain, fields)?;
            }
            Change::RemoveDomain { name } => {
                let mut found = false;
                for doc in docs.iter_mut() {
                    if let Some(mut domains) = table_at(doc, &["domains"]) {
                        found |= domains.table.contains_key(name);
                        set(&mut domains, name, None, None);
                    }
                    // Aliases listed by full address go with their domain.
                    if let Some(mut aliases) = table_at(doc, &["aliases"]) {
                        let suffix = format!("@{}", name.to_lowercase());
                        let gone: Vec<String> = aliases
                            .table
                            .iter()
                            .map(|(k, _)| k.to_string())
                            .filter(|k| k.to_lowercase().ends_with(&suffix))
                            .collect();
                        for key in gone {
                            set(&mut aliases, &key, None, None);
                        }
                    }
                }
                if !found {
                    return Err(no_domain(name));
                }
            }
            Change::AddAlias { address, fields } => {
                let (local, domain) = split(address)?;
                if locate_alias(&docs, local, domain).is_some() {
                    return Err(EditError::Exists(format!(
                        "alias {address} is in the spec already"
                    )));
                }
                if find(&docs, &["domains", domain]).is_none() {
                    return Err(EditError::Invalid(format!(
                        "{domain} is not a domain of this server; add the domain first"
                    )));
                }
                let i = target(&mut files, &mut docs)?;
                let alias = insert_alias(&mut docs[i], domain, local);
                alias_fields(alias, fields, address)?;
            }
            Change::EditAlias { address, fields } => {
                let alias = alias_mut(&mut docs, address)?;
                alias_fields(alias, fields, address)?;
            }
            Change::RemoveAlias { address } => {
                let (local, domain) = split(address)?;
                let (i, path) =
                    locate_alias(&docs, local, domain).ok_or_else(|| no_alias(address))?;
                let (last, parent) = path.split_last().unwrap_or((&path[0], &[]));
                let keys: Vec<&str> = parent.iter().map(String::as_str).collect();
                if let Some(mut table) = table_at(&mut docs[i], &keys) {
                    set(&mut table, last, None, None);
                }
            }
            Change::AddPattern { domain, fields } => {
                let i = patterns_file(&docs, domain)?;
                let item = table_at(&mut docs[i], &["domains", domain])
                    .ok_or_else(|| no_domain(domain))?;
                if fields.regex.as_deref().unwrap_or_default().is_empty() {
                    return Err(EditError::Invalid("a pattern needs a regex".into()));
                }
                let pattern = push_pattern(item);
                pattern_fields(pattern, fields)?;
            }
            Change::EditPattern {
                domain,
                index,
                fields,
            } => {
                let i = patterns_file(&docs, domain)?;
                let pattern = pattern_at(&mut docs[i], domain, *index)?;
                pattern_fields(pattern, fields)?;
            }
            Change::RemovePattern { domain, index } => {
                let i = patterns_file(&docs, domain)?;
                let patterns = table_at(&mut docs[i], &["domains", domain])
                    .and_then(|d| d.table.get_mut("patterns"))
                    .ok_or_else(|| no_pattern(domain, *index))?;
                let removed = match patterns {
                    Item::ArrayOfTables(list) if *index < list.len() => {
                        list.remove(*index);
                        true
                    }
                    Item::Value(Value::Array(list)) if *index < list.len() => {
                        list.remove(*index);
                        true
                    }
                    _ => false,
                };
                if !removed {
                    return Err(no_pattern(domain, *index));
                }
            }
            Change::NewPassword { address, hash } => {
                let alias = alias_mut(&mut docs, address)?;
                let Some(mut mailbox) = alias.table.get_mut("mailbox").and_then(node) else {
                    return Err(EditError::Invalid(format!(
                        "{address} has no mailbox, so no password"
                    )));
                };
                set(&mut mailbox, "password", Some(password(hash)), None);
            }
        }
        for ((_, text), doc) in files.iter_mut().zip(&docs) {
            let new = doc.to_string();
            if new != *text {
                *text = new;
            }
        }
        Ok(Edited { files })
    }
}

impl Edited {
    /// The files this edit changed or made: (path, text before, text after).
    pub fn changed<'a>(&'a self, before: &'a SpecFiles) -> Vec<(&'a Path, &'a str, &'a str)> {
        self.files
            .iter()
            .map(|(path, text)| {
                let old = before
                    .files
                    .iter()
                    .find(|(p, _)| p == path)
                    .map(|(_, t)| t.as_str())
                    .unwrap_or("");
                (path.as_path(), old, text.as_str())
            })
            .filter(|(_, old, new)| old != new)
            .collect()
    }
}

fn no_domain(name: &str) -> EditError {
    EditError::NotFound(format!("domain {name} is not in the spec"))
}

fn no_alias(address: &str) -> EditError {
    EditError::NotFound(format!("alias {address} is not in the spec"))
}

fn no_pattern(domain: &str, index: usize) -> EditError {
    EditError::NotFound(format!("{domain} has no pattern {}", index + 1))
}

/// "local@domain", split at the last "@".
fn split(address: &str) -> Result<(&str, &str), EditError> {
    match address.rsplit_once('@') {
        Some((local, domain)) if !local.is_empty() && !domain.is_empty() => Ok((local, domain)),
        _ => Err(EditError::Invalid(format!(
            "{address:?} is not an address (local@domain)"
        ))),
    }
}

/// The first file whose document has a table-like at `keys`.
fn find(docs: &[DocumentMut], keys: &[&str]) -> Option<usize> {
    docs.iter().position(|doc| {
        let mut item = doc.as_item();
        for key in keys {
            match item.get(key) {
                Some(next) => item = next,
                None => return false,
            }
        }
        item.is_table_like()
    })
}

/// The table (or inline table) at `keys`, if the document has one.
fn table_at<'a>(doc: &'a mut DocumentMut, keys: &[&str]) -> Option<Node<'a>> {
    let mut item = doc.as_item_mut();
    for key in keys {
        item = item.get_mut(key)?;
    }
    node(item)
}

/// Where an alias is declared: the file, and its keys there (under its domain's
/// aliases, or in the top-level `[aliases]` by full address).
fn locate_alias(docs: &[DocumentMut], local: &str, domain: &str) -> Option<(usize, Vec<String>)> {
    let under_domain = ["domains", domain, "aliases", local];
    if let Some(i) = find(docs, &under_domain) {
        return Some((i, under_domain.iter().map(|s| s.to_string()).collect()));
    }
    let address = format!("{local}@{domain}");
    find(docs, &["aliases", &address]).map(|i| (i, vec!["aliases".to_string(), address]))
}

fn alias_mut<'a>(docs: &'a mut [DocumentMut], address: &str) -> Result<Node<'a>, EditError> {
    let (local, domain) = split(address)?;
    let (i, path) = locate_alias(docs, local, domain).ok_or_else(|| no_alias(address))?;
    let keys: Vec<&str> = path.iter().map(String::as_str).collect();
    table_at(&mut docs[i], &keys).ok_or_else(|| no_alias(address))
}

/// The file new entries go to: the one file, or `changes_file` in the directory (made
/// empty if it is not there yet).
fn new_entries_file(
    directory: &Option<PathBuf>,
    changes_file: &str,
    files: &mut Vec<(PathBuf, String)>,
    docs: &mut Vec<DocumentMut>,
) -> Result<usize, EditError> {
    let Some(dir) = directory else {
        return Ok(0);
    };
    let name = Path::new(changes_file);
    let plain = name
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    if !plain || name.extension().is_none_or(|e| e != "toml") {
        return Err(EditError::Invalid(format!(
            "admin.changes_file {changes_file:?} must be a *.toml file inside the spec directory"
        )));
    }
    let path = dir.join(name);
    if let Some(i) = files.iter().position(|(p, _)| *p == path) {
        return Ok(i);
    }
    files.push((path, String::new()));
    docs.push(DocumentMut::new());
    Ok(files.len() - 1)
}

/// The file a domain's patterns are edited in: the one declaring them, else the one
/// declaring the domain (a list cannot be split between files).
fn patterns_file(docs: &[DocumentMut], domain: &str) -> Result<usize, EditError> {
    docs.iter()
        .position(|doc| {
            doc.get("domains")
                .and_then(|d| d.get(domain))
                .and_then(|d| d.get("patterns"))
                .is_some()
        })
        .or_else(|| find(docs, &["domains", domain]))
        .ok_or_else(|| no_domain(domain))
}

/// The highest position of a table at or under `item`: a new table placed there comes
/// after everything the item has.
fn last_position(item: &Item) -> Option<isize> {
    match item {
        Item::Table(table) => table
            .iter()
            .filter_map(|(_, child)| last_position(child))
            .chain(table.position())
            .max(),
        Item::ArrayOfTables(list) => list
            .iter()
            .flat_map(|t| {
                t.iter()
                    .filter_map(|(_, child)| last_position(child))
                    .chain(t.position())
            })
            .max(),
        _ => None,
    }
}

/// A new `[domains."NAME"]` after the last domain's tables (or at the end).
fn insert_domain<'a>(doc: &'a mut DocumentMut, name: &str) -> Node<'a> {
    let end = last_position(doc.as_item()).map_or(0, |p| p + 1);
    let after = doc.get("domains").and_then(last_position).unwrap_or(end);
    let root = doc.as_table_mut();
    if !root.contains_key("domains") {
        let mut domains = Table::new();
        domains.set_implicit(true);
        domains.set_position(Some(after));
        root.insert("domains", Item::Table(domains));
    }
    let Some(domains) = root.get_mut("domains") else {
        unreachable!("inserted above")
    };
    insert_entry(domains, name, after)
}

/// A new alias entry under `domains.DOMAIN.aliases` in this document.
fn insert_alias<'a>(doc: &'a mut DocumentMut, domain: &str, local: &str) -> Node<'a> {
    let end = last_position(doc.as_item()).map_or(0, |p| p + 1);
    let root = doc.as_table_mut();
    if !root.contains_key("domains") {
        let mut domains = Table::new();
        domains.set_implicit(true);
        root.insert("domains", Item::Table(domains));
    }
    let Some(domains) = root.get_mut("domains") else {
        unreachable!("inserted above")
    };
    // The domain in this file, or (another file declares it) an implicit one here.
    if domains.get(domain).is_none()
        && let Some(domains) = domains.as_table_like_mut()
    {
        let mut table = Table::new();
        table.set_implicit(true);
        domains.insert(domain, Item::Table(table));
    }
    let Some(domain_item) = domains.get_mut(domain) else {
        unreachable!("inserted above")
    };
    let after = last_position(domain_item).unwrap_or(end);
    if domain_item.get("aliases").is_none() {
        let aliases = if domain_item.is_inline_table() {
            Item::Value(Value::InlineTable(InlineTable::new()))
        } else {
            let mut t = Table::new();
            t.set_implicit(true);
            Item::Table(t)
        };
        if let Some(table) = domain_item.as_table_like_mut() {
            table.insert("aliases", aliases);
        }
    }
    let Some(aliases) = domain_item.get_mut("aliases") else {
        unreachable!("inserted above")
    };
    insert_entry(aliases, local, after)
}

/// A new entry `key` in a table: inline where its siblings are written inline (or the
/// parent is an inline table), else a `[table]` placed at `position`.
fn insert_entry<'a>(parent: &'a mut Item, key: &str, position: isize) -> Node<'a> {
    let inline = match &*parent {
        Item::Value(Value::InlineTable(_)) => true,
        Item::Table(t) => !t.is_implicit() && t.iter().any(|(_, i)| i.is_value()),
        _ => false,
    };
    let entry = if inline {
        Item::Value(Value::InlineTable(InlineTable::new()))
    } else {
        let mut table = Table::new();
        table.set_position(Some(position));
        Item::Table(table)
    };
    let parent_inline = parent.is_inline_table();
    if let Some(table) = parent.as_table_like_mut() {
        table.insert(key, entry);
        if parent_inline {
            table.fmt();
        }
    }
    match parent.get_mut(key).and_then(node) {
        Some(node) => node,
        None => unreachable!("inserted above"),
    }
}

/// A new pattern at the end of the domain's list (made if it has none).
fn push_pattern<'a>(domain: Node<'a>) -> Node<'a> {
    let position = domain
        .table
        .iter()
        .filter_map(|(_, i)| last_position(i))
        .max()
        .unwrap_or(0);
    if domain.table.get("patterns").is_none() {
        let list = if domain.inline {
            Item::Value(Value::Array(Array::new()))
        } else {
            Item::ArrayOfTables(ArrayOfTables::new())
        };
        domain.table.insert("patterns", list);
    }
    let Some(patterns) = domain.table.get_mut("patterns") else {
        unreachable!("inserted above")
    };
    if !matches!(
        patterns,
        Item::ArrayOfTables(_) | Item::Value(Value::Array(_))
    ) {
        // Written as something else (a validation error anyway): replaced.
        *patterns = Item::ArrayOfTables(ArrayOfTables::new());
    }
    match patterns {
        Item::Value(Value::Array(list)) => {
            // The new element written as the one before it is (own line or not).
            let decor = list.iter().last().map(|v| v.decor().clone());
            let mut value = Value::InlineTable(InlineTable::new());
            if let Some(decor) = decor {
                *value.decor_mut() = decor;
            }
            list.push_formatted(value);
            let last = list.len() - 1;
            match list.get_mut(last).and_then(Value::as_inline_table_mut) {
                Some(table) => Node {
                    table,
                    inline: true,
                },
                None => unreachable!("pushed above"),
            }
        }
        Item::ArrayOfTables(list) => {
            let mut table = Table::new();
            table.set_position(Some(position));
            list.push(table);
            let last = list.len() - 1;
            match list.get_mut(last) {
                Some(table) => Node {
                    table,
                    inline: false,
                },
                None => unreachable!("pushed above"),
            }
        }
        _ => unreachable!("made a list above"),
    }
}

fn pattern_at<'a>(
    doc: &'a mut DocumentMut,
    domain: &str,
    index: usize,
) -> Result<Node<'a>, EditError> {
    let patterns = table_at(doc, &["domains", domain])
        .and_then(|d| d.table.get_mut("patterns"))
        .ok_or_else(|| no_pattern(domain, index))?;
    let found = match patterns {
        Item::ArrayOfTables(list) => list.get_mut(index).map(|table| Node {
            table,
            inline: false,
        }),
        Item::Value(Value::Array(list)) => list
            .get_mut(index)
            .and_then(Value::as_inline_table_mut)
            .map(|table| Node {
                table,
                inline: true,
            }),
        _ => None,
    };
    found.ok_or_else(|| no_pattern(domain, index))
}

fn domain_fields(mut domain: Node, fields: &DomainFields) -> Result<(), EditError> {
    if let Some(provider) = &fields.dns_provider {
        set(&mut domain, "dns_provider", text(provider), None);
    }
    if let Some(selectors) = &fields.dkim {
        let mut list = Array::new();
        for entry in selectors {
            let (selector, algorithm) = match entry.split_once(':') {
                Some((s, a)) => (s.trim(), Some(a.trim())),
                None => (entry.trim(), None),
            };
            if selector.is_empty() {
                return Err(EditError::Invalid("a DKIM selector cannot be empty".into()));
            }
            let mut key = InlineTable::new();
            key.insert("selector", Value::from(selector));
            match algorithm {
                None | Some("rsa-2048") => {}
                Some("ed25519") => {
                    key.insert("algorithm", Value::from("ed25519"));
                }
                Some(other) => {
                    return Err(EditError::Invalid(format!(
                        "DKIM algorithm {other:?}: rsa-2048 or ed25519"
                    )));
                }
            }
            list.push(Value::InlineTable(key));
        }
        set(&mut domain, "dkim", Some(Value::Array(list)), None);
    }
    if let Some(rule) = &fields.catch_all {
        if rule.remove {
            set(&mut domain, "catch_all", None, None);
        } else {
            if domain.table.get("catch_all").is_none() {
                let empty = Value::InlineTable(InlineTable::new());
                set(&mut domain, "catch_all", Some(empty), None);
            }
            let Some(catch_all) = domain.table.get_mut("catch_all").and_then(node) else {
                return Err(EditError::Invalid(
                    "catch_all is written as something other than a table".into(),
                ));
            };
            routing_fields(
                catch_all,
                &rule.forward,
                &rule.reject,
                &rule.message,
                rule.enabled,
            )?;
        }
    }
    Ok(())
}

fn pattern_fields(mut pattern: Node, fields: &PatternFields) -> Result<(), EditError> {
    if let Some(regex) = &fields.regex {
        if regex.is_empty() {
            return Err(EditError::Invalid("a pattern needs a regex".into()));
        }
        set(
            &mut pattern,
            "regex",
            Some(Value::from(regex.as_str())),
            None,
        );
    }
    routing_fields(
        pattern,
        &fields.forward,
        &fields.reject,
        &fields.message,
        fields.enabled,
    )
    .map(drop)
}

fn alias_fields(alias: Node, fields: &AliasFields, address: &str) -> Result<(), EditError> {
    let mut alias = routing_fields(
        alias,
        &fields.forward,
        &fields.reject,
        &fields.message,
        fields.enabled,
    )?;
    match fields.mailbox {
        Some(false) => set(&mut alias, "mailbox", None, None),
        Some(true) if alias.table.get("mailbox").is_none() => {
            let empty = Value::InlineTable(InlineTable::new());
            set(&mut alias, "mailbox", Some(empty), None);
        }
        _ => {}
    }
    let wants_mailbox =
        fields.quota.as_deref().is_some_and(|q| !q.is_empty()) || fields.password_hash.is_some();
    match alias.table.get_mut("mailbox").and_then(node) {
        Some(mut mailbox) => {
            if let Some(hash) = &fields.password_hash {
                set(&mut mailbox, "password", Some(password(hash)), None);
            }
            if let Some(quota) = &fields.quota {
                set(&mut mailbox, "quota", text(quota), None);
            }
        }
        None if wants_mailbox => {
            return Err(EditError::Invalid(format!(
                "{address} has no mailbox: a quota or password needs one"
            )));
        }
        None => {}
    }
    Ok(())
}

/// `{ hash = "…" }`: a password as the spec holds it.
fn password(hash: &str) -> Value {
    let mut password = InlineTable::new();
    password.insert("hash", Value::from(hash));
    Value::InlineTable(password)
}

/// The keys aliases, patterns and catch-alls share.
fn routing_fields<'a>(
    mut table: Node<'a>,
    forward: &Option<Vec<String>>,
    reject: &Option<String>,
    message: &Option<String>,
    enabled: Option<bool>,
) -> Result<Node<'a>, EditError> {
    if let Some(forward) = forward {
        let targets: Vec<&str> = forward
            .iter()
            .map(|t| t.trim())
            .filter(|t| !t.is_empty())
            .collect();
        let value = (!targets.is_empty()).then(|| Value::Array(targets.into_iter().collect()));
        set(&mut table, "forward", value, None);
    }
    if let Some(reject) = reject {
        if !matches!(reject.as_str(), "" | "quiet" | "soft" | "hard") {
            return Err(EditError::Invalid(format!(
                "reject {reject:?}: quiet, soft or hard (or \"\" for none)"
            )));
        }
        set(&mut table, "reject", text(reject), None);
    }
    if let Some(message) = message {
        set(&mut table, "message", text(message), None);
    }
    if let Some(enabled) = enabled {
        set(
            &mut table,
            "enabled",
            Some(Value::from(enabled)),
            Some(true),
        );
    }
    Ok(table)
}

/// A text value, or none for "".
fn text(value: &str) -> Option<Value> {
    let value = value.trim();
    (!value.is_empty()).then(|| Value::from(value))
}

/// Sets (Some) or removes (None) `key`, touching nothing when it already says that; a
/// key that is absent stays absent when the new value is its default. An inline table
/// that gains or loses a key is re-spaced (its own line only: toml_edit would leave
/// " , " behind); a `[table]`'s other lines and comments are never touched.
fn set(node: &mut Node, key: &str, value: Option<Value>, default: Option<bool>) {
    let table = &mut *node.table;
    let reshaped = match (value, table.get_mut(key)) {
        (None, Some(_)) => {
            table.remove(key);
            true
        }
        (None, None) => false,
        (Some(new), Some(Item::Value(old))) => {
            if !same(old, &new) {
                let decor = old.decor().clone();
                *old = new;
                *old.decor_mut() = decor;
            }
            false
        }
        (Some(new), Some(other)) => {
            *other = Item::Value(new);
            false
        }
        (Some(new), None) => {
            if default.is_some() && new.as_bool() == default {
                return;
            }
            table.insert(key, Item::Value(new));
            true
        }
    };
    if reshaped && node.inline {
        table.fmt();
    }
}

/// Whether two values say the same, however each is written.
fn same(a: &Value, b: &Value) -> bool {
    let parse = |v: &Value| {
        let mut bare = v.clone();
        bare.decor_mut().clear();
        format!("v = {bare}").parse::<toml::Table>().ok()
    };
    parse(a) == parse(b)
}

/// A short line diff of one file's edit (a few lines of context), as `+`/`-` lines.
pub fn diff(name: &str, old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let max_suffix = a.len().min(b.len()) - prefix;
    let suffix = a
        .iter()
        .rev()
        .zip(b.iter().rev())
        .take(max_suffix)
        .take_while(|(x, y)| x == y)
        .count();
    const CONTEXT: usize = 2;
    let start = prefix.saturating_sub(CONTEXT);
    let mut out = format!("--- {name}\n+++ {name}\n@@ line {} @@\n", start + 1);
    for line in &a[start..prefix] {
        out.push_str(&format!("  {line}\n"));
    }
    for line in &a[prefix..a.len() - suffix] {
        out.push_str(&format!("- {line}\n"));
    }
    for line in &b[prefix..b.len() - suffix] {
        out.push_str(&format!("+ {line}\n"));
    }
    let end = (a.len() - suffix + CONTEXT).min(a.len());
    for line in &a[a.len() - suffix..end] {
        out.push_str(&format!("  {line}\n"));
    }
    out
}

/// Writes `text` to `path` whole or not at all: a temporary file beside it, fsynced,
/// with the old file's permissions, renamed over it, and the directory fsynced.
pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::fs::PermissionsExt;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o600);
    let temporary = dir.join(format!(".{name}.{}.edit", std::process::id()));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&temporary)?;
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::RuleFields;

    const SPEC: &str = r#"# The mail server of example.test.
[server]
hostname = "mx.example.test"   # the MX target

# Our one domain.
[domains."example.test"]
dmarc_policy = "reject"

[domains."example.test".aliases.hello]
forward = ["a@elsewhere.net"]   # Alice reads hello@

# Bob's mailbox.
[domains."example.test".aliases.bob]
mailbox = { quota = "1GB" }

[[domains."example.test".patterns]]
regex = "^shop-(.+)$"
forward = ["shop@elsewhere.net"]

# Who runs the admin.
[admin]
api_tokens = {}
"#;

    fn one(text: &str) -> SpecFiles {
        SpecFiles {
            files: vec![(PathBuf::from("ferrymail.toml"), text.to_string())],
            directory: None,
        }
    }

    fn edited(text: &str, change: Change) -> String {
        let files = one(text);
        let out = files.edit(&change, "admin.toml").expect("edit");
        let new = out.files[0].1.clone();
        // Always a spec that parses again.
        crate::spec::load_text_unchecked("t.toml", new.clone(), Path::new("."))
            .unwrap_or_else(|e| panic!("edited spec does not load: {e}\n{new}"));
        new
    }

    /// The old text is the new one with some lines taken out: nothing written before
    /// was changed, moved or lost.
    fn only_added(old: &str, new: &str) -> Vec<String> {
        let mut added = Vec::new();
        let mut old_lines = old.lines().peekable();
        for line in new.lines() {
            if old_lines.peek() == Some(&line) {
                old_lines.next();
            } else {
                added.push(line.to_string());
            }
        }
        assert_eq!(old_lines.next(), None, "an old line is gone:\n{new}");
        added
    }

    fn alias(forward: &[&str]) -> AliasFields {
        AliasFields {
            forward: Some(forward.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        }
    }

    #[test]
    fn a_new_alias_is_added_after_its_siblings_and_nothing_else_moves() {
        let new = edited(
            SPEC,
            Change::AddAlias {
                address: "sales@example.test".into(),
                fields: AliasFields {
                    enabled: Some(true),
                    ..alias(&["s@elsewhere.net"])
                },
            },
        );
        let added = only_added(SPEC, &new);
        assert_eq!(
            added,
            vec![
                "[domains.\"example.test\".aliases.sales]",
                "forward = [\"s@elsewhere.net\"]",
                ""
            ],
            "{new}"
        );
        // Before the [admin] table and its comment, inside the domain.
        assert!(new.find("aliases.sales]").unwrap() < new.find("# Who runs").unwrap());
    }

    #[test]
    fn an_alias_in_an_inline_table_stays_inline() {
        let spec = "[domains.\"a.test\"]\naliases = { x = { forward = [\"y@z.test\"] } }\n";
        let new = edited(
            spec,
            Change::AddAlias {
                address: "w@a.test".into(),
                fields: alias(&["m@n.test"]),
            },
        );
        assert!(
            new.contains(
                "aliases = { x = { forward = [\"y@z.test\"] }, w = { forward = [\"m@n.test\"] } }"
            ),
            "{new}"
        );
    }

    #[test]
    fn editing_an_alias_keeps_its_comment_and_the_keys_it_did_not_touch() {
        let new = edited(
            SPEC,
            Change::EditAlias {
                address: "hello@example.test".into(),
                fields: alias(&["a@elsewhere.net", "b@elsewhere.net"]),
            },
        );
        assert!(
            new.contains(
                "forward = [\"a@elsewhere.net\", \"b@elsewhere.net\"]   # Alice reads hello@"
            ),
            "{new}"
        );
        assert_eq!(new.lines().count(), SPEC.lines().count());
        // The same forward list written differently is no change at all.
        let same = edited(
            SPEC,
            Change::EditAlias {
                address: "hello@example.test".into(),
                fields: AliasFields {
                    enabled: Some(true),
                    mailbox: Some(false),
                    ..alias(&[" a@elsewhere.net "])
                },
            },
        );
        assert_eq!(same, SPEC);
    }

    #[test]
    fn a_mailbox_gets_a_quota_and_a_password_hash() {
        let new = edited(
            SPEC,
            Change::EditAlias {
                address: "bob@example.test".into(),
                fields: AliasFields {
                    quota: Some("2GB".into()),
                    password_hash: Some("$argon2id$v=19$x".into()),
                    ..Default::default()
                },
            },
        );
        assert!(
            new.contains(
                "mailbox = { quota = \"2GB\", password = { hash = \"$argon2id$v=19$x\" } }"
            ),
            "{new}"
        );
        let refused = one(SPEC).edit(
            &Change::EditAlias {
                address: "hello@example.test".into(),
                fields: AliasFields {
                    quota: Some("2GB".into()),
                    ..Default::default()
                },
            },
            "admin.toml",
        );
        assert!(matches!(refused, Err(EditError::Invalid(_))), "{refused:?}");
    }

    #[test]
    fn removing_an_alias_takes_its_lines_and_only_those() {
        let new = edited(
            SPEC,
            Change::RemoveAlias {
                address: "bob@example.test".into(),
            },
        );
        let removed = only_added(&new, SPEC);
        assert_eq!(
            removed,
            vec![
                "# Bob's mailbox.",
                "[domains.\"example.test\".aliases.bob]",
                "mailbox = { quota = \"1GB\" }",
                ""
            ]
        );
        let missing = one(SPEC).edit(
            &Change::RemoveAlias {
                address: "nobody@example.test".into(),
            },
            "admin.toml",
        );
        assert!(matches!(missing, Err(EditError::NotFound(_))));
    }

    #[test]
    fn a_new_domain_goes_after_the_last_domain() {
        let new = edited(
            SPEC,
            Change::AddDomain {
                name: "new.test".into(),
                fields: DomainFields {
                    dns_provider: Some("".into()),
                    ..Default::default()
                },
            },
        );
        let added = only_added(SPEC, &new);
        assert_eq!(added, vec!["[domains.\"new.test\"]", ""], "{new}");
        assert!(new.find("new.test").unwrap() < new.find("[admin]").unwrap());
        let twice = one(&new).edit(
            &Change::AddDomain {
                name: "new.test".into(),
                fields: DomainFields::default(),
            },
            "admin.toml",
        );
        assert!(matches!(twice, Err(EditError::Exists(_))));
    }

    #[test]
    fn domain_settings_are_set_and_unset() {
        let new = edited(
            SPEC,
            Change::EditDomain {
                name: "example.test".into(),
                fields: DomainFields {
                    dns_provider: Some("knot".into()),
                    dkim: Some(vec!["one".into(), "two:ed25519".into()]),
                    catch_all: Some(RuleFields {
                        reject: Some("hard".into()),
                        message: Some("no such user".into()),
                        ..Default::default()
                    }),
                },
            },
        );
        assert!(new.contains("dns_provider = \"knot\""), "{new}");
        assert!(
            new.contains(
                "dkim = [{ selector = \"one\" }, { selector = \"two\", algorithm = \"ed25519\" }]"
            ),
            "{new}"
        );
        assert!(
            new.contains("catch_all = { reject = \"hard\", message = \"no such user\" }"),
            "{new}"
        );
        let back = edited(
            &new,
            Change::EditDomain {
                name: "example.test".into(),
                fields: DomainFields {
                    dns_provider: Some("".into()),
                    catch_all: Some(RuleFields {
                        remove: true,
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            },
        );
        assert!(
            !back.contains("dns_provider") && !back.contains("catch_all"),
            "{back}"
        );
    }

    #[test]
    fn patterns_are_added_changed_and_removed_in_either_form() {
        let added = edited(
            SPEC,
            Change::AddPattern {
                domain: "example.test".into(),
                fields: PatternFields {
                    regex: Some("^ops-.*$".into()),
                    reject: Some("hard".into()),
                    ..Default::default()
                },
            },
        );
        assert_eq!(
            only_added(SPEC, &added),
            vec![
                "[[domains.\"example.test\".patterns]]",
                "regex = \"^ops-.*$\"",
                "reject = \"hard\"",
                ""
            ],
            "{added}"
        );
        let changed = edited(
            &added,
            Change::EditPattern {
                domain: "example.test".into(),
                index: 1,
                fields: PatternFields {
                    enabled: Some(false),
                    ..Default::default()
                },
            },
        );
        assert!(
            changed.contains("reject = \"hard\"\nenabled = false"),
            "{changed}"
        );
        let removed = edited(
            &changed,
            Change::RemovePattern {
                domain: "example.test".into(),
                index: 1,
            },
        );
        assert_eq!(removed.trim_end(), SPEC.trim_end());

        let inline = "[domains.\"a.test\"]\npatterns = [\n  { regex = \"^a$\", forward = [\"b@c.test\"] },\n]\n";
        let new = edited(
            inline,
            Change::AddPattern {
                domain: "a.test".into(),
                fields: PatternFields {
                    regex: Some("^d$".into()),
                    forward: Some(vec!["e@f.test".into()]),
                    ..Default::default()
                },
            },
        );
        assert_eq!(
            only_added(inline, &new),
            vec!["  { regex = \"^d$\", forward = [\"e@f.test\"] },"],
            "{new}"
        );
    }

    #[test]
    fn removing_a_domain_takes_its_aliases_by_address_too() {
        let spec =
            format!("{SPEC}\n[aliases]\n\"x@example.test\" = {{ forward = [\"y@z.test\"] }}\n");
        let new = edited(
            &spec,
            Change::RemoveDomain {
                name: "example.test".into(),
            },
        );
        assert!(
            !new.contains("[domains") && !new.contains("x@example.test"),
            "{new}"
        );
        assert!(new.contains("# Who runs the admin.\n[admin]"), "{new}");
    }

    #[test]
    fn a_directory_spec_gets_new_entries_in_the_changes_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("domains.toml"), SPEC).expect("write");
        let files = SpecFiles::read(dir.path()).expect("read");
        let out = files
            .edit(
                &Change::AddAlias {
                    address: "new@example.test".into(),
                    fields: alias(&["n@elsewhere.net"]),
                },
                "admin.toml",
            )
            .expect("edit");
        let changed = out.changed(&files);
        assert_eq!(changed.len(), 1);
        assert_eq!(changed[0].0, dir.path().join("admin.toml"));
        assert_eq!(
            changed[0].2,
            "[domains.\"example.test\".aliases.new]\nforward = [\"n@elsewhere.net\"]\n"
        );
        // An edit of an existing entry stays in its own file.
        let out = files
            .edit(
                &Change::EditAlias {
                    address: "hello@example.test".into(),
                    fields: alias(&["z@elsewhere.net"]),
                },
                "admin.toml",
            )
            .expect("edit");
        assert_eq!(out.changed(&files)[0].0, dir.path().join("domains.toml"));
        let escape = files.edit(
            &Change::AddDomain {
                name: "b.test".into(),
                fields: DomainFields::default(),
            },
            "../elsewhere.toml",
        );
        assert!(matches!(escape, Err(EditError::Invalid(_))));
    }

    #[test]
    fn the_etag_follows_the_bytes_and_the_diff_shows_the_edit() {
        assert_ne!(one(SPEC).etag(), one(&format!("{SPEC} ")).etag());
        assert_eq!(one(SPEC).etag(), one(SPEC).etag());
        let d = diff("f.toml", "a\nb\nc\nd\n", "a\nb\nx\nc\nd\n");
        assert_eq!(
            d,
            "--- f.toml\n+++ f.toml\n@@ line 1 @@\n  a\n  b\n+ x\n  c\n  d\n"
        );
    }

    #[test]
    fn writing_replaces_the_file_whole_and_keeps_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("ferrymail.toml");
        std::fs::write(&path, "old").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        write_atomically(&path, "new").expect("write");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "new");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o640);
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1);
    }
}
