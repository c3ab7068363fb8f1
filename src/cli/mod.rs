//! The command line: argument parsing and one file per subcommand. This is the edge
//! where library errors get context (anyhow) and become exit codes.

mod apply;
mod backup;
mod certificates;
mod dns;
mod doctor;
mod import;
mod init;
mod man;
mod migrate;
mod passwd;
mod plan;
mod queue;
mod schema;
mod serve;
mod spam;
mod status;
mod validate;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::spec::{self, LoadedSpec, StoreKind};
#[cfg(feature = "mongodb")]
use crate::store::MongoStore;
use crate::store::{SqliteStore, Store};

#[derive(Parser)]
#[command(
    name = "ferrymail",
    version = crate::VERSION,
    long_version = crate::LONG_VERSION,
    about = "A declarative, self-hosted mail server: spec → plan → apply → serve"
)]
pub struct Cli {
    /// The spec: a TOML file or a directory of *.toml files.
    #[arg(
        long,
        global = true,
        env = "FERRYMAIL_SPEC",
        default_value = "ferrymail.toml"
    )]
    spec: PathBuf,
    /// Log lines on stderr: text, or one JSON object per line.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "FERRYMAIL_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Write a commented starter spec and a data directory with generated secrets.
    Init(init::Args),
    /// Check the spec and report every problem with its location.
    Validate,
    /// Show what apply would change.
    Plan(plan::Args),
    /// Make the live state match the spec (or a saved plan).
    Apply(apply::Args),
    /// Run the server: reconcile loop, listeners, delivery workers.
    Serve(serve::Args),
    /// Inspect and act on the delivery queue.
    #[command(subcommand)]
    Queue(queue::Command),
    /// Show the store's revision, contents and recent applies.
    Status(status::Args),
    /// ACME certificates: what was issued, and renewing one now.
    #[command(subcommand)]
    Certificates(certificates::Command),
    /// The DNS records the domains need.
    #[command(subcommand)]
    Dns(dns::Command),
    /// Check what a working mail server needs: DNS records live, outbound SMTP, TLS
    /// and key files; exits 1 when something is wrong.
    Doctor(doctor::Args),
    /// Backups: make one now, list them, restore one.
    #[command(subcommand)]
    Backup(backup::Command),
    /// Copy the store into an empty one of the other kind (sqlite ↔ mongodb).
    Migrate(migrate::Args),
    /// Spec tables from another system's forwarding: a Postfix virtual map, or a
    /// domain's Forward Email TXT records (printed for review, nothing applied).
    #[command(subcommand)]
    Import(import::Command),
    /// The spam filter: teach it spam and ham.
    #[command(subcommand)]
    Spam(spam::Command),
    /// Write the spec's JSON schema (for editors and CI).
    Schema(schema::Args),
    /// Write the manual pages (ferrymail.1, ferrymail-serve.1…) into a directory.
    Man(man::Args),
    /// Hash a password (read from stdin or a prompt) for a mailbox in the spec, or make
    /// a strong one (--generate).
    Passwd(passwd::Args),
}

/// Log directives that keep other crates' noise out of serve's log (see their use).
const QUIET: [&str; 2] = [
    "rustls::msgs::handshake=error",
    "rustls_platform_verifier=off",
];

