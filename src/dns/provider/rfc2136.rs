//! RFC 2136 dynamic updates signed with TSIG (RFC 8945) to an authoritative server,
//! the zone read back with AXFR; every plan's changes to a zone go in one atomic update.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use futures_util::StreamExt;
use hickory_net::client::{Client, ClientHandle};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::{DnsHandle, DnsMultiplexer};
use hickory_proto::op::{DnsRequest, Edns, Message, OpCode, Query, ResponseCode, UpdateMessage};
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::{DNSClass, Name, Record, RecordType, TSigner};

use super::{BoxFuture, Provider, ProviderError, RrsetChange, ZoneRecord};
use crate::dns::rdata::{record_type, text_of, to_rdata};
use crate::dns::records::{Kind, canonical, same_set};
use crate::spec::Secret;

const TIMEOUT: Duration = Duration::from_secs(10);
/// How far the server's clock may be from ours (RFC 8945 recommends 300 s).
const FUDGE: u16 = 300;

pub struct Rfc2136 {
    name: String,
    server: SocketAddr,
    signer: TSigner,
}

impl Rfc2136 {
    pub fn new(
        name: &str,
        server: SocketAddr,
        key_name: &str,
        algorithm: &str,
        secret: &Secret,
    ) -> Result<Rfc2136, ProviderError> {
        use base64::Engine as _;
        let fail = |m: String| ProviderError::failed(name, m);
        let key = base64::engine::general_purpose::STANDARD
            .decode(secret.expose().trim())
            .map_err(|_| fail("the TSIG secret is not base64".into()))?;
        let algorithm = match algorithm {
            "hmac-sha384" => TsigAlgorithm::HmacSha384,
            "hmac-sha512" => TsigAlgorithm::HmacSha512,
            _ => TsigAlgorithm::HmacSha256,
        };
        let key_name = Name::from_str(&format!("{}.", key_name.trim_end_matches('.')))
            .map_err(|e| fail(format!("TSIG key name: {e}")))?;
        let signer = TSigner::new(key, algorithm, key_name, FUDGE)
            .map_err(|e| fail(format!("TSIG key: {e}")))?;
        Ok(Rfc2136 {
            name: name.to_string(),
            server,
            signer,
        })
    }

    fn fail(&self, message: impl std::fmt::Display) -> ProviderError {
        ProviderError::failed(&self.name, message)
    }

    /// A client on a fresh TCP connection whose messages are signed and whose replies
    /// must carry a valid signature.
    async fn connect(&self) -> Result<Client<TokioRuntimeProvider>, ProviderError> {
        let (stream, handle) = TcpClientStream::new(
            self.server,
            None,
            Some(TIMEOUT),
            TokioRuntimeProvider::default(),
        );
        let stream = stream
            .await
            .map_err(|e| self.fail(format!("connecting to {}: {e}", self.server)))?;
        let sender = DnsMultiplexer::new(stream, handle)
            .with_timeout(TIMEOUT)
            .with_signer(self.signer.clone());
        let (client, background) = Client::<TokioRuntimeProvider>::from_sender(sender);
        tokio::spawn(background);
        Ok(client)
    }

    /// A failed exchange, explained: a bad TSIG key shows up as an unverifiable reply.
    fn exchange_error(&self, e: impl std::fmt::Display) -> ProviderError {
        let text = e.to_string();
        if text.contains("HMAC") || text.contains("TSIG") || text.contains("tsig") {
            self.fail(format!(
                "{}: the server did not accept our TSIG signature or its reply failed ours \
                 (check tsig_name, tsig_algorithm and tsig_secret against the server's key): {text}",
                self.server
            ))
        } else {
            self.fail(format!("{}: {text}", self.server))
        }
    }
}

fn absolute(name: &str) -> Result<Name, String> {
    Name::from_str(&format!("{}.", name.trim_end_matches('.'))).map_err(|e| e.to_string())
}

fn relative_text(name: &Name) -> String {
    name.to_ascii().trim_end_matches('.').to_ascii_lowercase()
}

impl Provider for Rfc2136 {
    fn name(&self) -> &str {
        &self.name
    }

    fn authoritative(&self) -> Option<SocketAddr> {
        Some(self.server)
    }

