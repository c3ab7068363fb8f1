//! The desired-state model users write in TOML: every key of `ferrymail.toml`.
//! Doc comments here become the JSON schema and the starter spec's comments.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::secret::SecretRef;

/// A ferrymail spec: what must exist. The reconciler makes the live state match it.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// The server's identity and where it keeps its data.
    #[serde(default)]
    pub server: Server,
    /// Addresses the protocol servers listen on; omit one to disable it.
    #[serde(default)]
    pub listeners: Listeners,
    /// Where TLS certificates come from.
    #[serde(default)]
    pub tls: Tls,
    /// The live-state store: embedded SQLite by default.
    #[serde(default)]
    pub store: Store,
    /// Rate limits, greylisting and cross-node notifications.
    #[serde(default)]
    pub cache: Cache,
    /// Limits that protect the server from one noisy or hostile client.
    #[serde(default)]
    pub limits: Limits,
    /// Outbound delivery.
    #[serde(default)]
    pub delivery: Delivery,
    /// Reports this server sends to the domains it delivers to.
    #[serde(default)]
    pub reports: Reports,
    /// The spam filter every arriving message passes before its 250.
    #[serde(default)]
    pub spam: Spam,
    /// DNS resolution and the providers that publish each domain's records.
    #[serde(default)]
    pub dns: Dns,
    /// The mail domains this server receives for, keyed by domain name.
    #[serde(default)]
    pub domains: BTreeMap<String, Domain>,
    /// Aliases keyed by full address ("hello@example.com"), for specs that list addresses
    /// across domains in one place. The domain must be declared under `domains`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub aliases: BTreeMap<String, Alias>,
    /// Scheduled, encrypted backups of everything needed to rebuild the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backups: Option<Backups>,
    /// MTA-STS (RFC 8461): senders that support it deliver to this server over verified
    /// TLS only. Published when `listeners.https` serves the policy.
    #[serde(default)]
    pub mta_sts: MtaSts,
    /// The web admin (https, and http from loopback): who may log in.
    #[serde(default)]
    pub admin: Admin,
    /// Take the spec from a git repository instead (GitOps): this file then only says
    /// where (and `[server]`: where the data lives); each new commit is applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<GitSource>,
}

/// A git repository the spec is pulled from.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GitSource {
    /// Repository: https://…, ssh://… or git@host:path, or a local path.
    pub git: String,
    /// Branch to follow. Default "main".
    #[serde(default = "default_branch")]
    pub branch: String,
    /// The spec inside the repository: a file or a directory of *.toml. Default
    /// "ferrymail.toml".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// How often the branch is fetched, e.g. "60s" (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Deploy key (private, OpenSSH format) for ssh URLs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_key: Option<SecretRef>,
    /// The git server's host keys, as known_hosts lines ("git.example.com ssh-ed25519
    /// AAAA…"), for ssh URLs. Unset: the key seen at the first connection is kept in
    /// data_dir/source.known_hosts and required from then on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_hosts: Option<String>,
}

fn default_branch() -> String {
    "main".to_string()
}

impl GitSource {
    /// `interval` in seconds.
    pub fn interval_secs(&self) -> u64 {
        duration_secs(self.interval.as_deref()).unwrap_or(60).max(1)
    }
}

/// The server's identity.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// The host name this server answers as (EHLO, banner, MX target), e.g. "mx.example.com".
    #[serde(default)]
    pub hostname: String,
    /// Directory for the embedded store, spool, mailboxes and keys. Relative paths are
    /// taken from the directory that holds the spec. Default "./data".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// The key mailboxes are encrypted with (at least 32 characters). Unset: a random one
    /// is made once and kept in data_dir/master.key (0600). Keep it apart from the data
    /// (e.g. `{ file = "/run/secrets/ferrymail-master" }`) for the encryption to protect
    /// copies of the data directory; losing it loses every mailbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_key: Option<SecretRef>,
    /// The server's public addresses. When the hostname lies in a mail domain whose
    /// records a DNS provider publishes, they become its A/AAAA records.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<std::net::IpAddr>,
    /// When `serve` applies the spec: "manual" (default for a local spec) applies it at
    /// start and when told — `ferrymail apply`, SIGHUP or `systemctl reload`, the web
    /// admin — so a saved edit waits for its plan to be read; "auto" (default for a
    /// `[source]` in git) applies every save of the file, or every new commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apply: Option<ApplyMode>,
}

/// When a running server applies the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ApplyMode {
    /// Every save of the spec (or every new commit of a git source) is applied.
    Auto,
    /// Only what `ferrymail apply`, a reload or the web admin applies.
    Manual,
}

impl ApplyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ApplyMode::Auto => "auto",
            ApplyMode::Manual => "manual",
        }
    }
}

/// Listen addresses ("IP:port"). A listener that is not declared is not started.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Listeners {
    /// Inbound SMTP (MX), usually port 25.
    pub mx: Option<SocketAddr>,
    /// Message submission with STARTTLS and AUTH, usually port 587.
    pub submission: Option<SocketAddr>,
    /// Message submission over implicit TLS, usually port 465.
    pub submissions: Option<SocketAddr>,
    /// IMAP with STARTTLS, usually port 143.
    pub imap: Option<SocketAddr>,
    /// IMAP over implicit TLS, usually port 993.
    pub imaps: Option<SocketAddr>,
    /// POP3 with STLS, usually port 110.
    pub pop3: Option<SocketAddr>,
    /// POP3 over implicit TLS, usually port 995.
    pub pop3s: Option<SocketAddr>,
    /// Plain HTTP: ACME http-01, redirects, autoconfig, usually port 80.
    pub http: Option<SocketAddr>,
    /// HTTPS: admin UI, API, CalDAV, CardDAV (under /dav/), usually port 443.
    pub https: Option<SocketAddr>,
    /// CalDAV over HTTPS on a port of its own (Forward Email's is 5000).
    pub caldav: Option<SocketAddr>,
    /// CardDAV over HTTPS on a port of its own (Forward Email's is 6000).
    pub carddav: Option<SocketAddr>,
    /// ManageSieve (RFC 5804) with STARTTLS, usually port 4190: users manage their own
    /// Sieve filters from their mail client.
    pub managesieve: Option<SocketAddr>,
}

