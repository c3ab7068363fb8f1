//! `ferrymail migrate --from sqlite --to mongodb` (and back): copies the whole store into
//! an empty one of the other kind, then proves the copy by planning the spec against it.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::mailbox::Mailboxes;
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
    if (args.from == Backend::Mongodb || args.to == Backend::Mongodb)
        && loaded.spec.server.master_key.is_none()
    {
        bail!(
            "set server.master_key in the spec first: mailboxes in MongoDB are sealed with it on every node (to keep reading mail sealed with data_dir/master.key, give it that file)"
        );
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
    // The mailboxes follow the store: files in the data dir beside SQLite, documents
    // beside MongoDB.
    let data_dir = loaded.data_dir();
    let mailboxes = |store: &dyn crate::store::Store| -> anyhow::Result<Mailboxes> {
        let key = super::serve::master_key(&loaded, &data_dir)?;
        Ok(match store.connection() {
            #[cfg(feature = "mongodb")]
            Some(mongo) => Mailboxes::in_mongo(&data_dir, key, mongo)?,
            _ => Mailboxes::new(&data_dir, key),
        })
    };
    let accounts: Vec<String> = dump
        .objects
        .iter()
        .filter(|o| o.kind == crate::store::Kind::Account)
        .map(|o| o.id.clone())
        .collect();
    let (from, to) = (mailboxes(source.as_ref())?, mailboxes(target.as_ref())?);
    let (copied, messages) = copy_mailboxes(&from, &to, &accounts)?;
    println!(
        "copied {copied} mailbox(es), {messages} message(s); every folder has a new UIDVALIDITY, so mail clients fetch again"
    );
    let (collections, resources) = copy_collections(&from, &to, &accounts)?;
    println!(
        "copied {collections} calendar(s) and address book(s), {resources} event(s), task(s) and contact(s); their ETags are the same, their sync tokens new, so clients check every item once"
    );
    let scripts = copy_sieve_scripts(&from, &to, &accounts)?;
    println!("copied {scripts} Sieve script(s), the active one still active");
    let owners = copy_own_settings(&from, &to, &accounts)?;
    println!(
        "copied {owners} owner's own settings (passwords, app passwords, forwarding, vacation)"
    );
    let kind = match args.to {
        Backend::Sqlite => "sqlite",
        Backend::Mongodb => "mongodb",
    };
    println!(
        "To switch, set store.kind = \"{kind}\" in the spec and restart serve on every node. The queue and the mail log move with the store and are not copied: let the queue drain first (`ferrymail queue list`)."
    );
    Ok(ExitCode::SUCCESS)
}

/// Copies every account's folders and messages (with their flags and dates) into the
/// other backend. UIDs are given anew, and with them UIDVALIDITY, which tells IMAP
/// clients to fetch again rather than trust their caches. Refuses an account that already
/// has mail on the other side (a second run would copy it twice).
fn copy_mailboxes(
    from: &Mailboxes,
    to: &Mailboxes,
    accounts: &[String],
) -> anyhow::Result<(usize, usize)> {
    let (mut copied, mut messages) = (0, 0);
    for account in accounts {
        if !from.exists(account) {
            continue;
        }
        let source = from.open(account)?;
        let mut target = to.open(account)?;
        for folder in target.folders()? {
            if !target.messages(&folder)?.is_empty() {
                bail!(
                    "{account} already has mail in the target's {}: not copied twice",
                    folder.name
                );
            }
        }
        for folder in source.folders()? {
            let into = target.folder_or_create(&folder.name)?;
            if !folder.subscribed {
                target.subscribe(&folder.name, false)?;
            }
            for m in source.messages(&folder)? {
                let Some(body) = source.body(&folder, m.uid)? else {
                    continue;
                };
                target
                    .append(&into, &body, &m.flags, m.internal_date, None)
                    .with_context(|| {
                        format!("copying {account}'s {} UID {}", folder.name, m.uid)
                    })?;
                messages += 1;
            }
        }
        copied += 1;
    }
    Ok((copied, messages))
}

