//! The mail side of `serve`: the delivery worker, and the SMTP (MX and submission),
//! IMAP, POP3 and ManageSieve listeners, each given what it needs from the shared state.

use std::sync::Arc;

use anyhow::{Context, bail};

use super::connections::ConnectionLimits;
use super::services::Services;
use super::shared::Shared;
use crate::queue::outbound::Outbound;
use crate::queue::tls_policy::TlsPolicies;
use crate::queue::tls_policy::dane::Dane;
use crate::queue::tls_policy::tally::Tally;
use crate::queue::worker::Worker;
use crate::smtp::{MxContext, serve_mx};
use crate::spec::LoadedSpec;

/// Delivers what the queue holds: forwards, mailboxes, webhooks, bounces.
pub fn start_delivery(
    services: &mut Services,
    shared: &Shared,
    loaded: &LoadedSpec,
) -> anyhow::Result<()> {
    let mut outbound = Outbound::new(
        shared.hostname.clone(),
        loaded.spec.delivery.relay.clone(),
        shared.resolver.clone(),
    );
    if loaded.spec.delivery.mta_sts != Some(false)
        && let Some(resolver) = shared.resolver.clone()
    {
        let policies = TlsPolicies::new(resolver, shared.queue.clone())
            .context("building the MTA-STS policy client")?;
        outbound = outbound.with_policies(Arc::new(policies));
    }
    if loaded.spec.delivery.dane != Some(false) && loaded.spec.delivery.relay.is_none() {
        let anchors = loaded
            .spec
            .dns
            .trust_anchors
            .as_ref()
            .map(|f| loaded.base_dir.join(f));
        let validating =
            crate::dns::dnssec::validating(loaded.spec.dns.resolver, anchors.as_deref())
                .context("building the DNSSEC-validating resolver for DANE")?;
        outbound = outbound.with_dane(Arc::new(Dane::new(validating)));
    }
    let tally = Arc::new(Tally::default());
    outbound = outbound.with_tally(tally.clone());
    services.start(tally.run(shared.queue.clone(), services.shutdown()));
    let reports = &loaded.spec.reports;
    let kinds = crate::queue::report_mail::Kinds {
        tls: reports.tls_rpt_from().is_some(),
        dmarc: reports.dmarc_from().is_some(),
    };
    if let (Some(from), Some(resolver)) = (&reports.from, shared.resolver.clone())
        && (kinds.tls || kinds.dmarc)
    {
        services.start(crate::queue::report_mail::daily(
            shared.queue.clone(),
            shared.spool.clone(),
            resolver,
            from.to_string(),
            shared.hostname.clone(),
            kinds,
            services.shutdown(),
        ));
    }
    let worker = Arc::new(Worker {
        db: shared.queue.clone(),
        spool: shared.spool.clone(),
        outbound,
        mailboxes: shared.mailboxes.clone(),
        snapshot: shared.snapshot.clone(),
        srs: shared.srs.clone(),
        hostname: shared.hostname.clone(),
        http: reqwest::Client::builder()
            .build()
            .context("building the webhook client")?,
        webhook_key: super::keys::webhook_key(loaded)?,
        log: shared.log.clone(),
        cache: shared.cache.clone(),
        signing: shared.signing.clone(),
        expire_after: loaded.spec.delivery.expire_after_secs() as i64,
        delay_warning: loaded.spec.delivery.delay_warning_secs() as i64,
        destinations: Default::default(),
        sieve: Arc::new(crate::sieve::Interpreter::new(&shared.hostname)),
    });
    services.start(worker.run(shared.spool.committed.clone(), services.shutdown()));
    Ok(())
}

