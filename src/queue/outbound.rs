//! Hands a message to the next MTA: the spec's relay (smarthost) or the recipient
//! domain's MX hosts in preference order, with STARTTLS whenever the peer offers it.

use std::time::Duration;

use hickory_resolver::TokioResolver;
use mail_send::SmtpClient;
use mail_send::smtp::AssertReply;
use mail_send::smtp::message::Parameters;
use smtp_proto::EXT_START_TLS;
use tokio::io::{AsyncRead, AsyncWrite};

/// Why a delivery attempt failed, and whether trying again can help.
#[derive(Debug, Clone)]
pub struct DeliveryError {
    pub permanent: bool,
    pub message: String,
}

impl DeliveryError {
    pub fn temporary(message: impl Into<String>) -> Self {
        DeliveryError {
            permanent: false,
            message: message.into(),
        }
    }
}

impl From<mail_send::Error> for DeliveryError {
    fn from(e: mail_send::Error) -> Self {
        // A 5xx reply is final; anything else (network, 4xx, TLS) is worth a retry.
        let permanent = match &e {
            mail_send::Error::UnexpectedReply(r) => {
                r.severity() == smtp_proto::Severity::PermanentNegativeCompletion
            }
            _ => false,
        };
        DeliveryError {
            permanent,
            message: e.to_string(),
        }
    }
}

pub struct Outbound {
    hostname: String,
    relay: Option<String>,
    resolver: Option<TokioResolver>,
    timeout: Duration,
}

impl Outbound {
    /// `relay` is "host:port"; without it mail goes to the recipients' MX hosts.
    pub fn new(
        hostname: String,
        relay: Option<String>,
        resolver: Option<TokioResolver>,
    ) -> Outbound {
        Outbound {
            hostname,
            relay,
            resolver,
            timeout: Duration::from_secs(120),
        }
    }

    /// The smarthost every message goes to, if one is set.
    pub fn relay(&self) -> Option<&str> {
        self.relay.as_deref()
    }

    /// Delivers `body` from `from` to `to` (all at one domain).
    pub async fn send(&self, from: &str, to: &[String], body: &[u8]) -> Result<(), DeliveryError> {
        let hosts = match &self.relay {
            Some(relay) => vec![relay.clone()],
            None => self.mx_hosts(to).await?,
        };
        let mut last = DeliveryError::temporary("no host to deliver to");
        for host in hosts {
            match self.send_to(&host, from, to, body).await {
                Ok(()) => return Ok(()),
                Err(e) if e.permanent => return Err(e),
                Err(e) => {
                    last = DeliveryError {
                        permanent: false,
                        message: format!("{host}: {}", e.message),
                    }
                }
            }
        }
        Err(last)
    }

    async fn mx_hosts(&self, to: &[String]) -> Result<Vec<String>, DeliveryError> {
        let domain = to
            .first()
            .and_then(|a| a.rsplit_once('@'))
            .map(|(_, d)| d)
            .unwrap_or_default();
        let resolver = self
            .resolver
            .as_ref()
            .ok_or_else(|| DeliveryError::temporary("no DNS resolver configured"))?;
        match resolver.mx_lookup(format!("{domain}.")).await {
            Ok(lookup) => {
                let mut mx: Vec<(u16, String)> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        hickory_resolver::proto::rr::RData::MX(mx) => Some((
                            mx.preference,
                            mx.exchange.to_utf8().trim_end_matches('.').to_string(),
                        )),
                        _ => None,
                    })
                    .collect();
                mx.sort();
                // RFC 7505 null MX: the domain accepts no mail.
                if mx.len() == 1 && mx[0].1.is_empty() {
                    return Err(DeliveryError {
                        permanent: true,
                        message: format!("{domain} accepts no mail (null MX)"),
                    });
                }
                Ok(mx
                    .into_iter()
                    .map(|(_, host)| format!("{host}:25"))
                    .collect())
            }
            // No MX: the domain itself is the mail host (RFC 5321 §5.1).
            Err(_) => Ok(vec![format!("{domain}:25")]),
        }
    }

    async fn send_to(
        &self,
        host: &str,
        from: &str,
        to: &[String],
        body: &[u8],
    ) -> Result<(), DeliveryError> {
        let addr = tokio::net::lookup_host(host)
            .await
            .map_err(|e| DeliveryError::temporary(format!("resolving {host}: {e}")))?
            .next()
            .ok_or_else(|| DeliveryError::temporary(format!("{host} has no address")))?;
        let mut client = SmtpClient::connect(addr, self.timeout).await?;
        client.read().await?.assert_positive_completion()?;
        let ehlo = client.ehlo(&self.hostname).await?;
        if ehlo.has_capability(EXT_START_TLS) {
            // Opportunistic: certificates of MX hosts are rarely checkable (RFC 7435).
            let connector = mail_send::smtp::tls::build_tls_connector(true)
                .map_err(DeliveryError::temporary)?;
            let server_name = host
                .rsplit_once(':')
                .map(|(h, _)| h)
                .unwrap_or(host)
                .to_string();
            let mut tls = client.start_tls(&connector, &server_name).await?;
            tls.ehlo(&self.hostname).await?;
            transaction(&mut tls, from, to, body).await
        } else {
            transaction(&mut client, from, to, body).await
        }
    }
}

async fn transaction<T: AsyncRead + AsyncWrite + Unpin>(
    client: &mut SmtpClient<T>,
    from: &str,
    to: &[String],
    body: &[u8],
) -> Result<(), DeliveryError> {
    client.mail_from(from, &Parameters::default()).await?;
    for rcpt in to {
        client.rcpt_to(rcpt, &Parameters::default()).await?;
    }
    client.data(body).await?;
    let _ = client.rset().await;
    Ok(())
}