impl Listeners {
    /// Every declared listen address.
    pub fn all(&self) -> Vec<SocketAddr> {
        [
            self.mx,
            self.submission,
            self.submissions,
            self.imap,
            self.imaps,
            self.pop3,
            self.pop3s,
            self.http,
            self.https,
            self.caldav,
            self.carddav,
            self.managesieve,
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// How certificates are obtained.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// Issued and renewed through ACME (Let's Encrypt or any RFC 8555 CA).
    Acme,
    /// PEM files on disk (e.g. from certbot), reloaded when they change.
    Files,
    /// Generated at start; for tests and first boot only.
    #[default]
    SelfSigned,
}

/// TLS certificates for every listener.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// acme | files | self-signed (default).
    #[serde(default)]
    pub mode: TlsMode,
    /// ACME settings, used when mode = "acme".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acme: Option<Acme>,
    /// Certificate and key files, used when mode = "files".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<TlsFiles>,
}

/// ACME challenge types.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AcmeChallenge {
    /// Answered by the `http` listener on port 80.
    #[default]
    #[serde(rename = "http-01")]
    Http01,
    /// Answered inside the TLS handshake on port 443.
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
    /// A TXT record published through the domain's DNS provider.
    #[serde(rename = "dns-01")]
    Dns01,
}

/// ACME account and directory.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Acme {
    /// Contact address for the ACME account (expiry warnings).
    pub contact: String,
    /// ACME directory URL. Default: Let's Encrypt production.
    #[serde(default = "default_acme_directory")]
    pub directory: String,
    /// http-01 (default) | tls-alpn-01 | dns-01.
    #[serde(default)]
    pub challenge: AcmeChallenge,
    /// An extra CA certificate (PEM) to trust for the ACME directory: private CAs, tests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// External Account Binding key id, for CAs that require one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eab_kid: Option<String>,
    /// External Account Binding HMAC key (base64url).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eab_hmac_key: Option<SecretRef>,
}

fn default_acme_directory() -> String {
    "https://acme-v02.api.letsencrypt.org/directory".to_string()
}

/// PEM certificate chain and private key.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// Certificate chain, PEM.
    pub cert: PathBuf,
    /// Private key, PEM.
    pub key: PathBuf,
}

/// Store backends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// Embedded SQLite in `server.data_dir` (default).
    #[default]
    Sqlite,
    /// A shared MongoDB replica set, for several nodes.
    Mongodb,
}

/// The live-state store.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Store {
    /// sqlite (default) | mongodb.
    #[serde(default)]
    pub kind: StoreKind,
    /// Connection URL, for mongodb: in quotes when it holds no password
    /// ("mongodb://db1,db2/?replicaSet=rs0"), else `{ env = "…" }` or `{ file = "…" }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<super::secret::UrlRef>,
    /// Database name, for mongodb. Default "ferrymail".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
}

/// Cache backends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CacheKind {
    /// In-process (default): one node.
    #[default]
    Memory,
    /// Redis: shared by several nodes.
    Redis,
}

/// Rate limits, greylisting, locks and notifications.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cache {
    /// memory (default) | redis.
    #[serde(default)]
    pub kind: CacheKind,
    /// Connection URL, for redis: in quotes when it holds no password
    /// ("redis://127.0.0.1:6379"), else `{ env = "…" }` or `{ file = "…" }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<super::secret::UrlRef>,
}

/// Limits that protect the server from one noisy or hostile client. Connection limits
/// apply on every listener (MX, submission, IMAP, POP3) separately; SECURITY.md lists
/// the fixed ones beside these.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// New connections one IP address may open per minute, on all listeners together;
    /// an address that logged in lately is spared. 0 turns the limit off. Default 600.
    #[serde(default = "default_connections_per_minute")]
    pub connections_per_minute: u32,
    /// Connections one IP address may hold open at once. Default 50, as Postfix's
    /// smtpd_client_connection_count_limit.
    #[serde(default = "default_connections_per_ip")]
    pub connections_per_ip: u32,
    /// Connections one IP address may hold open without having logged in, on each
    /// listener where clients log in (IMAP, POP3, submission). Default 10; 0 = no limit.
    #[serde(default = "default_unauthenticated_per_ip")]
    pub unauthenticated_per_ip: u32,
    /// Connections open at once on all listeners together. Unset: a quarter of the file
    /// descriptors the process may open (raised to its hard limit at start), at most
    /// 10,000, keeping the rest for deliveries, mailboxes and the store. One listener
    /// alone may take three quarters of it, so a flood on the MX leaves IMAP room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Memory all SMTP sessions together may hold for messages being received, e.g.
    /// "1GiB" (default). Past it, a message is answered 451 4.3.1 (try again later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_memory: Option<String>,
    /// How long an SMTP client may take over one command line, silence and trickle
    /// included, e.g. "5m" (default; RFC 5321 §4.5.3.2 asks for at least 5 minutes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp_timeout: Option<String>,
    /// How long one message's DATA, or one BDAT chunk, may take in all, e.g. "30m"
    /// (default): one byte every few seconds cannot hold a connection for ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp_data_timeout: Option<String>,
    /// Recipients an SMTP session may have refused before it is closed with 421.
    /// Default 10 (Postfix closes after 20 errors of any kind); from the third on, each
    /// refusal is answered a second later, as Postfix's smtpd_error_sleep_time does.
    #[serde(default = "default_refused_recipients")]
    pub refused_recipients: u32,
    /// Refused recipients one IP address may cause per hour, across its connections (and
    /// nodes, through Redis); past it every RCPT gets 421. Default 100; 0 = no limit.
    #[serde(default = "default_refused_recipients_per_hour")]
    pub refused_recipients_per_hour: u32,
    /// What each mailbox may send through submission (a mailbox may declare its own).
    #[serde(default)]
    pub sending: SendingLimits,
}