/// Copies what each owner set on their own page (src/selfservice): without it, a
/// changed password would fall back to the spec's and app passwords would stop working.
fn copy_own_settings(
    from: &Mailboxes,
    to: &Mailboxes,
    accounts: &[String],
) -> anyhow::Result<usize> {
    use crate::selfservice::settings;
    #[cfg(feature = "mongodb")]
    settings::prepare(to)?;
    let mut copied = 0;
    for account in accounts {
        let own = settings::read(from, account)?;
        if own == settings::Own::default() {
            continue;
        }
        settings::update(to, account, |theirs| *theirs = own.clone())?;
        copied += 1;
    }
    Ok(copied)
}

/// Copies every account's own Sieve scripts (ManageSieve), and which is active.
fn copy_sieve_scripts(
    from: &Mailboxes,
    to: &Mailboxes,
    accounts: &[String],
) -> anyhow::Result<usize> {
    use crate::sieve::store::UserScripts;
    #[cfg(feature = "mongodb")]
    if let Some(mongo) = to.mongo() {
        crate::sieve::store::prepare_mongo(mongo)?;
    }
    let mut copied = 0;
    for account in accounts {
        if !from.exists(account) {
            continue;
        }
        let source = UserScripts::open(from, account)?;
        let listed = source.list()?;
        if listed.is_empty() {
            continue;
        }
        let mut target = UserScripts::open(to, account)?;
        for script in &listed {
            let body = source
                .get(&script.name)?
                .with_context(|| format!("{account}'s script {:?} vanished", script.name))?;
            target.put(&script.name, &body)?;
            copied += 1;
        }
        if let Some(active) = listed.iter().find(|l| l.active) {
            target.set_active(Some(&active.name))?;
        }
    }
    Ok(copied)
}

/// Copies every account's calendars and address books with their properties and
/// resources. Collections the other side made on its own (the defaults) and the source
/// does not have are removed; one that holds anything there is refused.
fn copy_collections(
    from: &Mailboxes,
    to: &Mailboxes,
    accounts: &[String],
) -> anyhow::Result<(usize, usize)> {
    use crate::collections::{Collections, Kind, NewResource, Precondition};
    let (source_all, target_all) = (
        Collections::new(from.clone())?,
        Collections::new(to.clone())?,
    );
    let (mut collections, mut resources) = (0, 0);
    for account in accounts {
        if !from.exists(account) {
            continue;
        }
        let source = source_all.open(account)?;
        let mut target = target_all.open(account)?;
        for kind in [Kind::Calendar, Kind::AddressBook] {
            let wanted = source.collections(kind)?;
            for there in target.collections(kind)? {
                let mut any = false;
                target.each_within(&there, None, &mut |_, _| {
                    any = true;
                    false
                })?;
                if any {
                    bail!(
                        "{account} already has {} in the target's {}: not copied twice",
                        match kind {
                            Kind::Calendar => "events",
                            Kind::AddressBook => "contacts",
                        },
                        there.name
                    );
                }
                target.remove(&there)?;
            }
            for collection in wanted {
                let props: Vec<_> = collection.props.clone().into_iter().collect();
                let into = target.create(kind, &collection.name, &collection.components, &props)?;
                let mut failed = None;
                source.each_within(&collection, None, &mut |resource, body| {
                    let new = NewResource {
                        name: &resource.name,
                        uid: &resource.uid,
                        component: &resource.component,
                        content_type: &resource.content_type,
                        body: &body,
                        span: resource.span,
                        moved_from: None,
                    };
                    match target.put(&into, &new, &Precondition::Absent, None) {
                        Ok(_) => {
                            resources += 1;
                            true
                        }
                        Err(e) => {
                            failed = Some(anyhow::Error::new(e).context(format!(
                                "copying {account}'s {} {}",
                                collection.name, resource.name
                            )));
                            false
                        }
                    }
                })?;
                if let Some(e) = failed {
                    return Err(e);
                }
                collections += 1;
            }
        }
    }
    Ok((collections, resources))
}
