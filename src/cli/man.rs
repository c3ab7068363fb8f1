//! `ferrymail man`: manual pages made from the CLI's own help (clap_mangen), one for
//! `ferrymail` and one per subcommand, for packages (`man ferrymail-serve`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

#[derive(clap::Args)]
pub struct Args {
    /// The directory to write ferrymail.1 and ferrymail-SUBCOMMAND.1 into.
    #[arg(long, default_value = "man")]
    out: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let command = <super::Cli as clap::CommandFactory>::command();
    clap_mangen::generate_to(command, &args.out)
        .with_context(|| format!("writing manual pages into {}", args.out.display()))?;
    let written = std::fs::read_dir(&args.out)
        .map(|entries| entries.filter_map(Result::ok).count())
        .unwrap_or(0);
    println!("Wrote {written} manual pages into {}", args.out.display());
    Ok(ExitCode::SUCCESS)
}