/// What one mailbox may send through submission: a stolen password must not make the
/// server a spam cannon. Every recipient counts as one message; 0 turns a limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SendingLimits {
    /// Messages per hour (rolling). Default 200.
    #[serde(default = "default_sending_per_hour")]
    pub per_hour: u32,
    /// Messages per day (rolling 24 hours). Default 1000.
    #[serde(default = "default_sending_per_day")]
    pub per_day: u32,
    /// Recipients of one message. Default 100.
    #[serde(default = "default_recipients_per_message")]
    pub recipients_per_message: u32,
}

impl Default for SendingLimits {
    fn default() -> Self {
        SendingLimits {
            per_hour: default_sending_per_hour(),
            per_day: default_sending_per_day(),
            recipients_per_message: default_recipients_per_message(),
        }
    }
}

fn default_sending_per_hour() -> u32 {
    200
}

fn default_sending_per_day() -> u32 {
    1000
}

fn default_recipients_per_message() -> u32 {
    100
}

/// A mailbox's own sending limits; what it leaves unset comes from `[limits.sending]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MailboxSending {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_hour: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_day: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipients_per_message: Option<u32>,
}

impl MailboxSending {
    pub fn is_empty(&self) -> bool {
        *self == MailboxSending::default()
    }

    /// These over `defaults`.
    pub fn over(&self, defaults: SendingLimits) -> SendingLimits {
        SendingLimits {
            per_hour: self.per_hour.unwrap_or(defaults.per_hour),
            per_day: self.per_day.unwrap_or(defaults.per_day),
            recipients_per_message: self
                .recipients_per_message
                .unwrap_or(defaults.recipients_per_message),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connections_per_minute: default_connections_per_minute(),
            connections_per_ip: default_connections_per_ip(),
            unauthenticated_per_ip: default_unauthenticated_per_ip(),
            max_connections: None,
            message_memory: None,
            smtp_timeout: None,
            smtp_data_timeout: None,
            refused_recipients: default_refused_recipients(),
            refused_recipients_per_hour: default_refused_recipients_per_hour(),
            sending: SendingLimits::default(),
        }
    }
}

impl Limits {
    /// What SMTP sessions read of these (validated: a bad value never reaches here).
    /// The defaults are `limits::Smtp`'s own.
    pub fn smtp(&self) -> crate::limits::Smtp {
        let defaults = crate::limits::Smtp::default();
        let duration = |text: &Option<String>, default: std::time::Duration| {
            duration_secs(text.as_deref()).map_or(default, std::time::Duration::from_secs)
        };
        crate::limits::Smtp {
            command_timeout: duration(&self.smtp_timeout, defaults.command_timeout),
            data_timeout: duration(&self.smtp_data_timeout, defaults.data_timeout),
            refused_recipients: self.refused_recipients,
            refused_recipients_per_hour: self.refused_recipients_per_hour,
            sending: self.sending,
            ..defaults
        }
    }

    /// `message_memory` in bytes (validated).
    pub fn message_memory(&self) -> u64 {
        self.message_memory
            .as_deref()
            .and_then(crate::spec::parse_size)
            .unwrap_or(1 << 30)
    }
}

fn default_connections_per_minute() -> u32 {
    600
}

fn default_connections_per_ip() -> u32 {
    50
}

fn default_unauthenticated_per_ip() -> u32 {
    10
}

fn default_refused_recipients() -> u32 {
    crate::limits::Smtp::default().refused_recipients
}

fn default_refused_recipients_per_hour() -> u32 {
    crate::limits::Smtp::default().refused_recipients_per_hour
}

/// The spam filter: rspamd, asked over its HTTP API at the end of DATA.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spam {
    /// "rspamd" judges every arriving message; "none" (default) keeps only the SPF/DMARC,
    /// greylisting and allow/deny checks.
    #[serde(default)]
    pub kind: SpamKind,
    /// rspamd's scanning worker. Default "http://127.0.0.1:11333".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// rspamd's controller, which learns spam and ham. Default "http://127.0.0.1:11334".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller_url: Option<String>,
    /// The controller's password, when it asks for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretRef>,
    /// How long one scan may take, e.g. "20s" (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// What arriving mail gets while rspamd cannot answer: "tempfail" (default: 451, the
    /// sender retries and nothing is lost) or "accept" (taken unscanned).
    #[serde(default)]
    pub on_error: SpamOnError,
    /// Scan what mailbox users submit too, and refuse what rspamd would reject: a stolen
    /// password must not make the server a spam cannon. Default false.
    #[serde(default)]
    pub scan_outbound: bool,
    /// A virus scanner every message passes too (with or without rspamd).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub antivirus: Option<Antivirus>,
    /// Checks of ferrymail's own beside rspamd. They run whenever a filter is declared
    /// (rspamd or antivirus), with the defaults below, or alone when this is declared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<SpamChecks>,
}

