//! The backup encryption key: an age identity (`AGE-SECRET-KEY-1…`, from `age-keygen`)
//! or a passphrase (scrypt), read from the spec's secret reference.

use std::str::FromStr;

use age::secrecy::SecretString;

use super::BackupError;

/// Passphrases shorter than this are refused: a backup sits at a third party for years.
const MIN_PASSPHRASE: usize = 16;

#[derive(Clone)]
pub enum Key {
    X25519(age::x25519::Identity),
    Passphrase(SecretString),
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kind())
    }
}

impl Key {
    pub fn parse(text: &str) -> Result<Key, BackupError> {
        let text = text.trim();
        if text.starts_with("AGE-SECRET-KEY-") {
            let identity = age::x25519::Identity::from_str(text).map_err(|_| {
                BackupError::Key("not a valid age identity (AGE-SECRET-KEY-1…)".into())
            })?;
            return Ok(Key::X25519(identity));
        }
        // An age identity file as age-keygen writes it: comments, then the key.
        if let Some(line) = text
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        {
            return Key::parse(line);
        }
        // Things pasted by mistake that would otherwise pass for a passphrase: a
        // recipient or a public key is public, and sealing with it protects nothing.
        for (prefix, what) in [
            (
                "age1",
                "an age recipient (public key); give the identity (AGE-SECRET-KEY-1…)",
            ),
            (
                "AGE-PLUGIN-",
                "an age plugin identity, which ferrymail cannot use",
            ),
            (
                "ssh-",
                "an ssh public key; give an age identity or a passphrase",
            ),
            (
                "-----BEGIN",
                "a PEM key; give an age identity or a passphrase",
            ),
        ] {
            if text.starts_with(prefix) {
                return Err(BackupError::Key(format!("this is {what}")));
            }
        }
        if text.chars().count() < MIN_PASSPHRASE {
            return Err(BackupError::Key(format!(
                "a passphrase needs at least {MIN_PASSPHRASE} characters (or use an age identity from age-keygen)"
            )));
        }
        Ok(Key::Passphrase(SecretString::from(text.to_string())))
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Key::X25519(_) => "age-x25519",
            Key::Passphrase(_) => "age-scrypt",
        }
    }

    pub fn encryptor(&self) -> Result<age::Encryptor, BackupError> {
        match self {
            Key::X25519(identity) => {
                let recipient = identity.to_public();
                age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
                    .map_err(|e| BackupError::Key(e.to_string()))
            }
            Key::Passphrase(pass) => Ok(age::Encryptor::with_user_passphrase(pass.clone())),
        }
    }

    /// Opens an age stream for reading; a key that does not fit is `WrongKey`.
    pub fn decrypt<R: std::io::BufRead>(
        &self,
        id: &str,
        input: R,
    ) -> Result<age::stream::StreamReader<R>, BackupError> {
        let damaged = |message: String| BackupError::Damaged {
            id: id.to_string(),
            message,
        };
        let decryptor = age::Decryptor::new_buffered(input).map_err(|e| match e {
            age::DecryptError::Io(e) => damaged(format!("reading it: {e}")),
            other => damaged(format!("not an age file: {other}")),
        })?;
        let result = match self {
            Key::X25519(identity) => {
                decryptor.decrypt(std::iter::once(identity as &dyn age::Identity))
            }
            Key::Passphrase(pass) => {
                let identity = age::scrypt::Identity::new(pass.clone());
                decryptor.decrypt(std::iter::once(&identity as &dyn age::Identity))
            }
        };
        result.map_err(|e| match e {
            age::DecryptError::NoMatchingKeys
            | age::DecryptError::DecryptionFailed
            | age::DecryptError::KeyDecryptionFailed
            | age::DecryptError::InvalidMac => BackupError::WrongKey(id.to_string()),
            age::DecryptError::Io(e) => damaged(format!("reading it: {e}")),
            other => damaged(other.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    fn roundtrip(key: &Key, other: &Key) {
        let mut sealed = Vec::new();
        let mut w = key.encryptor().unwrap().wrap_output(&mut sealed).unwrap();
        w.write_all(b"mail").unwrap();
        w.finish().unwrap();
        assert!(!sealed.windows(4).any(|w| w == b"mail"));
        let mut plain = String::new();
        key.decrypt("x", &sealed[..])
            .unwrap()
            .read_to_string(&mut plain)
            .unwrap();
        assert_eq!(plain, "mail");
        assert!(matches!(
            other.decrypt("x", &sealed[..]),
            Err(BackupError::WrongKey(_))
        ));
    }

    #[test]
    fn identities_and_passphrases_seal_and_refuse_other_keys() {
        let a = Key::X25519(age::x25519::Identity::generate());
        let b = Key::X25519(age::x25519::Identity::generate());
        roundtrip(&a, &b);
        let file = format!(
            "# created: now\n# public key: x\n{}\n",
            age::secrecy::ExposeSecret::expose_secret(&match &a {
                Key::X25519(i) => i.to_string(),
                _ => unreachable!(),
            })
        );
        assert_eq!(Key::parse(&file).unwrap().kind(), "age-x25519");
        assert!(matches!(Key::parse("short"), Err(BackupError::Key(_))));
        assert!(matches!(
            Key::parse("age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"),
            Err(BackupError::Key(_))
        ));
        assert!(matches!(
            Key::parse("AGE-SECRET-KEY-1NOPE"),
            Err(BackupError::Key(_))
        ));
    }
}
