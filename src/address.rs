//! Mail addresses and domain names in their one canonical form: lowercase, IDNA domains
//! as ASCII (punycode), so lookups never depend on how a user typed them.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("\"{0}\" is not a valid domain name")]
    Domain(String),
    #[error("\"{0}\" is not a valid local part (the part before @)")]
    LocalPart(String),
    #[error("\"{0}\" is not a valid address (expected local@domain)")]
    Address(String),
}

/// Normalises a domain name: IDNA to ASCII, lowercase, no trailing dot; checks the syntax.
pub fn normalize_domain(input: &str) -> Result<String, AddressError> {
    let err = || AddressError::Domain(input.to_string());
    let trimmed = input.strip_suffix('.').unwrap_or(input);
    if trimmed.is_empty() || trimmed.len() > 253 {
        return Err(err());
    }
    let ascii = idna::domain_to_ascii(trimmed).map_err(|_| err())?;
    let labels_ok = ascii.split('.').all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    if !labels_ok || !ascii.contains('.') && ascii != "localhost" {
        return Err(err());
    }
    Ok(ascii)
}

/// Checks and lowercases a local part. Dot-atom text is accepted, including UTF-8
/// (RFC 6531); quoted local parts are not, as no alias needs them.
pub fn normalize_local(input: &str) -> Result<String, AddressError> {
    let err = || AddressError::LocalPart(input.to_string());
    if input.is_empty() || input.len() > 64 || input.starts_with('.') || input.ends_with('.') {
        return Err(err());
    }
    if input.contains("..") {
        return Err(err());
    }
    const SPECIALS: &str = "!#$%&'*+-/=?^_`{|}~.";
    if !input
        .chars()
        .all(|c| c.is_alphanumeric() || SPECIALS.contains(c) || !c.is_ascii() && !c.is_control())
    {
        return Err(err());
    }
    Ok(input.to_lowercase())
}

/// A normalised address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    pub local: String,
    pub domain: String,
}

impl Address {
    pub fn parse(input: &str) -> Result<Address, AddressError> {
        let (local, domain) = input
            .rsplit_once('@')
            .ok_or_else(|| AddressError::Address(input.to_string()))?;
        let local = normalize_local(local).map_err(|_| AddressError::Address(input.to_string()))?;
        let domain =
            normalize_domain(domain).map_err(|_| AddressError::Address(input.to_string()))?;
        Ok(Address { local, domain })
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_lowercased_and_punycoded() {
        assert_eq!(normalize_domain("Example.COM.").unwrap(), "example.com");
        assert_eq!(
            normalize_domain("bücher.example").unwrap(),
            "xn--bcher-kva.example"
        );
        assert!(normalize_domain("no spaces.com").is_err());
        assert!(normalize_domain("-bad.com").is_err());
        assert!(normalize_domain("nodot").is_err());
    }

    #[test]
    fn addresses_are_checked_and_normalised() {
        let a = Address::parse("Hello.World@Bücher.Example").unwrap();
        assert_eq!(a.to_string(), "hello.world@xn--bcher-kva.example");
        assert!(Address::parse("no-at-sign").is_err());
        assert!(Address::parse("a..b@x.com").is_err());
        assert!(Address::parse("a b@x.com").is_err());
        assert!(Address::parse("@x.com").is_err());
    }
}