/// What each check of ferrymail's own does with what it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SpamChecks {
    /// Attachments that run code: by name (.exe, .scr, .js… as Gmail blocks them), by
    /// content (Windows, Linux and macOS programs), and inside zip archives.
    /// Default "refuse" (554).
    #[serde(default = "refuse")]
    pub executables: CheckAction,
    /// Password-protected zip archives (scanners cannot look inside). Default "junk".
    #[serde(default = "junk")]
    pub encrypted_archives: CheckAction,
    /// Links and senders whose domain imitates another with letters from another
    /// alphabet ("раypal.com" with a Cyrillic "р"). Default "junk".
    #[serde(default = "junk")]
    pub lookalikes: CheckAction,
}

impl Default for SpamChecks {
    fn default() -> Self {
        SpamChecks {
            executables: CheckAction::Refuse,
            encrypted_archives: CheckAction::Junk,
            lookalikes: CheckAction::Junk,
        }
    }
}

fn refuse() -> CheckAction {
    CheckAction::Refuse
}

fn junk() -> CheckAction {
    CheckAction::Junk
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CheckAction {
    /// Not checked.
    Off,
    /// The message is junk for every recipient.
    Junk,
    /// The message is refused (554 5.7.1).
    Refuse,
}

/// ClamAV's clamd, asked over INSTREAM at the same point as rspamd: a message with a
/// virus is refused (554 5.7.1) with the signature's name.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Antivirus {
    /// "clamav".
    pub kind: AntivirusKind,
    /// clamd's TCPSocket, e.g. "127.0.0.1:3310"; or give `socket`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// clamd's LocalSocket, e.g. "/run/clamav/clamd.ctl".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<String>,
    /// How long one scan may take, e.g. "60s" (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Larger messages are not sent to clamd (the mail log says so; the other checks
    /// still run). Default "25MB", clamd's own StreamMaxLength: keep it at most that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AntivirusKind {
    Clamav,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SpamKind {
    #[default]
    None,
    Rspamd,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SpamOnError {
    #[default]
    Tempfail,
    Accept,
}

/// How one domain treats the spam filter's verdicts. Unset scores use rspamd's own action.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DomainSpam {
    /// Refuse (554) at or above this score, instead of when rspamd says "reject".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reject_score: Option<f64>,
    /// Junk at or above this score, instead of when rspamd says "add header" or "rewrite
    /// subject": a mailbox files it in Junk, a forward does not send it on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub junk_score: Option<f64>,
    /// Where junk an alias would have forwarded goes instead (an address). Unset: it is
    /// not forwarded, and the mail log says so. Spam is never bounced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub junk_forward: Option<String>,
}

/// Reports this server sends to the domains it delivers to.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Reports {
    /// The address reports are sent from, at a domain of this spec (whose DKIM key signs
    /// them). Unset: no reports are sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Whether each receiving domain that asks for SMTP TLS reports (RFC 8460, its
    /// `_smtp._tls` record) gets one a day about the mail sent to it. Default true once
    /// `from` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_tls_rpt: Option<bool>,
    /// Whether each domain whose DMARC record asks for aggregate reports (`rua`) gets one
    /// a day about the mail received from it (RFC 7489 §7.2): sources, SPF, DKIM and
    /// DMARC results, counted. Default true once `from` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_dmarc: Option<bool>,
}

impl Reports {
    /// The From address of TLS reports, when they are to be sent.
    pub fn tls_rpt_from(&self) -> Option<&str> {
        self.from
            .as_deref()
            .filter(|_| self.send_tls_rpt != Some(false))
    }

    /// The From address of DMARC aggregate reports, when they are to be sent.
    pub fn dmarc_from(&self) -> Option<&str> {
        self.from
            .as_deref()
            .filter(|_| self.send_dmarc != Some(false))
    }
}

/// Outbound delivery.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Delivery {
    /// Smarthost "host:port" for when port 25 outbound is blocked; unset = MX lookup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<String>,
    /// User name for the smarthost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_username: Option<String>,
    /// Password for the smarthost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_password: Option<SecretRef>,
    /// Key for the `X-Webhook-Signature` HMAC-SHA256 on every webhook post.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<SecretRef>,
    /// How long a message is retried before it is bounced, e.g. "5d" (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire_after: Option<String>,
    /// After how long without delivery the sender gets one "delayed" notice, e.g. "4h"
    /// (default); "0s" sends none. Only for senders who did not say NOTIFY without DELAY.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_warning: Option<String>,
    /// How long the mail log keeps a record (accepted, delivered, bounced…), e.g. "30d"
    /// (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_retention: Option<String>,
    /// Whether mail to a domain with an MTA-STS policy (RFC 8461) in enforce mode goes
    /// only to the MX hosts it lists, over TLS with a certificate valid for the MX name,
    /// and otherwise waits in the queue. Default true. With a `relay` given by name, the
    /// relay's own policy is the one applied (RFC 8461 §3.4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mta_sts: Option<bool>,
    /// Whether an MX host whose DNSSEC-signed TLSA records (DANE, RFC 7672) name its
    /// certificate gets mail only over TLS with that certificate, and otherwise waits in
    /// the queue. Default true; DNSSEC is checked by ferrymail itself, from the root's keys
    /// (or `[dns] trust_anchors`), and DANE is set aside with a warning while the
    /// resolver's answers cannot be validated. Takes precedence over MTA-STS for a host.
    /// Mail through a `relay` is not held to DANE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dane: Option<bool>,
}