/// Runs the CLI and maps the outcome to an exit code (1 for any error).
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // `ferrymail status | head` ends quietly when the reader goes, as Unix tools do:
    // Rust ignores SIGPIPE, so the next write to stdout failed and println! panicked.
    // serve keeps ignoring it (a write to a closed socket is that connection's error).
    if !matches!(cli.command, Command::Serve(_)) {
        // SAFETY: sets this process's SIGPIPE disposition back to the default; no
        // handler runs, and nothing else here relies on it being ignored.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    // serve says what it does by default (listeners, reconciles, each delivery, failed
    // logins); one-shot commands print their answer and keep their log to warnings.
    let default_level = match cli.command {
        Command::Serve(_) => "warn,ferrymail=info",
        _ => "warn",
    };
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| default_level.into());
    // rustls warns of every client that sends an IP address as its SNI name, which is
    // common and harmless (the name is ignored, the default certificate served); the
    // platform verifier logs every certificate it refuses, which the caller reports with
    // the host and the step (a webhook, an MTA-STS policy, ACME). Unless RUST_LOG names
    // rustls itself.
    if !std::env::var("RUST_LOG").is_ok_and(|v| v.contains("rustls")) {
        for directive in QUIET {
            if let Ok(quiet) = directive.parse() {
                filter = filter.add_directive(quiet);
            }
        }
    }
    // Colours only on a terminal: log files and the journal got escape codes.
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let logs = match cli.log_format {
        LogFormat::Text => logs.with_filter(filter).boxed(),
        // One JSON object per line: journald and log shippers keep the fields.
        LogFormat::Json => logs.json().flatten_event(true).with_filter(filter).boxed(),
    };
    // Warnings and errors are also kept for the web admin's error log (without the
    // lines QUIET leaves out).
    let recent = crate::recent_log::Layer.with_filter(
        tracing_subscriber::filter::Targets::new()
            .with_default(tracing::Level::WARN)
            .with_target("rustls::msgs::handshake", tracing::Level::ERROR)
            .with_target(
                "rustls_platform_verifier",
                tracing::level_filters::LevelFilter::OFF,
            ),
    );
    tracing_subscriber::registry()
        .with(logs)
        .with(recent)
        .init();
    let json = matches!(cli.log_format, LogFormat::Json);
    match run(cli) {
        Ok(code) => code,
        // With --log-format json the last words are JSON too: a log shipper reads them.
        Err(e) if json => {
            match e.downcast_ref::<spec::SpecErrors>() {
                Some(spec_errors) => {
                    for line in &spec_errors.0 {
                        tracing::error!("spec error: {line}");
                    }
                }
                None => tracing::error!("{e:#}"),
            }
            ExitCode::from(1)
        }
        Err(e) => {
            if let Some(spec_errors) = e.downcast_ref::<spec::SpecErrors>() {
                eprintln!("{spec_errors}");
            } else {
                eprintln!("error: {e:#}");
            }
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Init(args) => init::run(&cli.spec, args),
        Command::Validate => validate::run(&cli.spec),
        Command::Plan(args) => plan::run(&cli.spec, args),
        Command::Apply(args) => apply::run(&cli.spec, args),
        Command::Serve(args) => serve::run(&cli.spec, args),
        Command::Queue(command) => queue::run(&cli.spec, command),
        Command::Status(args) => status::run(&cli.spec, args),
        Command::Certificates(command) => certificates::run(&cli.spec, command),
        Command::Dns(command) => dns::run(&cli.spec, command),
        Command::Doctor(args) => doctor::run(&cli.spec, args),
        Command::Backup(command) => backup::run(&cli.spec, command),
        Command::Migrate(args) => migrate::run(&cli.spec, args),
        Command::Spam(command) => spam::run(&cli.spec, command),
        Command::Schema(args) => schema::run(args),
        Command::Man(args) => man::run(args),
        Command::Passwd(args) => passwd::run(args),
        Command::Import(command) => import::run(&cli.spec, command),
    }
}

/// Loads and validates the spec (from its git repository when it names one); spec
/// errors pass through unchanged for printing.
fn load_spec(path: &Path) -> anyhow::Result<LoadedSpec> {
    match crate::source::load(path) {
        Ok(loaded) => Ok(loaded),
        Err(crate::source::SourceError::Spec(mut errors)) => {
            let more = crate::reconcile::whole_spec_errors_despite(path, &errors);
            errors.0.extend(more);
            Err(errors.into())
        }
        Err(other) => Err(other.into()),
    }
}

/// Plans against the store (an absent store is an empty one: planning never creates
/// it) and the DNS providers; spec errors stay `SpecErrors` so they print as a list.
fn make_plan(
    loaded: &LoadedSpec,
    store: Option<&dyn Store>,
    spec: &Path,
    targets: crate::reconcile::Targets,
) -> anyhow::Result<crate::reconcile::Plan> {
    let source = loaded.origin.clone().unwrap_or_else(|| source_name(spec));
    crate::reconcile::plan_targets(loaded, store, &source, targets).map_err(|e| match e {
        crate::reconcile::PlanError::Spec(errors) => anyhow::Error::from(errors),
        other => anyhow::Error::from(other),
    })
}

/// `--target`: limit a plan or apply to one part of the live state.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Target {
    /// Domains, aliases, mailboxes, keys: the store.
    Store,
    /// Records at the DNS providers.
    Dns,
}

fn targets(chosen: &[Target]) -> crate::reconcile::Targets {
    if chosen.is_empty() {
        return crate::reconcile::Targets::ALL;
    }
    crate::reconcile::Targets {
        store: chosen.contains(&Target::Store),
        dns: chosen.contains(&Target::Dns),
    }
}

/// Opens the store the spec names, creating it when `create` (apply) is set; `None`
/// when it does not exist yet and must not be created (plan, status).
fn open_store(loaded: &LoadedSpec, create: bool) -> anyhow::Result<Option<Arc<dyn Store>>> {
    open_store_of(loaded, &loaded.spec.store, create)
}

/// Opens the queue beside the store: in the data dir with SQLite, in the same database
/// with MongoDB (so every node delivers what any node accepted). `node` names the leases.
fn open_queue(
    loaded: &LoadedSpec,
    store: Option<&dyn Store>,
    #[cfg_attr(not(feature = "mongodb"), allow(unused_variables))] node: &str,
) -> anyhow::Result<Arc<dyn crate::queue::Queue>> {
    match mongo_of(loaded, store)? {
        #[cfg(feature = "mongodb")]
        Some(mongo) => Ok(Arc::new(
            crate::queue::MongoQueue::open(mongo, node).context("opening the queue in MongoDB")?,
        )),
        _ => Ok(Arc::new(
            crate::queue::QueueDb::open(&loaded.data_dir()).context("opening the queue")?,
        )),
    }
}

