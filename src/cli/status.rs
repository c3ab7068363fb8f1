//! `ferrymail status`: the store's revision, what it holds, and the latest applies.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use crate::store::{Kind, Store};

#[derive(clap::Args)]
pub struct Args {
    /// Print as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(spec: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let loaded = super::load_spec(spec)?;
    let Some(store) = super::open_store(&loaded, false)? else {
        println!(
            "store: none yet in {} (run `ferrymail apply`)",
            loaded.data_dir().display()
        );
        return Ok(ExitCode::SUCCESS);
    };
    let (revision, objects) = store.objects()?;
    let mut counts: BTreeMap<&str, usize> = Kind::ALL.iter().map(|k| (k.as_str(), 0)).collect();
    for o in &objects {
        *counts.entry(o.object.kind.as_str()).or_default() += 1;
    }
    let applies = store.applies(5)?;
    if args.json {
        let v = serde_json::json!({
            "store": { "kind": "sqlite", "path": store.path(), "revision": revision },
            "objects": counts,
            "applies": applies,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "store: sqlite {} (revision {revision})",
        store.path().display()
    );
    let list: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
    println!("objects: {}", list.join(", "));
    match applies.first() {
        None => println!("last apply: never (run `ferrymail apply`)"),
        Some(_) => {
            println!("recent applies:");
            for a in &applies {
                println!(
                    "  revision {} at {}: +{} ~{} -{} from {}",
                    a.revision, a.applied_at, a.added, a.changed, a.destroyed, a.source
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
