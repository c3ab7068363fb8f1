//! ClamAV's clamd over its INSTREAM command (TCP or a unix socket): the message goes in
//! length-prefixed chunks, the answer names the signature it found, if any.

use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::SpamError;
use crate::spec::model::Antivirus;

const CHUNK: usize = 64 * 1024;
/// clamd's answer is one short line; anything longer is not clamd.
const MAX_ANSWER: usize = 4096;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// clamd's default StreamMaxLength.
const DEFAULT_MAX_SIZE: u64 = 25 * 1000 * 1000;

enum Target {
    Tcp(String),
    Unix(PathBuf),
}

/// One clamd, as `[spam.antivirus]` declares it.
pub struct Clamd {
    target: Target,
    timeout: Duration,
    /// Messages larger than this are not sent (clamd would refuse them).
    pub max_size: u64,
    /// For messages: "clamd at ADDRESS".
    pub name: String,
}

impl Clamd {
    pub fn from_spec(spec: &Antivirus) -> Result<Clamd, SpamError> {
        let timeout = match &spec.timeout {
            Some(text) => humantime::parse_duration(text).map_err(|e| SpamError::Config {
                key: "antivirus.timeout",
                reason: e.to_string(),
            })?,
            None => DEFAULT_TIMEOUT,
        };
        let (target, name) = match (&spec.address, &spec.socket) {
            (Some(address), None) => (Target::Tcp(address.clone()), address.clone()),
            (None, Some(socket)) => (Target::Unix(PathBuf::from(socket)), socket.clone()),
            _ => {
                return Err(SpamError::Config {
                    key: "antivirus",
                    reason: "give clamd's address or its socket, one of them".into(),
                });
            }
        };
        let max_size = spec
            .max_size
            .as_deref()
            .and_then(crate::spec::parse_size)
            .unwrap_or(DEFAULT_MAX_SIZE);
        Ok(Clamd {
            target,
            timeout,
            max_size,
            name: format!("clamd at {name}"),
        })
    }

    /// The signature clamd found in the message made of `parts` (trace headers, then
    /// the message as received), or None when it is clean.
    pub async fn scan(&self, message: &[&[u8]]) -> Result<Option<String>, SpamError> {
        let answer = self.ask(Some(message)).await?;
        parse_answer(&answer).map_err(|reason| self.failed(reason))
    }

    /// Whether clamd answers its PING.
    pub async fn ping(&self) -> Result<(), SpamError> {
        let answer = self.ask(None).await?;
        if answer.starts_with(b"PONG") {
            return Ok(());
        }
        Err(self.failed(format!("answered {:?}", String::from_utf8_lossy(&answer))))
    }

    fn failed(&self, reason: String) -> SpamError {
        SpamError::Antivirus {
            name: self.name.clone(),
            reason,
        }
    }

    /// INSTREAM with `message`, or PING without.
    async fn ask(&self, message: Option<&[&[u8]]>) -> Result<Vec<u8>, SpamError> {
        tokio::time::timeout(self.timeout, async {
            match &self.target {
                Target::Tcp(address) => {
                    let stream = tokio::net::TcpStream::connect(address).await?;
                    exchange(stream, message).await
                }
                Target::Unix(path) => {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    exchange(stream, message).await
                }
            }
        })
        .await
        .map_err(|_| {
            self.failed(format!(
                "no answer within {}",
                humantime::format_duration(self.timeout)
            ))
        })?
        .map_err(|e| self.failed(e.to_string()))
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    message: Option<&[&[u8]]>,
) -> std::io::Result<Vec<u8>> {
    // The 'z' form: the command and the answer end with a NUL.
    match message {
        Some(message) => {
            stream.write_all(b"zINSTREAM\0").await?;
            for chunk in message.iter().flat_map(|part| part.chunks(CHUNK)) {
                stream
                    .write_all(&(chunk.len() as u32).to_be_bytes())
                    .await?;
                stream.write_all(chunk).await?;
            }
            stream.write_all(&0u32.to_be_bytes()).await?;
        }
        None => stream.write_all(b"zPING\0").await?,
    }
    stream.flush().await?;
    let mut answer = Vec::new();
    (&mut stream)
        .take(MAX_ANSWER as u64)
        .read_to_end(&mut answer)
        .await?;
    Ok(answer)
}

/// "stream: OK", "stream: NAME FOUND", or "... ERROR" (e.g. past clamd's StreamMaxLength).
fn parse_answer(answer: &[u8]) -> Result<Option<String>, String> {
    let text = String::from_utf8_lossy(answer);
    let text = text.trim_end_matches(['\0', '\n', '\r']).trim();
    let rest = text.strip_prefix("stream:").map(str::trim).unwrap_or(text);
    if rest == "OK" {
        return Ok(None);
    }
    if let Some(name) = rest.strip_suffix(" FOUND") {
        let name: String = name.chars().filter(|c| !c.is_control()).take(200).collect();
        return Ok(Some(name));
    }
    Err(format!(
        "clamd answered {:?}",
        text.chars().take(200).collect::<String>()
    ))
}

#[cfg(test)]
mod tests {
    use super::parse_answer;

    #[test]
    fn clamd_answers_are_read() {
        assert_eq!(parse_answer(b"stream: OK\0"), Ok(None));
        assert_eq!(
            parse_answer(b"stream: Eicar-Test-Signature FOUND\0"),
            Ok(Some("Eicar-Test-Signature".into()))
        );
        assert!(parse_answer(b"INSTREAM size limit exceeded. ERROR\0").is_err());
        assert!(parse_answer(b"").is_err());
    }
}