/// Starts the declared SMTP, IMAP, POP3 and ManageSieve listeners.
pub async fn start_listeners(
    services: &mut Services,
    shared: &Shared,
    loaded: &LoadedSpec,
    limits: &ConnectionLimits,
) -> anyhow::Result<()> {
    let declared = &loaded.spec.listeners;
    // The largest any domain takes: a session learns its recipients' domains later.
    let max_size = shared
        .snapshot
        .get()
        .domains
        .values()
        .map(|d| d.max_message_size)
        .max()
        .unwrap_or(50_000_000);
    let spec_limits = &loaded.spec.limits;
    let message_memory = crate::limits::MessageMemory::new(spec_limits.message_memory());
    let spam = crate::spam::Filter::from_spec(&loaded.spec.spam, &loaded.base_dir)
        .context("[spam]")?
        .map(Arc::new);
    // DMARC results are counted only when reports are to be sent, and checks are made.
    let dmarc_tally = loaded
        .spec
        .reports
        .dmarc_from()
        .filter(|_| shared.resolver.is_some())
        .map(|_| Arc::new(crate::queue::dmarc_report::Tally::default()));
    if let Some(tally) = &dmarc_tally {
        services.start(tally.clone().run(shared.queue.clone(), services.shutdown()));
    }
    let smtp_listeners = [
        ("mx", declared.mx, None, false),
        (
            "submission",
            declared.submission,
            Some(shared.logins.clone()),
            false,
        ),
        (
            "submissions",
            declared.submissions,
            Some(shared.logins.clone()),
            true,
        ),
    ];
    for (name, addr, logins, implicit_tls) in smtp_listeners {
        let Some(addr) = addr else { continue };
        let listener = services.bind(name, addr).await?;
        let ctx = Arc::new(MxContext {
            hostname: shared.hostname.clone(),
            snapshot: shared.snapshot.clone(),
            spool: shared.spool.clone(),
            tls: shared.tls.clone(),
            srs: shared.srs.clone(),
            max_message_size: max_size,
            authenticator: shared.resolver.clone().map(mail_auth::MessageAuthenticator),
            signing: shared.signing.clone(),
            log: shared.log.clone(),
            cache: shared.cache.clone(),
            limits: limits.for_listener(name),
            logins,
            mailboxes: shared.mailboxes.clone(),
            session_limits: spec_limits.smtp(),
            message_memory: message_memory.clone(),
            spam: spam.clone(),
            dmarc_tally: dmarc_tally.clone(),
        });
        services.start(serve_mx(listener, ctx, implicit_tls, services.shutdown()));
    }

    let imap_ctx = Arc::new(crate::imap::ImapContext {
        hostname: shared.hostname.clone(),
        snapshot: shared.snapshot.clone(),
        mailboxes: shared.mailboxes.clone(),
        logins: shared.logins.clone(),
        tls: shared.tls.as_deref().map(crate::tls::without_tickets),
        max_append: u32::try_from(max_size).unwrap_or(u32::MAX),
        learner: spam
            .as_ref()
            .and_then(|filter| filter.rspamd.clone())
            .map(|rspamd| crate::spam::Learner::start(rspamd, shared.mailboxes.clone())),
    });
    for (name, addr, implicit_tls) in [
        ("imap", declared.imap, false),
        ("imaps", declared.imaps, true),
    ] {
        let Some(addr) = addr else { continue };
        if implicit_tls && shared.tls.is_none() {
            bail!("listeners.imaps needs a certificate: set [tls] mode");
        }
        let listener = services.bind(name, addr).await?;
        services.start(crate::imap::serve_imap(
            listener,
            imap_ctx.clone(),
            limits.for_listener(name),
            implicit_tls,
            services.shutdown(),
        ));
    }

    let pop3_ctx = Arc::new(crate::pop3::Pop3Context {
        hostname: shared.hostname.clone(),
        mailboxes: shared.mailboxes.clone(),
        logins: shared.logins.clone(),
        tls: shared.tls.clone(),
        locked: Default::default(),
    });
    for (name, addr, implicit_tls) in [
        ("pop3", declared.pop3, false),
        ("pop3s", declared.pop3s, true),
    ] {
        let Some(addr) = addr else { continue };
        let listener = services.bind(name, addr).await?;
        services.start(crate::pop3::serve_pop3(
            listener,
            pop3_ctx.clone(),
            limits.for_listener(name),
            implicit_tls,
            services.shutdown(),
        ));
    }

    if let Some(addr) = declared.managesieve {
        #[cfg(feature = "mongodb")]
        if let Some(mongo) = shared.mailboxes.mongo() {
            crate::sieve::store::prepare_mongo(mongo)
                .context("preparing Sieve scripts in MongoDB")?;
        }
        let ctx = Arc::new(crate::managesieve::ManageSieveContext {
            mailboxes: shared.mailboxes.clone(),
            logins: shared.logins.clone(),
            tls: shared.tls.clone(),
        });
        let listener = services.bind("managesieve", addr).await?;
        services.start(crate::managesieve::serve_managesieve(
            listener,
            ctx,
            limits.for_listener("managesieve"),
            services.shutdown(),
        ));
    }
    Ok(())
}
