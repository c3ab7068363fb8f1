//! Fetching a policy file over HTTPS as RFC 8461 §3.3 asks: from `mta-sts.DOMAIN` on
//! port 443, certificate valid for that name, no redirects, bounded in size and time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::TokioResolver;

/// Larger policies are refused: a real one is a few hundred bytes.
pub const MAX_POLICY_BYTES: usize = 64 * 1024;
/// The whole fetch, connection to last byte.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(20);

/// Why no policy could be fetched (reported as `sts-policy-fetch-error`, RFC 8460).
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    #[error("fetching {url}: {why}")]
    Http { url: String, why: String },
    #[error("{url} answered {status}, not 200")]
    Status { url: String, status: u16 },
    #[error("{url} is larger than {MAX_POLICY_BYTES} bytes")]
    TooLarge { url: String },
}

/// An HTTPS client for policy files, resolving names through the server's resolver
/// (a `[dns] resolver` knows names the system's does not).
pub fn client(resolver: Option<TokioResolver>) -> reqwest::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .https_only(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(FETCH_TIMEOUT)
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!(
            "ferrymail/",
            env!("CARGO_PKG_VERSION"),
            " (MTA-STS)"
        ));
    if let Some(resolver) = resolver {
        builder = builder.dns_resolver(Arc::new(Hickory(resolver)));
    }
    builder.build()
}

/// The policy file's bytes, at most [`MAX_POLICY_BYTES`].
pub async fn policy_text(http: &reqwest::Client, domain: &str) -> Result<Vec<u8>, FetchError> {
    let url = format!("https://mta-sts.{domain}/.well-known/mta-sts.txt");
    let failed = |e: reqwest::Error| FetchError::Http {
        url: url.clone(),
        why: crate::error_chain::http(&e),
    };
    let mut response = http.get(&url).send().await.map_err(failed)?;
    // §3.3: only 200 is a policy; a redirect is not followed.
    if response.status() != reqwest::StatusCode::OK {
        return Err(FetchError::Status {
            url,
            status: response.status().as_u16(),
        });
    }
    if response
        .content_length()
        .is_some_and(|n| n > MAX_POLICY_BYTES as u64)
    {
        return Err(FetchError::TooLarge { url });
    }
    // Read in chunks, so a server that lies about (or omits) its length still stops here.
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(failed)? {
        if body.len() + chunk.len() > MAX_POLICY_BYTES {
            return Err(FetchError::TooLarge { url });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// reqwest's resolver, through hickory.
struct Hickory(TokioResolver);

impl reqwest::dns::Resolve for Hickory {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let resolver = self.0.clone();
        let name = format!("{}.", name.as_str().trim_end_matches('.'));
        Box::pin(async move {
            let found = resolver.lookup_ip(name).await?;
            let addrs: Vec<SocketAddr> = found.iter().map(|ip| SocketAddr::new(ip, 0)).collect();
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}
