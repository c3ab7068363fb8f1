//! `ferrymail backup create | list | restore`: the spec's `[backups]` by hand, with a
//! progress bar on a terminal. `serve` runs the same backups on their schedule.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};

use crate::backup::{self, Settings};
use crate::spec::LoadedSpec;
use crate::store::BackupRun;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Make a backup now (the store, mailboxes, queue, keys, certificates).
    Create,
    /// The backups at the target, oldest first.
    List,
    /// Restore a backup into the data dir (or --to DIR). Everything is downloaded,
    /// decrypted and checked beside it first; nothing is touched if anything is wrong.
    Restore {
        /// The backup's id (from `backup list`), or "latest".
        id: String,
        /// Restore here instead of the spec's data dir.
        #[arg(long)]
        to: Option<PathBuf>,
        /// Replace a data dir that holds data (it is kept beside, renamed, not deleted).
        #[arg(long)]
        force: bool,
        /// Keep the mailboxes' UIDVALIDITY and the calendars' sync tokens (only when
        /// moving a stopped server whole: otherwise IMAP, CalDAV and CardDAV clients
        /// must see new ones and resync).
        #[arg(long)]
        keep_uidvalidity: bool,
    },
}

/// The spec's `[backups]` with its secrets read; None when there is no `[backups]`.
pub fn settings(loaded: &LoadedSpec) -> anyhow::Result<Option<Settings>> {
    let Some(b) = &loaded.spec.backups else {
        return Ok(None);
    };
    let secret =
        |name: &str, r: &Option<crate::spec::SecretRef>| -> anyhow::Result<Option<String>> {
            r.as_ref()
                .map(|r| {
                    r.resolve(&loaded.base_dir)
                        .map(|s| s.expose().trim().to_string())
                        .with_context(|| format!("backups.{name}"))
                })
                .transpose()
        };
    let target = backup::TargetConfig::parse(
        &b.target,
        &loaded.base_dir,
        b.endpoint.clone(),
        b.region.clone(),
        secret("access_key", &b.access_key)?,
        secret("secret_key", &b.secret_key)?,
    )?;
    let key_text = b
        .encryption_key
        .resolve(&loaded.base_dir)
        .context("backups.encryption_key")?;
    Ok(Some(Settings {
        target,
        schedule: backup::Schedule::parse(&b.schedule)?,
        key: backup::Key::parse(key_text.expose())?,
        keep: b.keep,
        include_master_key: b.include_master_key,
        hostname: loaded.spec.server.hostname.clone(),
    }))
}

fn required(loaded: &LoadedSpec) -> anyhow::Result<Settings> {
    settings(loaded)?.context("the spec has no [backups] section: declare where backups go first")
}

/// A byte progress bar on stderr when it is a terminal, invisible otherwise.
fn progress_bar(total: u64, what: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    bar
}

pub fn run(spec: &Path, command: Command) -> anyhow::Result<ExitCode> {
    let loaded = super::load_spec(spec)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    match command {
        Command::Create => runtime.block_on(create(&loaded)),
        Command::List => runtime.block_on(list(&loaded)),
        Command::Restore {
            id,
            to,
            force,
            keep_uidvalidity,
        } => runtime.block_on(restore(
            &loaded,
            backup::Restore {
                id,
                to: to.unwrap_or_else(|| loaded.data_dir()),
                force,
                keep_uidvalidity,
            },
        )),
    }
}

