//! The reconciler: desired objects from the spec, live objects from the store, a plan
//! that diffs them, and the apply that makes the store match.

mod apply;
pub mod backups;
pub mod certs;
pub mod desired;
pub mod dns;
pub mod edits;
pub mod plan;
pub mod render;
pub mod unchanged;
pub mod watch;

pub use apply::{Applied, ApplyError, apply, apply_all};
pub use desired::{api_token_errors, desired_objects, whole_spec_errors_despite};
pub use plan::{Action, Change, Plan, Summary, diff};

use crate::spec::{LoadedSpec, SpecErrors};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{0}")]
    Spec(#[from] SpecErrors),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("apply failed: {0}")]
    Apply(String),
    #[error("{0}")]
    Source(String),
}

/// Plans the changes that make `store` match `loaded`.
pub fn plan(loaded: &LoadedSpec, store: &dyn Store, source: &str) -> Result<Plan, PlanError> {
    let desired = desired_objects(loaded)?;
    let (revision, live) = store.objects()?;
    Ok(diff(desired, live, revision, source))
}

/// What a plan covers (`--target`): the store's objects, the records at DNS providers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Targets {
    pub store: bool,
    pub dns: bool,
}

impl Targets {
    pub const ALL: Targets = Targets {
        store: true,
        dns: true,
    };
}

/// Plans the store (an absent store is an empty one) and, when targeted, DNS.
pub fn plan_targets(
    loaded: &LoadedSpec,
    store: Option<&dyn Store>,
    source: &str,
    targets: Targets,
) -> Result<Plan, PlanError> {
    let mut plan = match store {
        Some(store) => plan(loaded, store, source)?,
        None => diff(desired_objects(loaded)?, Vec::new(), 0, source),
    };
    if !targets.store {
        plan.changes.clear();
        plan.unmanaged.clear();
    }
    if targets.dns {
        plan.dns = dns::block_on(dns::plan(loaded, store, &plan));
    }
    plan.certificate = certs::plan(&loaded.spec, store, crate::store::unix_now())?;
    plan.backups = backups::plan(
        &loaded.spec,
        &loaded.base_dir,
        store,
        crate::store::unix_now(),
    );
    Ok(plan)
}
