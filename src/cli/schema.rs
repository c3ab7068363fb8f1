//! `ferrymail schema`: the spec's JSON schema, generated from the model's doc comments.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

#[derive(clap::Args)]
pub struct Args {
    /// Where to write it; "-" prints it.
    #[arg(long, default_value = "schema/ferrymail.schema.json")]
    out: PathBuf,
}

/// The schema text, exactly as committed in schema/ferrymail.schema.json.
pub fn schema_json() -> String {
    let schema = schemars::schema_for!(crate::spec::Spec);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let text = schema_json();
    if args.out.as_os_str() == "-" {
        print!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&args.out, text).with_context(|| format!("writing {}", args.out.display()))?;
    println!("Wrote {}", args.out.display());
    Ok(ExitCode::SUCCESS)
}
