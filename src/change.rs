//! An edit of the spec asked for in the web admin or through the API, as plain data:
//! what a form or a JSON body says, before `spec::edit` turns it into a patch of the file.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One change to the spec. Fields left out (None) are left as the spec has them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    AddDomain {
        name: String,
        fields: DomainFields,
    },
    EditDomain {
        name: String,
        fields: DomainFields,
    },
    RemoveDomain {
        name: String,
    },
    AddAlias {
        address: String,
        fields: AliasFields,
    },
    EditAlias {
        address: String,
        fields: AliasFields,
    },
    RemoveAlias {
        address: String,
    },
    AddPattern {
        domain: String,
        fields: PatternFields,
    },
    EditPattern {
        domain: String,
        index: usize,
        fields: PatternFields,
    },
    RemovePattern {
        domain: String,
        index: usize,
    },
    /// A mailbox's new password, as its argon2id hash (the password itself is shown to
    /// whoever asked, once, and never written).
    NewPassword {
        address: String,
        hash: String,
    },
}

impl Change {
    /// What the change does, in a few words: the commit message, the plan page's title.
    pub fn describe(&self) -> String {
        match self {
            Change::AddDomain { name, .. } => format!("add domain {name}"),
            Change::EditDomain { name, .. } => format!("change domain {name}"),
            Change::RemoveDomain { name } => format!("remove domain {name}"),
            Change::AddAlias { address, .. } => format!("add alias {address}"),
            Change::EditAlias { address, .. } => format!("change alias {address}"),
            Change::RemoveAlias { address } => format!("remove alias {address}"),
            Change::AddPattern { domain, .. } => format!("add a pattern to {domain}"),
            Change::EditPattern { domain, index, .. } => {
                format!("change pattern {} of {domain}", index + 1)
            }
            Change::RemovePattern { domain, index } => {
                format!("remove pattern {} of {domain}", index + 1)
            }
            Change::NewPassword { address, .. } => format!("new password for {address}"),
        }
    }

    /// A branch-name-safe slug of `describe`: "add-alias-hello-example.com".
    pub fn slug(&self) -> String {
        let mut slug = String::new();
        for c in self.describe().chars() {
            // A dot only after a letter or digit: git refuses "..", and a leading dot.
            let dot_ok = c == '.' && slug.ends_with(|p: char| p.is_ascii_alphanumeric());
            if c.is_ascii_alphanumeric() || dot_ok {
                slug.push(c.to_ascii_lowercase());
            } else if !slug.ends_with('-') {
                slug.push('-');
            }
        }
        slug.trim_matches(['-', '.']).chars().take(60).collect()
    }
}

/// A domain's settings the admin edits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DomainFields {
    /// Which `[dns.providers.NAME]` publishes the domain's records; "" for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_provider: Option<String>,
    /// DKIM selectors, each "selector" or "selector:ed25519"; [] turns signing off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dkim: Option<Vec<String>>,
    /// Where mail for unknown addresses goes; `{ "remove": true }` removes the catch-all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_all: Option<RuleFields>,
}

/// A catch-all: forwards, or a rejection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward: Option<Vec<String>>,
    /// quiet | soft | hard; "" for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reject: Option<String>,
    /// The rejection's text; "" for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Removes the rule instead.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub remove: bool,
}

/// An alias's settings the admin edits (others the spec has, e.g. a Sieve script, stay).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AliasFields {
    /// Forward targets: addresses, domains or https:// webhooks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward: Option<Vec<String>>,
    /// Whether the address has a mailbox (false removes it, and the mail in it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mailbox: Option<bool>,
    /// The mailbox's quota, e.g. "10GiB"; "" for unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<String>,
    /// quiet | soft | hard; "" for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reject: Option<String>,
    /// The rejection's text; "" for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Set by the server when it made the mailbox a password (never read from a request).
    #[serde(skip)]
    pub password_hash: Option<String>,
}

/// A pattern's settings: a regex on the local part and what it does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatternFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward: Option<Vec<String>>,
    /// quiet | soft | hard; "" for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reject: Option<String>,
    /// The rejection's text; "" for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// An edit asked for: the change, the ETag of the spec the asker saw (None: whatever
/// it is now), whether to stop at the plan, and who asks (a commit's author).
#[derive(Debug, Clone)]
pub struct EditCall {
    pub change: Change,
    pub etag: Option<String>,
    pub dry_run: bool,
    pub author: String,
}

/// Why an edit was not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// What the change names is not in the spec.
    NotFound,
    /// What it would add is there already.
    Exists,
    /// The change, or the spec it would make, is not valid.
    Invalid,
    /// The spec changed since the asker loaded it.
    Stale,
    /// Edits are off (`[admin] changes = "none"`) or cannot be made here.
    ReadOnly,
    /// Reading, writing or applying failed.
    Failed,
}

/// What an edit did, or would do.
#[derive(Debug, Clone, Default)]
pub struct EditOutcome {
    /// None: made (or, for a dry run, it would be).
    pub refused: Option<Refusal>,
    /// Why it was refused, or what went wrong after it was written: one line each,
    /// located (`file:line:col: …`) where the spec is the problem.
    pub errors: Vec<String>,
    /// The plan against the live state, as `ferrymail plan` prints it.
    pub plan: String,
    pub add: usize,
    pub change: usize,
    pub destroy: usize,
    /// The text change of each file, as `+`/`-` lines.
    pub diff: String,
    /// The files written (or, for a spec in git, changed in the commit).
    pub written: Vec<String>,
    /// The commit made, for a spec kept in git.
    pub commit: Option<String>,
    /// The branch it was pushed to: the source's, or `ferrymail/CHANGE` for review.
    pub branch: Option<String>,
    /// What the apply after the write did ("revision 7: 1 added, 0 changed, 0 destroyed").
    pub applied: Option<String>,
    /// The spec's ETag now (after the write, if one was made).
    pub etag: String,
}

/// Where the admin's and the API's edits go: the serve loop's editor of the spec.
pub trait SpecEditor: Send + Sync {
    /// The ETag of the spec as it is now, and where edits go ("apply", "none", …).
    fn current(&self) -> (String, String);
    /// Makes (or plans) an edit; blocking.
    fn edit(&self, call: EditCall) -> EditOutcome;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slug_is_safe_in_a_branch_name() {
        let change = Change::AddAlias {
            address: "Hello+x@Example.com".into(),
            fields: AliasFields::default(),
        };
        assert_eq!(change.slug(), "add-alias-hello-x-example.com");
        let odd = Change::RemoveDomain {
            name: "../..//x".into(),
        };
        assert_eq!(odd.slug(), "remove-domain-x");
    }
}