impl Delivery {
    /// `expire_after` in seconds (validated: a bad value never reaches here).
    pub fn expire_after_secs(&self) -> u64 {
        duration_secs(self.expire_after.as_deref()).unwrap_or(5 * 86_400)
    }

    /// `log_retention` in seconds (at least an hour).
    pub fn log_retention_secs(&self) -> u64 {
        duration_secs(self.log_retention.as_deref())
            .unwrap_or(30 * 86_400)
            .max(3600)
    }

    /// `delay_warning` in seconds; 0 = no delay notices.
    pub fn delay_warning_secs(&self) -> u64 {
        duration_secs(self.delay_warning.as_deref()).unwrap_or(4 * 3600)
    }
}

fn duration_secs(text: Option<&str>) -> Option<u64> {
    humantime::parse_duration(text?).ok().map(|d| d.as_secs())
}

/// DNS resolution and providers.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Dns {
    /// Resolver "IP:port" for MX lookups and `dns check`; unset = the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolver: Option<SocketAddr>,
    /// A file of DNSKEY records (zone-file form, "example. IN DNSKEY 257 3 13 …") whose
    /// keys DNSSEC validation (for DANE) trusts in place of the root's: for a private DNS
    /// tree. Unset = the root zone's published keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_anchors: Option<PathBuf>,
    /// Named DNS providers; a domain picks one with `dns_provider`.
    #[serde(default)]
    pub providers: BTreeMap<String, DnsProvider>,
    /// An apply that would delete more than this share (in %) of a zone's records is
    /// refused unless run with `--allow-dns-deletes`. Default 33.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delete_percent: Option<u32>,
    /// How long the record of a DKIM key taken out of the spec stays published, so mail
    /// it signed just before still verifies, e.g. "7d" (default); "0s" = remove at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_retired_dkim: Option<String>,
    /// How often `serve` re-reads the zones it publishes to and repairs drift, e.g. "1h"
    /// (default); "0s" = only when the spec changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resync_interval: Option<String>,
}

impl Dns {
    /// `keep_retired_dkim` in seconds.
    pub fn keep_retired_dkim_secs(&self) -> u64 {
        duration_secs(self.keep_retired_dkim.as_deref()).unwrap_or(7 * 86_400)
    }

    /// `resync_interval` in seconds; None when off or when no domain has a provider.
    pub fn resync_secs(&self) -> Option<u64> {
        if self.providers.is_empty() {
            return None;
        }
        match duration_secs(self.resync_interval.as_deref()).unwrap_or(3600) {
            0 => None,
            secs => Some(secs),
        }
    }
}

/// DNS provider kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DnsProviderKind {
    /// Cloudflare API v4.
    Cloudflare,
    /// RFC 2136 dynamic updates with TSIG.
    Rfc2136,
    /// Nothing is written: plan prints the records and `dns check` verifies them.
    Manual,
}

/// A place where a domain's DNS records are published.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DnsProvider {
    /// cloudflare | rfc2136 | manual.
    pub kind: DnsProviderKind,
    /// API token, for cloudflare.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_token: Option<SecretRef>,
    /// API base URL, for cloudflare. Default "https://api.cloudflare.com/client/v4".
    /// Another host only with `api_stand_in = true`: the token goes wherever this says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    /// `api_url` is a stand-in for Cloudflare's API (a test double, a proxy of your
    /// own), not api.cloudflare.com: send it the token anyway. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub api_stand_in: bool,
    /// Authoritative server "IP:port", for rfc2136.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<SocketAddr>,
    /// TSIG key name, for rfc2136.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tsig_name: Option<String>,
    /// TSIG algorithm, for rfc2136: hmac-sha256 (default) | hmac-sha384 | hmac-sha512.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tsig_algorithm: Option<String>,
    /// TSIG secret (base64), for rfc2136.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tsig_secret: Option<SecretRef>,
}

/// Web admin users. With none declared, `serve` makes a one-time password for "admin"
/// in data_dir/admin.password (0600) and logs where it is; declare a user to retire it.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// Administrators by login name, each with an argon2id password hash (as mailboxes:
    /// `password = { hash = "..." }`, made with `ferrymail passwd`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub users: BTreeMap<String, AdminUser>,
    /// Tokens for the JSON API (`Authorization: Bearer TOKEN`), by name: each a secret
    /// reference to a random string of at least 32 characters (`openssl rand -hex 32`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub api_tokens: BTreeMap<String, SecretRef>,
    /// What an edit made in the web admin or through the API does: "apply" writes the
    /// spec file (comments and order kept) and applies it; "commit" (spec in git)
    /// commits it as the admin user and pushes to the branch, and the GitOps loop applies
    /// it; "propose" (spec in git) pushes a branch `ferrymail/CHANGE` for review; "none"
    /// keeps the admin read-only. Default: "apply" for a local spec, "none" for git.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<AdminChanges>,
    /// For a spec that is a directory: the file (relative to it) new entries made in the
    /// admin go to, e.g. "admin.toml" (the default). Edits of an entry go to the file
    /// that declares it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes_file: Option<String>,
}

/// Where an edit made in the web admin or the API goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AdminChanges {
    /// Read-only: the admin shows, the spec is edited elsewhere.
    None,
    /// Write the spec file, then apply it.
    Apply,
    /// Commit to the git source's branch and push; the GitOps loop applies it.
    Commit,
    /// Push a branch for review; nothing is applied until it is merged.
    Propose,
}

