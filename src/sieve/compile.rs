//! Scripts compiled with this server's limits and extensions, and their errors located by
//! line and column (for `validate`, PUTSCRIPT and CHECKSCRIPT alike).

use std::sync::{Arc, LazyLock};

use sieve::compiler::grammar::Capability;
use sieve::runtime::RuntimeError;
use sieve::{Compiler, Input, Runtime, Sieve};

/// Largest script, as Forward Email and Dovecot's default allow.
pub const MAX_SCRIPT_SIZE: usize = 1024 * 1024;
/// Scripts one account may keep (ManageSieve).
pub const MAX_SCRIPTS: usize = 15;

/// Extensions the interpreter has that delivery here cannot honour: no metadata
/// (RFC 5490), notification methods or external lists are configured, DELIVERBY and DSN options on redirect are
/// not passed on, conversion needs outside programs, IMAP events are not delivery, and
/// `expressions`/`while` are one vendor's, not registered ones.
const WITHHELD: [Capability; 11] = [
    Capability::MboxMetadata,
    Capability::ServerMetadata,
    Capability::Enotify,
    Capability::ExtLists,
    Capability::EnvelopeDeliverBy,
    Capability::RedirectDeliverBy,
    Capability::RedirectDsn,
    Capability::Convert,
    Capability::ImapSieve,
    Capability::Expressions,
    Capability::While,
];

/// A script that does not compile, or asks for an extension this server lacks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct ScriptError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// The extensions scripts may `require`, by their registered names (ManageSieve's
/// SIEVE capability).
pub fn extensions() -> &'static [String] {
    static NAMES: LazyLock<Vec<String>> = LazyLock::new(offered);
    &NAMES
}

fn offered() -> Vec<String> {
    let mut names: Vec<String> = Capability::all()
        .iter()
        .filter(|c| !WITHHELD.contains(c))
        .filter(|c| {
            !matches!(
                c,
                Capability::Comparator(sieve::compiler::grammar::Comparator::Elbonia)
            )
        })
        .map(ToString::to_string)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The interpreter's settings that do not depend on the server: the extensions on offer.
pub(super) fn allowed(runtime: Runtime) -> Runtime {
    WITHHELD
        .iter()
        .fold(runtime, |r, c| r.without_capability(c.clone()))
}

/// Compiles `text`; an extension required but withheld is refused here, not at delivery.
pub fn compile(text: &[u8]) -> Result<Arc<Sieve>, ScriptError> {
    static COMPILER: LazyLock<Compiler> =
        LazyLock::new(|| Compiler::new().with_max_script_size(MAX_SCRIPT_SIZE));
    if text.len() > MAX_SCRIPT_SIZE {
        return Err(ScriptError {
            line: 1,
            column: 1,
            message: format!("the script is larger than {MAX_SCRIPT_SIZE} bytes"),
        });
    }
    let script = COMPILER.compile(text).map_err(|e| ScriptError {
        line: e.line_num().max(1),
        column: e.line_pos().max(1),
        message: without_position(&e.to_string()),
    })?;
    let script = Arc::new(script);
    withheld_extension(&script, text)?;
    Ok(script)
}

/// `compile`, remembering the last scripts compiled: delivery compiles a user's script
/// for every message otherwise.
pub fn compile_cached(text: &[u8]) -> Result<Arc<Sieve>, ScriptError> {
    use sha2::Digest;
    type Compiled = std::collections::HashMap<[u8; 32], Arc<Sieve>>;
    static CACHE: LazyLock<std::sync::Mutex<Compiled>> = LazyLock::new(Default::default);
    // Bounded in bytes too: one account re-uploading megabyte scripts must not hold
    // a gigabyte (a compiled script is a few times its text).
    const KEPT: usize = 1024;
    const KEPT_BYTES: usize = 64 << 20;
    static TEXT_BYTES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let digest: [u8; 32] = sha2::Sha256::digest(text).into();
    if let Some(script) = CACHE.lock().unwrap_or_else(|p| p.into_inner()).get(&digest) {
        return Ok(script.clone());
    }
    let script = compile(text)?;
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    use std::sync::atomic::Ordering::Relaxed;
    if cache.len() >= KEPT || TEXT_BYTES.load(Relaxed) + text.len() > KEPT_BYTES {
        cache.clear();
        TEXT_BYTES.store(0, Relaxed);
    }
    TEXT_BYTES.fetch_add(text.len(), Relaxed);
    cache.insert(digest, script.clone());
    Ok(script)
}

/// `require` is checked when the script runs, so run it on an empty message: the
/// requirements come first and are all that can fail before the first event.
fn withheld_extension(script: &Arc<Sieve>, text: &[u8]) -> Result<(), ScriptError> {
    static CHECKER: LazyLock<Runtime> = LazyLock::new(|| allowed(Runtime::new()));
    let mut context = CHECKER.filter(b"");
    let missing = match context.run(Input::script("check", script.clone())) {
        Some(Err(RuntimeError::CapabilityNotAllowed(c))) => c.to_string(),
        Some(Err(RuntimeError::CapabilityNotSupported(name))) => name,
        _ => return Ok(()),
    };
    let (line, column) = position_of(text, &missing);
    Err(ScriptError {
        line,
        column,
        message: format!("the extension {missing:?} is not supported by this server"),
    })
}

/// sieve-rs ends its messages with " at line L, column C.", which the error says
/// already.
fn without_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_string(),
        None => message.trim_end_matches('.').to_string(),
    }
}

/// Where `word` first appears in the script (the require naming it), else its start.
fn position_of(text: &[u8], word: &str) -> (usize, usize) {
    let text = String::from_utf8_lossy(text);
    let quoted = format!("\"{word}\"");
    let Some(at) = text.find(&quoted) else {
        return (1, 1);
    };
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let column = before[before.rfind('\n').map_or(0, |i| i + 1)..]
        .chars()
        .count()
        + 2;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_their_line_and_column() {
        let e = compile(
            b"require \"fileinto\";\n\nif header :contains \"subject\" \"x\" {\n  fileinto;\n}\n",
        )
        .unwrap_err();
        assert_eq!(e.line, 4, "{e}");
        assert!(!e.message.contains("at line"), "{e}");
        let e = compile(b"require \"fileinto\";\nfileinto \"x\"").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
    }

    #[test]
    fn a_withheld_extension_is_refused_where_it_is_required() {
        let e = compile(b"# note\nrequire [\"fileinto\", \"enotify\"];\nkeep;\n").unwrap_err();
        assert_eq!((e.line, e.column), (2, 23), "{e}");
        assert!(e.message.contains("enotify"), "{e}");
        assert!(compile(b"require [\"fileinto\", \"vacation\", \"imap4flags\"];\nkeep;\n").is_ok());
        assert!(!extensions().contains(&"enotify".to_string()));
        assert!(extensions().contains(&"vacation".to_string()));
    }

    #[test]
    fn size_and_nesting_are_bounded() {
        let big = vec![b'#'; MAX_SCRIPT_SIZE + 1];
        assert!(compile(&big).is_err());
        let deep = format!("{}keep;{}", "if true {".repeat(200), "}".repeat(200));
        assert!(compile(deep.as_bytes()).is_err());
        let tests = format!(
            "if {}true{} {{ keep; }}",
            "allof(".repeat(200),
            ")".repeat(200)
        );
        assert!(compile(tests.as_bytes()).is_err());
    }
}
