//! What the sender asked of TLS for one message (RFC 8689): REQUIRETLS, verified TLS to an
//! authenticated MX at every hop; or `TLS-Required: No`, delivery despite the receiver's policies.

/// How one message's TLS is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsRequest {
    /// As the receiving domain's MTA-STS policy and DANE records say (else opportunistic).
    #[default]
    AsPolicies,
    /// REQUIRETLS: only over TLS with a certificate checked by DANE or against the MX
    /// name, to an MX host DNSSEC or MTA-STS vouches for, that offers REQUIRETLS itself.
    Required,
    /// `TLS-Required: No`: STARTTLS where offered, but no policy holds the message.
    NotRequired,
}

impl TlsRequest {
    /// The request of a message that arrived with (or without) REQUIRETLS: REQUIRETLS wins
    /// over the header field (RFC 8689 §5).
    pub fn of(require_tls: bool, message: &[u8]) -> TlsRequest {
        if require_tls {
            return TlsRequest::Required;
        }
        let declined = crate::mime::field_values(message, b"TLS-Required")
            .any(|v| String::from_utf8_lossy(v).trim().eq_ignore_ascii_case("no"));
        if declined {
            TlsRequest::NotRequired
        } else {
            TlsRequest::AsPolicies
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requiretls_wins_over_the_header_field() {
        let declined = b"From: a@example.com\r\nTLS-Required:  NO \r\n\r\nbody\r\n";
        let plain = b"From: a@example.com\r\n\r\nTLS-Required: No\r\n";
        assert_eq!(TlsRequest::of(false, declined), TlsRequest::NotRequired);
        assert_eq!(TlsRequest::of(true, declined), TlsRequest::Required);
        // In the body it is text, not a header field.
        assert_eq!(TlsRequest::of(false, plain), TlsRequest::AsPolicies);
    }
}