    fn zone_of<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<String, ProviderError>> {
        Box::pin(async move {
            // The server answers an SOA question with the SOA of the zone that holds the
            // name: in the answer at the apex, in the authority section below it. A name
            // that is a CNAME is answered with the CNAME instead: ask its parent.
            let mut client = self.connect().await?;
            let mut last = ResponseCode::NoError;
            for candidate in super::candidate_zones(domain) {
                let name = absolute(candidate).map_err(|e| self.fail(e))?;
                let response = client
                    .query(name, DNSClass::IN, RecordType::SOA)
                    .await
                    .map_err(|e| self.exchange_error(e))?;
                last = response.metadata.response_code;
                if !matches!(last, ResponseCode::NoError | ResponseCode::NXDomain) {
                    break;
                }
                let soa = response
                    .answers
                    .iter()
                    .chain(response.authorities.iter())
                    .find(|r| r.record_type() == RecordType::SOA);
                if let Some(soa) = soa {
                    return Ok(relative_text(&soa.name));
                }
            }
            Err(ProviderError::NoZone {
                provider: self.name.clone(),
                domain: format!("{domain} ({} answered {last})", self.server),
            })
        })
    }

    fn list<'a>(
        &'a self,
        zone: &'a str,
        _wanted: &'a [(String, Kind)],
    ) -> BoxFuture<'a, Result<Vec<ZoneRecord>, ProviderError>> {
        Box::pin(async move {
            let mut client = self.connect().await?;
            let origin = absolute(zone).map_err(|e| self.fail(e))?;
            let mut transfer = client.zone_transfer(origin, None);
            let mut out = Vec::new();
            while let Some(response) = transfer.next().await {
                let response = response.map_err(|e| self.exchange_error(e))?;
                let code = response.metadata.response_code;
                if code != ResponseCode::NoError {
                    return Err(self.fail(format!(
                        "zone transfer of {zone} refused ({code}): allow AXFR for the TSIG key"
                    )));
                }
                for record in &response.answers {
                    out.push(ZoneRecord {
                        name: relative_text(&record.name),
                        rtype: record.record_type().to_string(),
                        ttl: record.ttl,
                        data: text_of(&record.data),
                    });
                }
            }
            // AXFR sends the SOA first and again last.
            if out.len() > 1 && out.first() == out.last() {
                out.pop();
            }
            Ok(out)
        })
    }

    fn apply<'a>(
        &'a self,
        zone: &'a str,
        changes: &'a [RrsetChange],
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            if changes.is_empty() {
                return Ok(());
            }
            let mut client = self.connect().await?;
            // The sets as the server holds them, string for string: a TXT record split
            // at other places than ours is the same text but other wire data, and the
            // prerequisites and deletions must name the wire data exactly.
            let mut live = Vec::with_capacity(changes.len());
            for change in changes {
                if change.before.is_empty() {
                    live.push(Vec::new());
                    continue;
                }
                let name = absolute(&change.name).map_err(|e| self.fail(e))?;
                let rtype = record_type(change.kind);
                let response = client
                    .query(name, DNSClass::IN, rtype)
                    .await
                    .map_err(|e| self.exchange_error(e))?;
                let records: Vec<Record> = response
                    .answers
                    .iter()
                    .filter(|r| r.record_type() == rtype)
                    .cloned()
                    .collect();
                let seen: Vec<String> = records.iter().map(|r| text_of(&r.data)).collect();
                if !same_set(change.kind, &seen, &change.before) {
                    return Err(ProviderError::Changed {
                        provider: self.name.clone(),
                        zone: zone.to_string(),
                        detail: format!("{} {} now holds {seen:?}", change.name, change.kind),
                    });
                }
                live.push(records);
            }
            let message = update_message(zone, changes, &live).map_err(|e| self.fail(e))?;
            let response = client
                .send(DnsRequest::from(message))
                .next()
                .await
                .ok_or_else(|| self.fail("no reply to the update"))?
                .map_err(|e| self.exchange_error(e))?;
            match response.metadata.response_code {
                ResponseCode::NoError => Ok(()),
                // A prerequisite failed: the zone is not what the plan saw.
                code @ (ResponseCode::YXRRSet
                | ResponseCode::NXRRSet
                | ResponseCode::YXDomain
                | ResponseCode::NXDomain) => Err(ProviderError::Changed {
                    provider: self.name.clone(),
                    zone: zone.to_string(),
                    detail: format!("the server answered {code}"),
                }),
                ResponseCode::Refused | ResponseCode::NotAuth => Err(self.fail(format!(
                    "{} refused the update of {zone} ({}): allow updates for the TSIG key",
                    self.server, response.metadata.response_code
                ))),
                code => Err(self.fail(format!("the update of {zone} failed: {code}"))),
            }
        })
    }
}