impl AdminChanges {
    pub fn as_str(self) -> &'static str {
        match self {
            AdminChanges::None => "none",
            AdminChanges::Apply => "apply",
            AdminChanges::Commit => "commit",
            AdminChanges::Propose => "propose",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminUser {
    pub password: PasswordRef,
}

/// The MTA-STS policy every domain publishes (served at
/// https://mta-sts.DOMAIN/.well-known/mta-sts.txt, announced by `_mta-sts.DOMAIN` TXT).
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MtaSts {
    /// testing (default: senders report failures but deliver anyway) | enforce (senders
    /// refuse to deliver without verified TLS) | none (withdraw a policy).
    #[serde(default)]
    pub mode: MtaStsMode,
    /// How long senders keep the policy, e.g. "7d" (default; RFC 8461 suggests weeks
    /// once it is enforced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
}

impl MtaSts {
    /// Seconds senders cache the policy (the default when unset or unreadable:
    /// validation reports the latter).
    pub fn max_age_secs(&self) -> u64 {
        self.max_age
            .as_deref()
            .and_then(|t| humantime::parse_duration(t).ok())
            .map_or(7 * 86_400, |d| d.as_secs())
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MtaStsMode {
    #[default]
    Testing,
    Enforce,
    None,
}

impl MtaStsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            MtaStsMode::Testing => "testing",
            MtaStsMode::Enforce => "enforce",
            MtaStsMode::None => "none",
        }
    }
}

/// What receivers should do with mail that fails DMARC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DmarcPolicy {
    /// Only report.
    None,
    /// Treat as suspicious (spam folder).
    Quarantine,
    /// Refuse.
    Reject,
}

impl DmarcPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            DmarcPolicy::None => "none",
            DmarcPolicy::Quarantine => "quarantine",
            DmarcPolicy::Reject => "reject",
        }
    }
}

/// One DNS record declared in the spec.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DnsRecord {
    /// Relative to the domain ("_dmarc", "www"), "@" for the domain itself.
    pub name: String,
    /// A, AAAA, CAA, CNAME, MX, SRV or TXT.
    #[serde(rename = "type")]
    pub kind: String,
    /// As in a zone file, TXT without quotes: "v=spf1 mx include:_spf.example.net -all",
    /// MX "10 mx.example.net", SRV "0 1 993 imap.example.net", CAA "0 issue letsencrypt.org".
    pub value: String,
    /// Seconds. Default 3600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u32>,
}

/// A mail domain and everything that receives mail in it.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Domain {
    /// Which `[dns.providers.NAME]` publishes this domain's records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_provider: Option<String>,
    /// The DMARC policy published for the domain: none | quarantine (default) | reject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dmarc_policy: Option<DmarcPolicy>,
    /// Where receivers send DMARC aggregate reports (an address; `rua=mailto:` in the
    /// record). An address in another domain must be authorised there (RFC 7489 §7.1).
    /// At one of this spec's domains, the DMARC and TLS reports arriving there are read
    /// and shown on the admin's Reports page (besides what the address itself does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dmarc_reports: Option<String>,
    /// Where senders send SMTP TLS reports (RFC 8460): an address, published at
    /// `_smtp._tls`. Unset: no TLS-RPT record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_reports: Option<String>,
    /// Records to publish besides the computed ones. A declared name and type replaces
    /// what ferrymail would compute for it (e.g. an SPF with more senders, a DMARC
    /// policy with a report address).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_records: Vec<DnsRecord>,
    /// Where mail for an address that matches no alias and no pattern goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_all: Option<Rule>,
    /// Addresses of this domain, keyed by local part ("hello" is hello@domain).
    #[serde(default)]
    pub aliases: BTreeMap<String, Alias>,
    /// Regex rules on the local part, tried in order after exact aliases.
    #[serde(default)]
    pub patterns: Vec<Pattern>,
    /// Largest message accepted for this domain, e.g. "25MB". Default "50MB".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_message_size: Option<String>,
    /// Most forward targets one alias may have. Default 10, at most 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_forwards: Option<u32>,
    /// Senders always accepted: IP, CIDR, domain or address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowlist: Vec<String>,
    /// Senders always refused: IP, CIDR, domain or address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub denylist: Vec<String>,
    /// Temporarily refuse first contact from unknown senders (450). Default false.
    #[serde(default)]
    pub greylisting: bool,
    /// How long a new sender must wait before its retry is accepted, e.g. "5m" (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub greylist_delay: Option<String>,
    /// Refuse inbound mail that did not arrive over TLS. Default false.
    #[serde(default)]
    pub require_tls: bool,
    /// What the spam filter's verdicts do to this domain's mail (with `[spam]` set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spam: Option<DomainSpam>,
    /// Refuse mail whose sender domain's SPF record hard-fails the sending IP. Default true.
    #[serde(default = "yes")]
    pub reject_spf_fail: bool,
    /// Refuse mail that fails DMARC when the sender domain publishes `p=reject`. Default true.
    #[serde(default = "yes")]
    pub reject_dmarc_fail: bool,
    /// `user+tag@domain` is delivered as `user@domain`, the tag kept on forwards to this
    /// server's own addresses. Default true.
    #[serde(default = "yes")]
    pub subaddressing: bool,
    /// Pass the +tag on to forward targets on other servers too
    /// (`b+news@elsewhere.net`). Default false: many receivers refuse a subaddress they
    /// do not know.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub external_forward_tags: bool,
    /// DKIM signing keys. Default: one rsa-2048 key with selector "ferrymail".
    /// An empty list disables DKIM signing for the domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dkim: Option<Vec<DkimKey>>,
}

pub(crate) fn yes() -> bool {
    true
}