async fn create(loaded: &LoadedSpec) -> anyhow::Result<ExitCode> {
    let settings = required(loaded)?;
    let data_dir = loaded.data_dir();
    let Some(store) = super::open_store(loaded, false)? else {
        bail!(
            "there is nothing to back up yet: no store in {} (run apply or serve first)",
            data_dir.display()
        );
    };
    let bar = progress_bar(
        backup::estimate(&data_dir, settings.include_master_key),
        "backing up",
    );
    let started_at = crate::store::unix_now();
    let database = store.connection();
    let result = {
        let bar = bar.clone();
        backup::create(
            &settings,
            &data_dir,
            database,
            Arc::new(move |n| bar.set_position(n)),
        )
        .await
    };
    bar.finish_and_clear();
    let run = BackupRun {
        id: result
            .as_ref()
            .map(|c| c.record.id.clone())
            .unwrap_or_default(),
        started_at,
        target: settings.target.to_string(),
        ok: result.is_ok(),
        size: result.as_ref().map_or(0, |c| c.record.size),
        sha256: result
            .as_ref()
            .map(|c| c.record.sha256.clone())
            .unwrap_or_default(),
        duration_ms: result.as_ref().map_or(0, |c| c.record.duration_ms),
        error: match &result {
            Err(e) => Some(e.to_string()),
            Ok(c) => c
                .prune_error
                .as_ref()
                .map(|e| format!("old backups not removed: {e}")),
        },
    };
    store
        .record_backup(&run)
        .context("recording the backup run")?;
    let created = result?;
    let r = &created.record;
    println!(
        "Backup {} stored at {}: {} files, {} → {} encrypted ({}), in {:.1} s.\n  sha256 {}",
        r.id,
        settings.target,
        r.files,
        backup::human_bytes(r.data_bytes),
        backup::human_bytes(r.size),
        r.encryption,
        r.duration_ms as f64 / 1000.0,
        r.sha256
    );
    if !r.includes_master_key && loaded.spec.server.master_key.is_none() {
        println!(
            "  The mailboxes' master key ({}) is not in the backup: keep a copy of it elsewhere, or mail cannot be read after a restore on a new machine.",
            data_dir.join("master.key").display()
        );
    }
    if let Some(e) = &created.prune_error {
        println!("  Old backups could not be removed: {e}");
    }
    if !created.pruned.is_empty() {
        println!(
            "  Removed {} old backup(s) beyond keep = {}: {}",
            created.pruned.len(),
            settings.keep,
            created.pruned.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn list(loaded: &LoadedSpec) -> anyhow::Result<ExitCode> {
    let settings = required(loaded)?;
    let target = backup::Target::open(&settings.target)?;
    let records = target.records().await?;
    let names = target.names().await?;
    if records.is_empty() {
        println!("No backups at {} yet.", settings.target);
        return Ok(ExitCode::SUCCESS);
    }
    println!("Backups at {} (keep {}):", settings.target, settings.keep);
    println!(
        "  {:<20} {:<20} {:>10} {:>6}  NOTES",
        "ID", "CREATED", "SIZE", "FILES"
    );
    for r in &records {
        let mut notes = Vec::new();
        if r.includes_master_key {
            notes.push("master key included");
        }
        if !names.contains(&r.object) {
            notes.push("OBJECT MISSING");
        }
        println!(
            "  {:<20} {:<20} {:>10} {:>6}  {}",
            r.id,
            r.created_at,
            backup::human_bytes(r.size),
            r.files,
            notes.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn restore(loaded: &LoadedSpec, request: backup::Restore) -> anyhow::Result<ExitCode> {
    let settings = required(loaded)?;
    // Beside a MongoDB store the database is restored too: checked before anything is
    // unpacked, so a refusal leaves everything as it was.
    let database: Option<Arc<crate::mongo::Mongo>> = match loaded.spec.store.kind {
        #[cfg(feature = "mongodb")]
        crate::spec::StoreKind::Mongodb => {
            let mongo = super::mongo_connection(loaded)?;
            if let Some(name) = backup::database::held(&mongo)?
                && !request.force
            {
                bail!(
                    "the database {:?} already holds data (collection {name}); restore into an empty database, or pass --force to replace it (stop every node first)",
                    mongo.db.name()
                );
            }
            Some(mongo)
        }
        // validate refused it already; never restore beside a store this binary lacks.
        #[cfg(not(feature = "mongodb"))]
        crate::spec::StoreKind::Mongodb => {
            bail!(crate::features::missing(
                "store.kind = \"mongodb\"",
                "mongodb"
            ))
        }
        crate::spec::StoreKind::Sqlite => None,
    };
    let bar = progress_bar(0, "restoring");
    let report = {
        let bar = bar.clone();
        backup::restore(
            &settings.target,
            &settings.key,
            &request,
            Arc::new(move |n, total| {
                bar.set_length(total);
                bar.set_position(n)
            }),
        )
        .await
    };
    bar.finish_and_clear();
    let report = report?;
    let r = &report.record;
    println!(
        "Restored backup {} ({} files, made {} on {}) into {}.",
        r.id,
        r.files,
        r.created_at,
        r.hostname,
        request.to.display()
    );
    if let Some(aside) = &report.moved_aside {
        println!("  The data that was there is kept in {}.", aside.display());
    }
    let dumped = request.to.join(backup::DATABASE_DIR);
    match (&database, dumped.is_dir()) {
        #[cfg(feature = "mongodb")]
        (Some(mongo), true) => {
            let loaded_docs = backup::database::import(mongo, &dumped, request.force)?;
            let (renewed, collections) = if request.keep_uidvalidity {
                (0, 0)
            } else {
                (
                    backup::database::renew_uidvalidity(mongo)?,
                    crate::collections::renew_instances_in_mongo(mongo)
                        .context("renewing the calendars' sync state")?,
                )
            };
            std::fs::remove_dir_all(&dumped)
                .with_context(|| format!("removing {}", dumped.display()))?;
            println!(
                "  The database {:?} was loaded: {loaded_docs} documents; {renewed} mailbox folders have a new UIDVALIDITY; {collections} calendars and address books a new sync token.",
                mongo.db.name()
            );
        }
        (None, true) => println!(
            "  The backup holds a MongoDB database ({}): set store.kind = \"mongodb\" and restore again to load it, or load it with mongorestore.",
            dumped.display()
        ),
        (Some(_), _) => println!(
            "  ! The backup holds no MongoDB database (it was made beside a SQLite store): the database was left as it was."
        ),
        (None, false) => {}
    }
    if report.folders_renewed > 0 {
        println!(
            "  {} mailbox folders have a new UIDVALIDITY: IMAP clients resync them.",
            report.folders_renewed
        );
    }
    if report.collections_renewed > 0 {
        println!(
            "  {} calendars and address books have a new sync token: CalDAV and CardDAV clients resync them.",
            report.collections_renewed
        );
    }
    if report.master_key_carried {
        println!("  The backup holds no master key; the one that was there was kept.");
    } else if !r.includes_master_key
        && loaded.spec.server.master_key.is_none()
        && !request.to.join("master.key").exists()
    {
        println!(
            "  The backup holds no master key: put the old server's master.key in {} before serving, or mailboxes cannot be read.",
            request.to.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
