//! `ferrymail passwd`: reads a password (stdin, or a prompt on a terminal) and prints
//! its argon2id hash to paste into a mailbox's `password = { hash = "..." }`, or makes
//! a strong password itself (`--generate`). An easily guessed one needs `--force`.

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

use anyhow::bail;

#[derive(clap::Args)]
pub struct Args {
    /// Make a strong random password and print it with its hash (nothing is read).
    #[arg(long, conflicts_with = "force")]
    generate: bool,
    /// Hash a password even when it is easy to guess (short, common, repeated).
    #[arg(long)]
    force: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.generate {
        let password = crate::password::generate()?;
        println!("password: {password}");
        println!("hash: {}", crate::password::hash(&password)?);
        return Ok(ExitCode::SUCCESS);
    }
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ")?;
        let again = rpassword::prompt_password("Again: ")?;
        if first != again {
            bail!("the passwords differ; nothing was printed");
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_string()
    };
    if password.is_empty() {
        bail!("empty password");
    }
    if let Some(why) = crate::password::weakness(&password) {
        if !args.force {
            bail!(
                "this password is easy to guess: {why}. Choose a longer one, let `ferrymail passwd --generate` make one, or hash it anyway with --force"
            );
        }
        eprintln!("warning: this password is easy to guess: {why}");
    }
    println!("{}", crate::password::hash(&password)?);
    Ok(ExitCode::SUCCESS)
}