/// One address of a domain: forwards, a mailbox, or a rejection.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Alias {
    /// Where mail is forwarded: an address ("user@host"), a domain or IP (the local part is
    /// kept), or an https:// webhook URL. Several targets, mixed kinds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forward: Vec<String>,
    /// A mailbox that keeps the mail (IMAP/POP3); may be combined with `forward`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mailbox: Option<Mailbox>,
    /// Refuse mail for this address: quiet (accept and drop), soft (421), hard (550).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reject: Option<RejectMode>,
    /// The text sent with a rejection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// false turns the alias off (the address is then unknown). Default true.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Where spam this alias would forward goes instead (an address), over the domain's
    /// `spam.junk_forward`. Unset: as the domain says (by default, not forwarded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub junk_forward: Option<String>,
}

/// A catch-all rule: forwards or a rejection.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Where mail is forwarded: addresses, domains/IPs or https:// webhooks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forward: Vec<String>,
    /// Refuse instead: quiet | soft | hard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reject: Option<RejectMode>,
    /// The text sent with a rejection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// false turns the rule off. Default true.
    #[serde(default = "yes")]
    pub enabled: bool,
}

/// A regex rule on the local part. `$1`, `${name}` in targets are replaced by captures.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Pattern {
    /// Regular expression matched case-insensitively against the local part (without +tag).
    pub regex: String,
    /// Where mail is forwarded; may use `$1`… captures.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forward: Vec<String>,
    /// Refuse instead: quiet | soft | hard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reject: Option<RejectMode>,
    /// The text sent with a rejection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// false turns the rule off. Default true.
    #[serde(default = "yes")]
    pub enabled: bool,
}

pub use crate::routing::RejectMode;

/// A mailbox: mail kept on this server, read over IMAP/POP3.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Mailbox {
    /// The password's argon2id hash (make one with `ferrymail passwd`).
    pub password: Option<PasswordRef>,
    /// Storage quota, e.g. "10GiB". Unset = unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<String>,
    /// Keep a copy of what the account sends through submission in its Sent folder.
    /// Off by default: mail clients save their own copy (IMAP APPEND), and a second one
    /// would appear twice.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub save_sent: bool,
    /// Calendars the account has besides its default "Calendar" (made on first use; one
    /// no longer declared keeps its events), e.g. ["Work", "Holidays"]. One shared with
    /// other mailboxes is a table: { name = "Team", share = { "bob@example.com" = "write" } }
    /// (the default is shared by declaring it: { name = "Calendar", share = {...} }).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calendars: Vec<DeclaredCollection>,
    /// Address books besides the default "Contacts", declared and shared like calendars.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub address_books: Vec<DeclaredCollection>,
    /// This mailbox's own sending limits, e.g. { per_day = 5000 }; the rest come from
    /// `[limits.sending]`.
    #[serde(default, skip_serializing_if = "MailboxSending::is_empty")]
    pub sending: MailboxSending,
    /// A Sieve script (RFC 5228) run on every message delivered here, before the user's
    /// own (ManageSieve): inline text (`sieve = '''require "fileinto"; ...'''`) or a
    /// file, `sieve = { file = "filters/me.sieve" }` (relative to the spec). Checked at
    /// validate; errors name the script's line and column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sieve: Option<SieveSource>,
    /// An automatic reply while the owner is away (RFC 5230), e.g. { from = "2026-12-20",
    /// until = "2027-01-05", subject = "Away", body = "Back on the 6th." }: each sender
    /// gets one every `days` (7), never lists, bounces or automatic mail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vacation: Option<Vacation>,
    /// What the mailbox's owner may change on their own web page (/admin/me), kept in
    /// the store, never written to the spec: "password" (the spec's hash is then the
    /// first one; a new hash in the spec resets theirs, and taking "password" away
    /// brings the spec's back), "app-passwords" (one per device for IMAP, POP3, SMTP and
    /// DAV, revocable, ended by any new password), "forwarding", "vacation" (over the
    /// one declared here). E.g. self_service = ["password", "app-passwords"].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub self_service: Vec<SelfService>,
    /// Where the main password logs in: "everywhere" (default), or "web" (the owner's
    /// page only; mail clients then need an app password, so a password typed into a
    /// phone never opens the account's settings, and ManageSieve, which app passwords
    /// do not open, is closed). "web" needs "app-passwords".
    #[serde(default, skip_serializing_if = "MainPassword::is_everywhere")]
    pub main_password: MainPassword,
}

/// What a mailbox's owner may change without the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SelfService {
    /// Their own password.
    Password,
    /// Passwords for mail clients, one per device.
    AppPasswords,
    /// Where their mail is forwarded (a copy kept, or not).
    Forwarding,
    /// An automatic reply while they are away.
    Vacation,
}

/// Where a mailbox's main password is accepted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum MainPassword {
    /// The web page, IMAP, POP3, SMTP submission, CalDAV and CardDAV.
    #[default]
    Everywhere,
    /// The web page only.
    Web,
}

impl MainPassword {
    pub fn is_everywhere(&self) -> bool {
        *self == MainPassword::Everywhere
    }
}

/// A Sieve script: its text, or the file holding it.
#[derive(Debug, Clone, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(untagged)]
pub enum SieveSource {
    Inline(String),
    File(SieveFile),
}

/// A Sieve script kept in a file beside the spec.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SieveFile {
    /// The script's path, relative to the spec's directory.
    pub file: PathBuf,
}

