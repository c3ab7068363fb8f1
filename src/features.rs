//! The optional parts this binary was built with (Cargo features), so that a spec needing
//! one it lacks is refused by `validate` with the feature's name, not failed at `serve`.

/// The features built in, as `--version` lists them: "mongodb redis s3 cloudflare", or
/// "none" (build.rs writes the list from Cargo's CARGO_FEATURE_* variables).
pub fn built() -> &'static str {
    env!("FERRYMAIL_FEATURES")
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
    }

    #[test]
    fn build_rs_lists_the_features_this_crate_was_compiled_with() {
        let on: Vec<&str> = [
            ("mongodb", cfg!(feature = "mongodb")),
            ("redis", cfg!(feature = "redis")),
            ("s3", cfg!(feature = "s3")),
            ("cloudflare", cfg!(feature = "cloudflare")),
        ]
        .into_iter()
        .filter_map(|(name, on)| on.then_some(name))
        .collect();
        let expected = if on.is_empty() {
            "none".to_string()
        } else {
            on.join(" ")
        };
        assert_eq!(built(), expected);
    }
}
