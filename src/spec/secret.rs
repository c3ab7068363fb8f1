//! Secret references (`{ env = "NAME" }`, `{ file = "/path" }`): resolved only when a
//! capability needs the value, never printed; `Secret` redacts itself in Debug/Display.

use std::fmt;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A reference to a secret kept outside the spec: exactly one of `env` or `file`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    /// Name of an environment variable holding the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// Path of a file holding the secret (trailing newline ignored). Relative paths are
    /// taken from the spec's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.env, &self.file) {
            (Some(name), _) => write!(f, "env:{name}"),
            (None, Some(path)) => write!(f, "file:{}", path.display()),
            (None, None) => write!(f, "(empty secret reference)"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("a secret reference needs exactly one of `env` or `file`")]
    Shape,
    #[error("environment variable {0} is not set")]
    EnvMissing(String),
    #[error("cannot read secret file {path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("secret {0} is empty")]
    Empty(String),
    #[error(
        "this URL holds a password, and the spec is kept in git: keep the URL outside it: url = {{ env = \"VAR\" }} or {{ file = \"path\" }} holding it"
    )]
    PasswordInUrl,
}

impl SecretRef {
    /// Checks the shape only: exactly one source named.
    pub fn check_shape(&self) -> Result<(), SecretError> {
        match (&self.env, &self.file) {
            (Some(_), None) | (None, Some(_)) => Ok(()),
            _ => Err(SecretError::Shape),
        }
    }

    /// Reads the secret. `base` is the spec's directory, for relative file paths.
    pub fn resolve(&self, base: &Path) -> Result<Secret, SecretError> {
        self.check_shape()?;
        let value = if let Some(name) = &self.env {
            std::env::var(name).map_err(|_| SecretError::EnvMissing(name.clone()))?
        } else {
            let path = base.join(self.file.as_deref().unwrap_or(Path::new("")));
            std::fs::read_to_string(&path).map_err(|source| SecretError::File {
                path: path.display().to_string(),
                source,
            })?
        };
        let value = value.trim_end_matches(['\r', '\n']).to_string();
        if value.is_empty() {
            return Err(SecretError::Empty(self.to_string()));
        }
        Ok(Secret(value))
    }
}

/// A connection URL (`store.url`, `cache.url`): written out when it holds no password
/// (`"redis://127.0.0.1:6379"`), else kept outside the spec like any secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum UrlRef {
    /// The URL itself; refused by validation when it carries a password.
    Plain(String),
    /// Where the URL is kept: `{ env = "REDIS_URL" }` or `{ file = "redis.url" }`.
    Secret(SecretRef),
}

impl<'de> Deserialize<'de> for UrlRef {
    // By hand rather than `untagged`: serde's untagged error ("data did not match any
    // variant") would say nothing of the two shapes.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = UrlRef;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a URL in quotes, or { env = \"VAR\" } or { file = \"path\" } holding it",
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<UrlRef, E> {
                Ok(UrlRef::Plain(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<UrlRef, A::Error> {
                SecretRef::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(UrlRef::Secret)
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl UrlRef {
    /// A plain URL must not carry a password: the spec is kept in git and shown in plans.
    pub fn check(&self) -> Result<(), SecretError> {
        match self {
            UrlRef::Plain(url) if has_password(url) => Err(SecretError::PasswordInUrl),
            UrlRef::Plain(_) => Ok(()),
            UrlRef::Secret(r) => r.check_shape(),
        }
    }

    /// The URL, read from where it is kept.
    pub fn resolve(&self, base: &Path) -> Result<Secret, SecretError> {
        self.check()?;
        match self {
            UrlRef::Plain(url) => Ok(Secret(url.clone())),
            UrlRef::Secret(r) => r.resolve(base),
        }
    }
}

/// Whether `url`'s authority has `user:password@` (MongoDB lists several hosts after it).
fn has_password(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

/// A resolved secret value. Debug and Display never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_written_out_unless_it_holds_a_password() {
        let plain = |u: &str| UrlRef::Plain(u.into()).check().is_ok();
        assert!(plain("redis://127.0.0.1:6379"));
        assert!(plain("redis://user@127.0.0.1:6379/0"));
        assert!(plain("mongodb://a.test,b.test/?replicaSet=rs0"));
        assert!(!plain("redis://:hunter2@127.0.0.1:6379"));
        assert!(!plain("mongodb://admin:hunter2@a.test,b.test/db"));
        let read: UrlRef = toml::from_str::<toml::Table>("u = { env = \"X\" }").unwrap()["u"]
            .clone()
            .try_into()
            .unwrap();
        assert!(matches!(read, UrlRef::Secret(_)));
    }

    #[test]
    fn secret_never_prints_its_value() {
        let s = Secret("hunter2".into());
        assert_eq!(format!("{s} {s:?}"), "*** Secret(***)");
    }

    #[test]
    fn file_secret_is_read_relative_to_the_spec_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tok"), "abc\n").unwrap();
        let r = SecretRef {
            env: None,
            file: Some("tok".into()),
        };
        assert_eq!(r.resolve(dir.path()).unwrap().expose(), "abc");
        let both = SecretRef {
            env: Some("X".into()),
            file: Some("tok".into()),
        };
        assert!(matches!(both.resolve(dir.path()), Err(SecretError::Shape)));
    }
}