/// One UPDATE message (RFC 2136 §2) for all of a zone's changes; `live[i]` is the set
/// change `i` replaces, as the server holds it. Prerequisites make it a compare-and-swap:
/// each set must still be exactly that (§2.4.2), or absent when the plan creates it
/// (§2.4.3). Then values that go are deleted one by one (§2.5.4) and new ones added, so
/// records that stay (someone else's TXT) are not touched; a TTL change rewrites the set.
fn update_message(
    zone: &str,
    changes: &[RrsetChange],
    live: &[Vec<Record>],
) -> Result<Message, String> {
    let origin = absolute(zone)?;
    let mut zone_query = Query::new();
    zone_query
        .set_name(origin)
        .set_query_class(DNSClass::IN)
        .set_query_type(RecordType::SOA);
    let mut message = Message::query();
    message.metadata.op_code = OpCode::Update;
    message.metadata.recursion_desired = false;
    message.add_zone(zone_query);
    for (change, current) in changes.iter().zip(live) {
        let name = absolute(&change.name)?;
        let rtype = record_type(change.kind);
        let rdata = |data: &str| to_rdata(change.kind, data).map_err(|e| e.to_string());
        let kept = |r: &Record| {
            let text = canonical(change.kind, &text_of(&r.data));
            change
                .after
                .iter()
                .any(|a| canonical(change.kind, a) == text)
        };
        if current.is_empty() {
            let mut absent = Record::update0(name.clone(), 0, rtype);
            absent.dns_class = DNSClass::NONE;
            message.add_pre_requisite(absent.into_record_of_rdata());
        }
        for record in current {
            let mut exists = record.clone();
            exists.ttl = 0;
            message.add_pre_requisite(exists);
        }
        if change.old_ttl.is_some() {
            let mut delete = Record::update0(name.clone(), 0, rtype);
            delete.dns_class = DNSClass::ANY;
            message.add_update(delete.into_record_of_rdata());
            for record in current.iter().filter(|r| kept(r)) {
                let mut again = record.clone();
                again.ttl = change.ttl;
                message.add_update(again);
            }
        } else {
            for record in current.iter().filter(|r| !kept(r)) {
                let mut delete = record.clone();
                delete.ttl = 0;
                delete.dns_class = DNSClass::NONE;
                message.add_update(delete);
            }
        }
        let present = |a: &String| {
            let a = canonical(change.kind, a);
            current
                .iter()
                .any(|r| canonical(change.kind, &text_of(&r.data)) == a)
        };
        for data in change.after.iter().filter(|a| !present(a)) {
            message.add_update(Record::from_rdata(name.clone(), change.ttl, rdata(data)?));
        }
    }
    message
        .edns
        .get_or_insert_with(Edns::new)
        .set_max_payload(hickory_proto::op::DEFAULT_MAX_PAYLOAD_LEN)
        .set_version(0);
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::RData;
    use hickory_proto::rr::rdata::TXT;

    #[test]
    fn an_update_checks_what_the_plan_saw_and_leaves_other_values_alone() {
        let change = |name: &str, kind, before: &[&str], after: &[&str]| RrsetChange {
            name: name.into(),
            kind,
            ttl: 3600,
            before: before.iter().map(|s| s.to_string()).collect(),
            after: after.iter().map(|s| s.to_string()).collect(),
            theirs: vec![],
            old_ttl: None,
        };
        let txt = |strings: &[&str]| {
            Record::from_rdata(
                Name::from_ascii("d.test.").unwrap(),
                300,
                RData::TXT(TXT::new(strings.iter().map(|s| s.to_string()).collect())),
            )
        };
        let changes = [
            change("mx.d.test", Kind::A, &[], &["192.0.2.25"]),
            // Someone else's verification, split in two strings, stays; SPF replaced.
            change(
                "d.test",
                Kind::TXT,
                &["verify=ab", "v=spf1 a -all"],
                &["v=spf1 mx -all", "verify=ab"],
            ),
        ];
        let live = [
            vec![],
            vec![txt(&["verify=", "ab"]), txt(&["v=spf1 a -all"])],
        ];
        let m = update_message("d.test", &changes, &live).unwrap();
        let pre = m.prerequisites();
        assert_eq!(pre.len(), 3);
        assert_eq!(pre[0].dns_class, DNSClass::NONE, "the A must not exist yet");
        assert_eq!(pre[0].record_type(), RecordType::A);
        assert_eq!(
            pre[1].data,
            txt(&["verify=", "ab"]).data,
            "as the server has it"
        );
        assert_eq!(pre[1].ttl, 0);
        let updates = m.updates();
        assert_eq!(updates.len(), 3, "{updates:?}");
        assert_eq!(updates[0].record_type(), RecordType::A);
        assert_eq!(updates[0].ttl, 3600);
        // Only the old SPF is deleted (class NONE: one RR), the new one added.
        assert_eq!(updates[1].dns_class, DNSClass::NONE);
        assert_eq!(updates[1].data, txt(&["v=spf1 a -all"]).data);
        assert_eq!(updates[2].data, txt(&["v=spf1 mx -all"]).data);
        assert_eq!(updates[2].dns_class, DNSClass::IN);
    }
}
