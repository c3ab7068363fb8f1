//! `ferrymail migrate --from sqlite --to mongodb` (and back): copies the whole store into
//! an empty one of the other kind, then proves the copy by planning the spec against it.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::spec::StoreKind;
use crate::spec::model::Store as StoreConfig;

#[derive(clap::Args)]
pub struct Args {
    /// The store to copy from.
    #[arg(long, value_enum)]
    from: Backend,
    /// The store to copy into; it must be empty.
    #[arg(long, value_enum)]
    to: Backend,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Backend {
    /// The embedded store in server.data_dir.
    Sqlite,
    /// The MongoDB deployment in [store] url and database.
    Mongodb,
}

impl Backend {
    fn config(self, spec: &StoreConfig) -> StoreConfig {
        StoreConfig {
            kind: match self {
                Backend::Sqlite => StoreKind::Sqlite,
                Backend::Mongodb => StoreKind::Mongodb,
            },
            ..spec.clone()
        }
    }
}

pub fn run(spec: &Path, args: Args) -> anyhow::Result<ExitCode> {
    if args.from == args.to {
        bail!("--from and --to name the same store");
    }
    let loaded = super::load_spec(spec)?;
    let config = &loaded.spec.store;
    if (args.from == Backend::Mongodb || args.to == Backend::Mongodb) && config.url.is_none() {
        bail!("the MongoDB side is [store] url (and database) in the spec; set store.url");
    }
    let source = super::open_store_of(&loaded, &args.from.config(config), false)?
        .context("the source store does not exist yet: nothing to copy")?;
    let target = super::open_store_of(&loaded, &args.to.config(config), true)?
        .context("the target store could not be opened")?;
    println!(
        "copying {} {} → {} {}",
        source.kind(),
        source.location(),
        target.kind(),
        target.location()
    );
    let dump = source.dump().context("reading the source store")?;
    target
        .load(&dump)
        .context("writing the target store (nothing was written)")?;
    println!("copied {}", dump.summary());

    let copied = target.dump().context("reading the copy back")?;
    if copied != dump {
        bail!("the copy does not read back as what was written; do not switch to it");
    }
    let now = source.revision()?;
    if now != dump.revision {
        println!(
            "! the source store moved on while it was copied (revision {} → {now}); the copy holds revision {}: empty the target and run migrate again once applies have stopped",
            dump.revision, dump.revision
        );
        return Ok(ExitCode::from(1));
    }
    // The proof a user would ask for: the spec plans the same against the copy as
    // against the original (no change at all, once the spec was applied).
    let store_only = crate::reconcile::Targets {
        store: true,
        dns: false,
    };
    let on_copy = super::make_plan(&loaded, Some(target.as_ref()), spec, store_only)?;
    let on_source = super::make_plan(&loaded, Some(source.as_ref()), spec, store_only)?;
    let render = |plan| {
        crate::reconcile::render::text(plan, &crate::reconcile::render::Style { color: false })
    };
    if render(&on_copy) != render(&on_source) {
        print!("{}", render(&on_copy));
        println!(
            "! the spec plans differently against the copy than against the source: do not switch to it"
        );
        return Ok(ExitCode::from(1));
    }
    if on_copy.is_empty() {
        println!("plan against the copy: no changes");
    } else {
        print!("{}", render(&on_copy));
        println!(
            "the spec has changes not applied yet (the same against the source); apply them after switching"
        );
    }
    let kind = match args.to {
        Backend::Sqlite => "sqlite",
        Backend::Mongodb => "mongodb",
    };
    println!(
        "To switch, set store.kind = \"{kind}\" in the spec and restart serve on every node. The queue, mail log and mailboxes move with the store and are not copied by migrate yet: let the queue drain first (`ferrymail queue list`), and move mailboxes with an IMAP copy (e.g. imapsync or mbsync)."
    );
    Ok(ExitCode::SUCCESS)
}