/// Opens the mail log beside the store, like the queue (`open_queue`).
fn open_mail_log(
    loaded: &LoadedSpec,
    store: Option<&dyn Store>,
    #[cfg_attr(not(feature = "mongodb"), allow(unused_variables))] node: &str,
) -> anyhow::Result<crate::queue::log::MailLog> {
    let retention = loaded.spec.delivery.log_retention_secs();
    let log = match mongo_of(loaded, store)? {
        #[cfg(feature = "mongodb")]
        Some(mongo) => crate::queue::log::MailLog::open_mongo(mongo, node, retention),
        _ => crate::queue::log::MailLog::open(&loaded.data_dir(), retention),
    };
    log.context("opening the mail log")
}

/// A connection to the spec's MongoDB database that prepares nothing in it (a restore
/// must find an empty database empty).
#[cfg(feature = "mongodb")]
fn mongo_connection(loaded: &LoadedSpec) -> anyhow::Result<Arc<crate::mongo::Mongo>> {
    let url = loaded
        .spec
        .store
        .url
        .as_ref()
        .context("store.kind = \"mongodb\" needs store.url")?
        .resolve(&loaded.base_dir)
        .context("store.url")?;
    let database = loaded.spec.store.database.as_deref().unwrap_or("ferrymail");
    crate::mongo::Mongo::connect(url.expose().trim(), database)
        .with_context(|| format!("connecting to the MongoDB database {database:?}"))
}

/// The MongoDB connection of the store (`store`, or the spec's when not given); None
/// with SQLite.
fn mongo_of(
    loaded: &LoadedSpec,
    store: Option<&dyn Store>,
) -> anyhow::Result<Option<Arc<crate::mongo::Mongo>>> {
    Ok(match (store, loaded.spec.store.kind) {
        (Some(s), _) => s.connection(),
        (None, StoreKind::Mongodb) => open_store(loaded, false)?.and_then(|s| s.connection()),
        (None, StoreKind::Sqlite) => None,
    })
}

/// Opens the cache the spec names (the in-process one, or Redis shared by the nodes).
fn open_cache(loaded: &LoadedSpec) -> anyhow::Result<Arc<dyn crate::cache::Cache>> {
    Ok(match loaded.spec.cache.kind {
        crate::spec::CacheKind::Memory => Arc::new(crate::cache::MemoryCache::default()),
        #[cfg(not(feature = "redis"))]
        crate::spec::CacheKind::Redis => {
            anyhow::bail!(crate::features::missing("cache.kind = \"redis\"", "redis"))
        }
        #[cfg(feature = "redis")]
        crate::spec::CacheKind::Redis => {
            let url = loaded
                .spec
                .cache
                .url
                .as_ref()
                .context("cache.kind = \"redis\" needs cache.url")?
                .resolve(&loaded.base_dir)
                .context("cache.url")?;
            Arc::new(crate::cache::RedisCache::connect(url.expose().trim()).context("cache")?)
        }
    })
}

/// Opens the store `config` describes (the spec's own, or `migrate`'s other side).
fn open_store_of(
    loaded: &LoadedSpec,
    config: &crate::spec::model::Store,
    create: bool,
) -> anyhow::Result<Option<Arc<dyn Store>>> {
    match config.kind {
        StoreKind::Sqlite => {
            let dir = loaded.data_dir();
            let store = if create {
                SqliteStore::open(&dir).map(Some)
            } else {
                SqliteStore::open_existing(&dir)
            };
            let store = store.with_context(|| format!("opening the store in {}", dir.display()))?;
            Ok(store.map(|s| Arc::new(s) as Arc<dyn Store>))
        }
        #[cfg(not(feature = "mongodb"))]
        StoreKind::Mongodb => {
            anyhow::bail!(crate::features::missing(
                "store.kind = \"mongodb\"",
                "mongodb"
            ))
        }
        #[cfg(feature = "mongodb")]
        StoreKind::Mongodb => {
            let url = config
                .url
                .as_ref()
                .context("store.kind = \"mongodb\" needs store.url")?
                .resolve(&loaded.base_dir)
                .context("store.url")?;
            let database = config.database.as_deref().unwrap_or("ferrymail");
            // The URL may hold a password: name only the database in errors.
            let store = MongoStore::connect(url.expose().trim(), database)
                .with_context(|| format!("opening the MongoDB store (database {database:?})"))?;
            Ok(Some(Arc::new(store)))
        }
    }
}

/// How the spec is named in plans and apply records.
fn source_name(path: &Path) -> String {
    std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

fn color_stdout() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// Writes a file only the owner can read (plans hold password hashes; keys are keys).
fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    crate::private_file::write(path, contents)
        .with_context(|| format!("writing {}", path.display()))
}
