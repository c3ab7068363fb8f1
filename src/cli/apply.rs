//! `ferrymail apply [PLANFILE]`: apply a fresh plan (confirmed) or a saved one.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::reconcile::{self, Plan, render};
use crate::store::Store;

#[derive(clap::Args)]
pub struct Args {
    /// A plan saved with `plan --out`; applied as it is, if the store has not moved since.
    plan_file: Option<PathBuf>,
    /// Apply without asking.
    #[arg(long)]
    auto_approve: bool,
    /// Apply only this part (repeatable): store, dns.
    #[arg(long, value_enum)]
    target: Vec<super::Target>,
    /// Let DNS changes delete more of a zone than `dns.max_delete_percent`.
    #[arg(long)]
    allow_dns_deletes: bool,
}

pub fn run(spec: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let style = render::Style {
        color: super::color_stdout(),
    };
    let (store, plan, loaded) = match &args.plan_file {
        Some(file) => {
            let text = std::fs::read(file)
                .with_context(|| format!("reading the plan {}", file.display()))?;
            let plan: Plan = serde_json::from_slice(&text)
                .with_context(|| format!("{} is not a ferrymail plan", file.display()))?;
            // The spec tells where the store is; the plan itself is applied as saved.
            let loaded = super::load_spec(spec)?;
            (open(&loaded)?, plan, loaded)
        }
        None => {
            let loaded = super::load_spec(spec)?;
            let store = open(&loaded)?;
            let plan = super::make_plan(
                &loaded,
                Some(store.as_ref()),
                spec,
                super::targets(&args.target),
            )?;
            (store, plan, loaded)
        }
    };
    // A saved plan made before the last apply is refused first, for that reason, before
    // it is shown or confirmed.
    let current = store.revision().context("reading the store's revision")?;
    if args.plan_file.is_some() && plan.base_revision != current {
        bail!(
            "this plan was made against store revision {}, and the store is at revision {current} now (something was applied since): make the plan again with `ferrymail plan --out`",
            plan.base_revision
        );
    }
    println!("{}", render::text(&plan, &style).trim_end());
    if plan.is_empty() {
        check_fresh(store.as_ref(), &plan)?;
        return Ok(ExitCode::SUCCESS);
    }
    // A fresh plan is always confirmed; a saved one on a terminal too (it was read when
    // saved, perhaps long ago), but not in CI, where saving it was the approval.
    let ask = !args.auto_approve && (args.plan_file.is_none() || std::io::stdin().is_terminal());
    if ask && !confirm()? {
        println!("Apply cancelled; nothing was changed.");
        return Ok(ExitCode::from(1));
    }
    let started = std::time::Instant::now();
    let applied = reconcile::apply_all(&loaded, store.as_ref(), &plan, args.allow_dns_deletes)
        .context("apply failed; the store is unchanged (DNS records of new DKIM keys may already be published: plan again)")?;
    let (revision, dns) = (applied.revision, applied.dns);
    // Serving nodes that share a Redis refresh now rather than at their next poll.
    if loaded.spec.cache.kind == crate::spec::CacheKind::Redis {
        match super::open_cache(&loaded) {
            Ok(cache) => cache.publish(crate::cache::REVISION_CHANNEL, &revision.to_string()),
            Err(e) => {
                eprintln!("warning: serving nodes not told (they notice within seconds): {e:#}")
            }
        }
    }
    for id in &applied.held_back {
        eprintln!(
            "DKIM key {id}: not changed, because its record could not be published; the key that signs now stays until an apply publishes the new one."
        );
    }
    let s = plan.summary();
    match dns {
        Ok(outcome) => {
            println!(
                "Apply complete: {} added, {} changed, {} destroyed; store at revision {revision} ({:.2}s).",
                s.add,
                s.change,
                s.destroy,
                started.elapsed().as_secs_f64()
            );
            if !outcome.manual.is_empty() {
                println!(
                    "\n{} DNS change(s) are yours to make by hand; `ferrymail dns check` verifies them:",
                    outcome.manual.len()
                );
                for line in &outcome.manual {
                    println!("  {line}");
                }
            }
            for conflict in &outcome.conflicts {
                println!("Not done (conflict): {conflict}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("The store is at revision {revision}; DNS was not (fully) applied:\n{e}");
            Ok(ExitCode::from(1))
        }
    }
}

fn open(loaded: &crate::spec::LoadedSpec) -> anyhow::Result<std::sync::Arc<dyn Store>> {
    super::open_store(loaded, true)?.context("the store could not be created")
}

fn check_fresh(store: &dyn Store, plan: &Plan) -> anyhow::Result<()> {
    reconcile::apply(store, plan).context("apply failed")?;
    Ok(())
}

fn confirm() -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!(
            "refusing to apply without confirmation: stdin is not a terminal; pass --auto-approve"
        );
    }
    print!("\nApply these changes? Only 'yes' will be accepted: ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(answer.trim() == "yes")
}
