//! `ferrymail plan`: what apply would change, as text or JSON, optionally saved.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use crate::reconcile::render;

#[derive(clap::Args)]
pub struct Args {
    /// Print the plan as JSON (sensitive values masked).
    #[arg(long)]
    json: bool,
    /// Save the plan to FILE (0600) for a later `apply FILE`.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Exit 0 when there are no changes, 2 when there are, 1 on error.
    #[arg(long)]
    detailed_exitcode: bool,
    /// Plan only this part (repeatable): store, dns.
    #[arg(long, value_enum)]
    target: Vec<super::Target>,
}

pub fn run(spec: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let loaded = super::load_spec(spec)?;
    let store = super::open_store(&loaded, false)?;
    let plan = super::make_plan(
        &loaded,
        store.as_deref(),
        spec,
        super::targets(&args.target),
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&render::json(&plan))?);
    } else {
        print!(
            "{}",
            render::text(
                &plan,
                &render::Style {
                    color: super::color_stdout()
                }
            )
        );
    }
    if let Some(out) = &args.out {
        let bytes = serde_json::to_vec_pretty(&plan)?;
        super::write_private(out, &bytes)
            .with_context(|| format!("saving the plan to {}", out.display()))?;
        if !args.json {
            println!(
                "Saved the plan to {}; apply it with `ferrymail apply {}`.",
                out.display(),
                out.display()
            );
        }
    }
    if !plan.dns.errors.is_empty() {
        anyhow::bail!("DNS could not be planned (see above); `--target store` plans the rest");
    }
    Ok(if args.detailed_exitcode && !plan.is_empty() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}
