//! The optional parts this binary was built with (Cargo features), so that a spec needing
//! one it lacks is refused by `validate` with the feature's name, not failed at `serve`.

/// Every optional part: its Cargo feature and whether this binary has it.
pub const ALL: [(&str, bool); 4] = [
    ("mongodb", cfg!(feature = "mongodb")),
    ("redis", cfg!(feature = "redis")),
    ("s3", cfg!(feature = "s3")),
    ("cloudflare", cfg!(feature = "cloudflare")),
];

/// Whether the binary was built with `feature`.
pub fn has(feature: &str) -> bool {
    ALL.iter().any(|(name, on)| *name == feature && *on)
}

/// The features built in, as `--version` lists them: "mongodb redis s3 cloudflare", or "none".
pub fn built() -> String {
    let on: Vec<&str> = ALL
        .iter()
        .filter(|(_, on)| *on)
        .map(|(name, _)| *name)
        .collect();
    if on.is_empty() {
        "none".to_string()
    } else {
        on.join(" ")
    }
}

/// What `validate` says when `what` (a spec setting) needs a feature the binary lacks.
pub fn missing(what: &str, feature: &str) -> String {
    format!(
        "{what} needs the `{feature}` feature, which this ferrymail was built without (built with: {}); \
         build it with `cargo install --locked --path . --features {feature}`, or with the default features",
        built()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_feature_is_named_with_the_way_to_get_it() {
        let said = missing("store.kind = \"mongodb\"", "mongodb");
        assert!(
            said.starts_with("store.kind = \"mongodb\" needs the `mongodb` feature"),
            "{said}"
        );
        assert!(said.contains("--features mongodb"), "{said}");
        assert_eq!(has("mongodb"), cfg!(feature = "mongodb"));
        assert!(!has("sqlite"), "sqlite is not optional");
    }

    #[test]
    fn build_rs_lists_the_same_features_for_version() {
        // build.rs keeps its own copy of the list for --version's second line.
        assert_eq!(env!("FERRYMAIL_FEATURES"), built());
    }
}
