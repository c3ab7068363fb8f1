//! Errors as a person reads them: the whole chain of causes in words, for libraries
//! whose own Display stops at the outer layer (reqwest, hyper) or prints Debug (rustls).

use std::error::Error;

/// Every cause of `e`, outermost first, joined by ": ". A layer that only repeats what
/// its cause says is left out, and a TLS failure is said in words with its code.
pub fn in_words(e: &(dyn Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(tls) = tls_failure(err) {
            parts.push(tls_words(tls));
            break;
        }
        let text = layer_words(&err.to_string());
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = carried(err).or_else(|| err.source());
    }
    parts.join(": ")
}

/// A rustls error, itself or inside I/O errors that print only what it says.
fn tls_failure<'a>(mut err: &'a (dyn Error + 'static)) -> Option<&'a rustls::Error> {
    loop {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        err = carried(err)?;
    }
}

/// The error an I/O error carries (as TLS streams report theirs): its `source` skips it.
fn carried<'a>(err: &'a (dyn Error + 'static)) -> Option<&'a (dyn Error + 'static)> {
    let inner = err.downcast_ref::<std::io::Error>()?.get_ref()?;
    Some(inner as &(dyn Error + 'static))
}

/// An HTTP request that failed, naming where it went: "cannot connect to
/// 127.0.0.1:8080: Connection refused (os error 111)".
pub fn http(e: &reqwest::Error) -> String {
    let place = e
        .url()
        .map(|u| match (u.host_str(), u.port_or_known_default()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            _ => u.to_string(),
        })
        .unwrap_or_else(|| "the server".to_string());
    // reqwest's outer layer ("error sending request for url (…)") says nothing its
    // kind and the causes below do not.
    let causes = e.source().map(in_words).unwrap_or_default();
    let causes = if causes.is_empty() {
        e.to_string()
    } else {
        causes
    };
    if e.is_timeout() {
        format!("no answer from {place} in time")
    } else if e.is_connect() {
        // hyper's layer says the step this sentence already names.
        match causes
            .strip_prefix("cannot connect")
            .map(|rest| rest.trim_start_matches(": "))
        {
            Some("") => format!("cannot connect to {place}"),
            Some(rest) => format!("cannot connect to {place}: {rest}"),
            None => format!("cannot connect to {place}: {causes}"),
        }
    } else {
        format!("{place}: {causes}")
    }
}

/// hyper-util names a failed connection "client error (Connect)": said as the step.
fn layer_words(text: &str) -> String {
    match text {
        "client error (Connect)" => "cannot connect".to_string(),
        // The step only; the cause below says what went wrong.
        "tcp connect error" => String::new(),
        other => other.to_string(),
    }
}

/// A TLS failure in words, with rustls's or webpki's code in brackets for searching.
pub fn tls_words(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    let rustls::Error::InvalidCertificate(cert) = e else {
        return format!("TLS failed: {e}");
    };
    let words = match cert {
        C::UnknownIssuer => "issued by a CA that is not trusted here (UnknownIssuer)".into(),
        C::BadSignature => "its signature does not verify (BadSignature)".into(),
        C::Revoked => "it has been revoked (Revoked)".into(),
        C::Expired => "it has expired (Expired)".into(),
        C::NotValidYet => "it is not valid yet (NotValidYet)".into(),
        C::NotValidForName => "it is not valid for this name (NotValidForName)".into(),
        C::Other(other) => {
            let code = other.to_string();
            match webpki_words(&code) {
                Some(words) => format!("{words} ({code})"),
                None => code,
            }
        }
        // rustls says these in words already (expired at, valid only for, …).
        other => other.to_string(),
    };
    format!("certificate verification failed: {words}")
}

/// webpki's codes (printed as their Debug name) that a person meets in practice.
fn webpki_words(code: &str) -> Option<&'static str> {
    Some(match code {
        "CaUsedAsEndEntity" => {
            "the server presents a CA certificate (basicConstraints CA:TRUE) as its own"
        }
        "EndEntityUsedAsCa" => "a certificate in the chain that is not a CA signed another",
        "UnknownIssuer" => "issued by a CA that is not trusted here",
        "RequiredEkuNotFound" | "RequiredEkuNotFoundContext" => {
            "the certificate is not for TLS servers (extended key usage)"
        }
        "UnsupportedCertVersion" => "the certificate is not X.509 version 3",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn tls_failures_are_said_in_words_with_their_code() {
        let other = rustls::CertificateError::Other(rustls::OtherError(Arc::new(
            std::io::Error::other("CaUsedAsEndEntity"),
        )));
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(other),
        );
        let said = in_words(&io);
        assert_eq!(
            said,
            "certificate verification failed: the server presents a CA certificate \
             (basicConstraints CA:TRUE) as its own (CaUsedAsEndEntity)"
        );
        let unknown = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        assert_eq!(
            in_words(&unknown),
            "certificate verification failed: issued by a CA that is not trusted here (UnknownIssuer)"
        );
    }

    #[derive(Debug, thiserror::Error)]
    #[error("client error (Connect)")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn every_cause_is_named_once_and_empty_layers_are_skipped() {
        let e = Outer(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused",
        ));
        assert_eq!(in_words(&e), "cannot connect: Connection refused");
    }
}
