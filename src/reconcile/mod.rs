//! The reconciler: desired objects from the spec, live objects from the store, a plan
//! that diffs them, and the apply that makes the store match.

mod apply;
pub mod desired;
pub mod plan;
pub mod render;
pub mod watch;

pub use apply::{ApplyError, apply};
pub use desired::desired_objects;
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
}

/// Plans the changes that make `store` match `loaded`.
pub fn plan(loaded: &LoadedSpec, store: &dyn Store, source: &str) -> Result<Plan, PlanError> {
    let desired = desired_objects(loaded)?;
    let (revision, live) = store.objects()?;
    Ok(diff(desired, live, revision, source))
}
