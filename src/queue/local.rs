//! Local targets are chains inside this server: the MX, submission and Sieve redirects
//! follow them here, so mail does not leave to come back.

use super::{DeliveryKind, Dsn, NewDelivery};
use crate::routing::{Action, Target};

/// Chains are followed this deep (bounded) so mail for `team@` that forwards to `me@`
/// lands in me's mailbox; deeper, the next hop is an ordinary forward.
const MAX_LOCAL_HOPS: usize = 8;

/// Adds what a rule asks (its mailbox, its forwards) to `out`, following targets on this
/// server's domains through their own rules; `seen` stops a chain that comes back.
pub fn expand(
    snapshot: &crate::snapshot::Snapshot,
    alias: &str,
    mailbox: Option<crate::address::Address>,
    forward: Vec<Target>,
    seen: &mut Vec<String>,
    depth: usize,
    out: &mut Vec<NewDelivery>,
) {
    let push = |kind, target: String, out: &mut Vec<NewDelivery>| {
        if !out
            .iter()
            .any(|d: &NewDelivery| d.kind == kind && d.target == target)
        {
            out.push(NewDelivery {
                kind,
                target,
                alias: alias.to_string(),
                prefix: String::new(),
                from_rewrite: String::new(),
                prefix_7bit: String::new(),
                folder: String::new(),
                dsn: Dsn::default(),
            });
        }
    };
    if let Some(account) = mailbox {
        push(DeliveryKind::Mailbox, account.to_string(), out);
    }
    for target in forward {
        match target {
            Target::Webhook(url) => push(DeliveryKind::Webhook, url, out),
            Target::Address(a)
                if snapshot.router.is_local_domain(&a.domain) && depth < MAX_LOCAL_HOPS =>
            {
                let address = a.to_string();
                if seen.contains(&address) {
                    continue;
                }
                seen.push(address.clone());
                if let Ok(Some(res)) = snapshot.resolve(&address)
                    && let Action::Deliver { mailbox, forward } = res.action
                {
                    expand(
                        snapshot,
                        &res.alias.to_string(),
                        mailbox,
                        forward,
                        seen,
                        depth + 1,
                        out,
                    );
                }
            }
            other => push(DeliveryKind::Forward, other.to_string(), out),
        }
    }
}
