//! `ferrymail validate`: every problem in the spec at once, with file:line:col.

use std::path::Path;
use std::process::ExitCode;

use crate::reconcile::desired_objects;

pub fn run(spec: &Path) -> anyhow::Result<ExitCode> {
    let loaded = super::load_spec(spec)?;
    let objects = desired_objects(&loaded)?;
    let domains = loaded.spec.domains.len();
    let name = loaded
        .origin
        .clone()
        .unwrap_or_else(|| spec.display().to_string());
    println!(
        "{name}: valid ({domains} domain{}, {} objects)",
        if domains == 1 { "" } else { "s" },
        objects.len()
    );
    Ok(ExitCode::SUCCESS)
}
