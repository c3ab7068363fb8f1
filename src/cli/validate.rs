//! `ferrymail validate`: every problem in the spec at once, with file:line:col.

use std::path::Path;
use std::process::ExitCode;

use crate::reconcile::desired_objects;

pub fn run(spec: &Path) -> anyhow::Result<ExitCode> {
    let loaded = super::load_spec(spec)?;
    let objects = desired_objects(&loaded)?;
    let domains = loaded.spec.domains.len();
    println!(
        "{}: valid ({domains} domain{}, {} objects)",
        spec.display(),
        if domains == 1 { "" } else { "s" },
        objects.len()
    );
    Ok(ExitCode::SUCCESS)
}