impl<'de> Deserialize<'de> for SieveSource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = SieveSource;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("the script's text, or { file = \"path.sieve\" }")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(SieveSource::Inline(v.to_string()))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                SieveFile::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(SieveSource::File)
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl SieveSource {
    /// The script's text, read from its file when it has one.
    pub fn text(&self, base_dir: &std::path::Path) -> Result<String, String> {
        match self {
            SieveSource::Inline(text) => Ok(text.clone()),
            SieveSource::File(SieveFile { file }) => {
                let path = base_dir.join(file);
                let size = std::fs::metadata(&path)
                    .map_err(|e| format!("{}: {e}", file.display()))?
                    .len();
                if size > crate::sieve::MAX_SCRIPT_SIZE as u64 {
                    return Err(format!(
                        "{}: larger than a script may be ({} bytes)",
                        file.display(),
                        crate::sieve::MAX_SCRIPT_SIZE
                    ));
                }
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", file.display()))
            }
        }
    }

    /// How errors inside it say where: "the script" or its file.
    pub fn name(&self) -> String {
        match self {
            SieveSource::Inline(_) => "the script".into(),
            SieveSource::File(SieveFile { file }) => file.display().to_string(),
        }
    }
}

/// A declared vacation responder.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Vacation {
    /// The first day replies go out ("2026-12-20", UTC); unset = already.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The last day replies go out ("2027-01-05", UTC); unset = until removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// The reply's subject; unset = "Auto: " and the message's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The reply's text.
    pub body: String,
    /// Days before the same sender gets another reply (RFC 5230 :days). Default 7.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<u32>,
}

/// A declared calendar or address book: its name, or its name and the mailboxes it is
/// shared with.
#[derive(Debug, Clone, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(untagged)]
pub enum DeclaredCollection {
    Name(String),
    Shared(SharedCollection),
}

/// A declared calendar or address book that other mailboxes see.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SharedCollection {
    /// Its display name, as in the plain form.
    pub name: String,
    /// Mailbox addresses of this server that see it in their own calendar or address
    /// book list, and whether they may change what it holds: { "team@example.com" = "read" }.
    #[serde(default)]
    pub share: BTreeMap<String, ShareAccess>,
}

/// What a mailbox a collection is shared with may do.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ShareAccess {
    /// Read events or contacts, and free/busy time.
    Read,
    /// Also add, change and remove them (not the collection or its properties).
    Write,
}

impl DeclaredCollection {
    pub fn name(&self) -> &str {
        match self {
            DeclaredCollection::Name(name) => name,
            DeclaredCollection::Shared(shared) => &shared.name,
        }
    }

    pub fn share(&self) -> Option<&BTreeMap<String, ShareAccess>> {
        match self {
            DeclaredCollection::Name(_) => None,
            DeclaredCollection::Shared(shared) => Some(&shared.share),
        }
    }
}

/// A string, or a table read strictly: a mistyped key names itself rather than being
/// lost in "did not match any variant".
impl<'de> Deserialize<'de> for DeclaredCollection {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = DeclaredCollection;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a name, or a table { name = \"...\", share = { ... } }")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(DeclaredCollection::Name(v.to_string()))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                SharedCollection::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(DeclaredCollection::Shared)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Where a password hash comes from: inline, or a secret reference holding the hash.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordRef {
    /// The argon2id hash itself ("$argon2id$v=19$...").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// An environment variable holding the hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// A file holding the hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
}

/// DKIM key algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum DkimAlgorithm {
    /// RSA 2048-bit: verified by every receiver.
    #[serde(rename = "rsa-2048")]
    Rsa2048,
    /// Ed25519 (RFC 8463): small and fast, not verified everywhere yet.
    #[serde(rename = "ed25519")]
    Ed25519,
}

impl DkimAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            DkimAlgorithm::Rsa2048 => "rsa-2048",
            DkimAlgorithm::Ed25519 => "ed25519",
        }
    }
}

/// One DKIM signing key, published at `SELECTOR._domainkey.DOMAIN`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DkimKey {
    /// The DNS selector.
    pub selector: String,
    /// rsa-2048 (default) | ed25519.
    #[serde(default = "default_dkim_algorithm")]
    pub algorithm: DkimAlgorithm,
}

fn default_dkim_algorithm() -> DkimAlgorithm {
    DkimAlgorithm::Rsa2048
}

/// Scheduled, encrypted backups, run by `serve` (and `ferrymail backup create`).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Backups {
    /// When to run: five cron fields in UTC ("0 3 * * *" = 03:00 UTC daily). The first
    /// backup runs when `serve` starts with none; a missed one runs at the next start.
    pub schedule: String,
    /// Where to: "s3://bucket/prefix" or "file:///path" (a relative file path is read
    /// from the spec's directory).
    pub target: String,
    /// S3 endpoint URL, for S3-compatible stores (MinIO, Garage, R2, B2); requests are
    /// path-style. https, or http on loopback only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// S3 region. Default "us-east-1".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// S3 access key; unset: AWS_ACCESS_KEY_ID and the other usual AWS settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key: Option<SecretRef>,
    /// S3 secret key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key: Option<SecretRef>,
    /// Key that encrypts every backup (age): an identity from `age-keygen`
    /// ("AGE-SECRET-KEY-1…", or its whole file), or a passphrase of 16 or more
    /// characters. The target never sees plaintext; losing this key loses the backups.
    pub encryption_key: SecretRef,
    /// How many backups to keep at the target; older ones are deleted. Default 14.
    #[serde(default = "default_keep")]
    pub keep: u32,
    /// Include the mailboxes' master key (data_dir/master.key) in backups. Default
    /// false: then keep that key safe elsewhere, or restored mail cannot be read.
    #[serde(default)]
    pub include_master_key: bool,
}

fn default_keep() -> u32 {
    14
}
