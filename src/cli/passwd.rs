//! `ferrymail passwd`: reads a password (stdin, or a prompt on a terminal) and prints
//! its argon2id hash to paste into a mailbox's `password = { hash = "..." }`.

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

use anyhow::bail;

pub fn run() -> anyhow::Result<ExitCode> {
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
    println!("{}", crate::password::hash(&password)?);
    Ok(ExitCode::SUCCESS)
}
