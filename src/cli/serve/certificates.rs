//! The certificates `serve` starts with (files, self-signed, or self-signed until ACME
//! has issued one), and the ACME settings taken from the spec.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use crate::spec::{LoadedSpec, TlsMode};

/// The certificates every TLS listener serves from, and the watcher that reloads
/// tls.files when they change (dropping it stops that).
pub fn first(
    loaded: &LoadedSpec,
    hostname: &str,
    data_dir: &Path,
) -> anyhow::Result<(
    Arc<crate::tls::Certificates>,
    Option<notify::RecommendedWatcher>,
)> {
    let mut tls_files_watch = None;
    let certificates = match loaded.spec.tls.mode {
        TlsMode::Files => {
            let files = loaded
                .spec
                .tls
                .files
                .as_ref()
                .context("tls.mode = \"files\" needs [tls.files]")?;
            let base = &loaded.base_dir;
            let (cert, key) = (base.join(&files.cert), base.join(&files.key));
            let first = crate::tls::from_files(&cert, &key, "files")?;
            let certs = crate::tls::Certificates::new(first);
            match crate::tls::files::watch(certs.clone(), cert, key) {
                Ok(w) => tls_files_watch = Some(w),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch the certificate files; a restart picks up new ones")
                }
            }
            certs
        }
        TlsMode::SelfSigned => {
            let public = loaded
                .spec
                .listeners
                .all()
                .iter()
                .any(|a| !a.ip().is_loopback());
            if public {
                tracing::warn!(
                    "tls.mode = \"self-signed\" on a listener others can reach: clients will warn and other servers cannot verify it; use \"acme\" or \"files\""
                );
            }
            crate::tls::Certificates::new(crate::tls::self_signed(hostname, data_dir)?)
        }
        // Serves at once with a self-signed certificate; the ACME manager (a
        // background service) switches to the issued one as soon as it has it.
        TlsMode::Acme => {
            crate::tls::Certificates::new(crate::tls::self_signed(hostname, data_dir)?)
        }
    };
    Ok((certificates, tls_files_watch))
}

/// What the ACME manager needs from the spec: the CA, the account, and the names.
pub fn acme_settings(
    loaded: &crate::spec::LoadedSpec,
    acme: &crate::spec::Acme,
) -> anyhow::Result<crate::tls::acme::Settings> {
    use crate::tls::acme::Challenge;
    let names = crate::reconcile::certs::acme_names(&loaded.spec);
    let eab = match (&acme.eab_kid, &acme.eab_hmac_key) {
        (Some(kid), Some(key)) => {
            use base64::Engine as _;
            let key = key
                .resolve(&loaded.base_dir)
                .context("tls.acme.eab_hmac_key")?;
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(key.expose().trim_end_matches('='))
                .context("tls.acme.eab_hmac_key is not base64url")?;
            Some((kid.clone(), bytes))
        }
        _ => None,
    };
    Ok(crate::tls::acme::Settings {
        directory: acme.directory.clone(),
        contact: acme.contact.clone(),
        challenge: match acme.challenge {
            crate::spec::AcmeChallenge::Http01 => Challenge::Http01,
            crate::spec::AcmeChallenge::TlsAlpn01 => Challenge::TlsAlpn01,
            crate::spec::AcmeChallenge::Dns01 => Challenge::Dns01,
        },
        ca_file: acme.ca_file.as_ref().map(|f| loaded.base_dir.join(f)),
        eab,
        names,
        dns01: dns01(loaded).map(Arc::new),
    })
}

/// The DNS providers that can publish DNS-01 answers, by mail domain.
fn dns01(loaded: &crate::spec::LoadedSpec) -> Option<crate::tls::acme::Dns01> {
    let spec = &loaded.spec;
    let mut domains: Vec<(String, Arc<dyn crate::dns::provider::Provider>)> = Vec::new();
    for (name, domain) in &spec.domains {
        let (Ok(name), Some(pname)) = (
            crate::address::normalize_domain(name),
            domain.dns_provider.as_ref(),
        ) else {
            continue;
        };
        let Some(declared) = spec.dns.providers.get(pname) else {
            continue;
        };
        match crate::dns::provider::from_spec(pname, declared, &loaded.base_dir, spec.dns.resolver)
        {
            Ok(p) if p.writes() => domains.push((name, Arc::from(p))),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "this provider cannot publish DNS-01 answers"),
        }
    }
    (!domains.is_empty()).then_some(crate::tls::acme::Dns01 {
        domains,
        resolver: spec.dns.resolver,
    })
}
