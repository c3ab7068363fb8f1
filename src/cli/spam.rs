//! `ferrymail spam learn --spam|--ham FILE…`: teaches the spam filter messages an
//! operator has at hand (a spam trap's catch, a user's complaint), as IMAP moves do.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Teach rspamd that each FILE (a whole message, as .eml) is spam, or with --ham
    /// that it is not.
    Learn {
        /// The messages are spam.
        #[arg(long, conflicts_with = "ham", required_unless_present = "ham")]
        spam: bool,
        /// The messages are wanted mail.
        #[arg(long)]
        ham: bool,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

pub fn run(spec: &Path, command: Command) -> anyhow::Result<ExitCode> {
    let loaded = super::load_spec(spec)?;
    let Command::Learn { spam, files, .. } = command;
    let filter = crate::spam::Filter::from_spec(&loaded.spec.spam, &loaded.base_dir)?;
    let Some(rspamd) = filter.and_then(|f| f.rspamd) else {
        bail!("the spec declares no spam filter: set [spam] kind = \"rspamd\"");
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let verdict = if spam { "spam" } else { "ham" };
    let mut failed = 0;
    for file in &files {
        let message = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        match runtime.block_on(rspamd.learn(spam, message)) {
            Ok(()) => println!("{}: learned as {verdict}", file.display()),
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                failed += 1;
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} messages were not learned", files.len());
    }
    Ok(ExitCode::SUCCESS)
}
