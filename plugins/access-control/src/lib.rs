//! Access control (traditional): allow or deny lists of client IPs (addresses and CIDR
//! ranges, IPv4 and IPv6) and of accounts (the app id or user an earlier authentication
//! policy set). Refused: 403 `APIG.0302`.

use serde::Deserialize;
use std::net::IpAddr;
use wasmgate_sdk::prelude::*;

const MAX_ENTRIES: usize = 100;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
enum List {
    Allow(Vec<String>),
    Deny(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    ip: Option<List>,
    accounts: Option<List>,
}

/// An address range: the network's bits and how many of them count. IPv4 is kept as an
/// IPv4-mapped IPv6 address, so one comparison serves both families.
struct Range {
    network: u128,
    prefix: u32,
}

impl Range {
    fn parse(s: &str) -> Option<Range> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a.trim().parse::<IpAddr>().ok()?, Some(p.trim().parse::<u32>().ok()?)),
            None => (s.trim().parse::<IpAddr>().ok()?, None),
        };
        let (bits, max) = match addr {
            IpAddr::V4(v4) => (u128::from(v4.to_ipv6_mapped()), 32),
            IpAddr::V6(v6) => (u128::from(v6), 128),
        };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return None;
        }
        // An IPv4 prefix counts after the 96 bits of the mapping.
        let prefix = prefix + (128 - max);
        Some(Range { network: bits & mask(prefix), prefix })
    }

    fn contains(&self, ip: u128) -> bool {
        ip & mask(self.prefix) == self.network
    }
}

fn mask(prefix: u32) -> u128 {
    if prefix == 0 { 0 } else { u128::MAX << (128 - prefix) }
}

fn ip_bits(ip: &str) -> Option<u128> {
    Some(match ip.parse::<IpAddr>().ok()? {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6.to_ipv4_mapped().map_or(v6, |v4| v4.to_ipv6_mapped())),
    })
}

enum Effect<T> {
    Allow(T),
    Deny(T),
}

struct AccessControl {
    ip: Option<Effect<Vec<Range>>>,
    accounts: Option<Effect<Vec<String>>>,
}

fn entries<'a>(field: &str, list: &'a List) -> Result<(&'a [String], bool), ConfigError> {
    let (items, allow) = match list {
        List::Allow(v) => (v, true),
        List::Deny(v) => (v, false),
    };
    let kind = if allow { "allow" } else { "deny" };
    if items.len() > MAX_ENTRIES {
        return Err(ConfigError::new(
            format!("{field}.{kind}"),
            format!("{} entries, at most {MAX_ENTRIES}", items.len()),
        ));
    }
    Ok((items, allow))
}

impl Policy for AccessControl {
    fn configure(config: &str) -> Result<(Self, BindingInfo), ConfigError> {
        let c: Config = parse_config(config)?;
        if c.ip.is_none() && c.accounts.is_none() {
            return Err(ConfigError::new("", "needs `ip` or `accounts` (or both)"));
        }
        let mut fields = RequestFields::REQUEST_ID;
        let ip = match &c.ip {
            None => None,
            Some(list) => {
                fields = fields | RequestFields::CLIENT_IP;
                let (items, allow) = entries("ip", list)?;
                let kind = if allow { "allow" } else { "deny" };
                let ranges = items
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        Range::parse(s).ok_or_else(|| {
                            ConfigError::new(
                                format!("ip.{kind}[{i}]"),
                                format!("`{s}` is not an IP address or CIDR range"),
                            )
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Some(if allow { Effect::Allow(ranges) } else { Effect::Deny(ranges) })
            }
        };
        let accounts = match &c.accounts {
            None => None,
            Some(list) => {
                fields = fields | RequestFields::IDENTITY;
                let (items, allow) = entries("accounts", list)?;
                let names = items.to_vec();
                Some(if allow { Effect::Allow(names) } else { Effect::Deny(names) })
            }
        };
        let mut info = BindingInfo::request_only();
        info.request_fields = fields;
        Ok((AccessControl { ip, accounts }, info))
    }

    fn on_request(&self, req: &Request) -> RequestAction {
        let ip_ok = match &self.ip {
            None => true,
            Some(effect) => {
                let ip = ip_bits(req.client_ip());
                let listed = |ranges: &Vec<Range>| ip.is_some_and(|ip| ranges.iter().any(|r| r.contains(ip)));
                match effect {
                    Effect::Allow(r) => listed(r),
                    Effect::Deny(r) => !listed(r),
                }
            }
        };
        let accounts_ok = match &self.accounts {
            None => true,
            Some(effect) => {
                let id = req.identity();
                let listed = |names: &Vec<String>| {
                    [id.app_id, id.user].into_iter().flatten().any(|a| names.iter().any(|n| n == a))
                };
                match effect {
                    Effect::Allow(n) => listed(n),
                    Effect::Deny(n) => !listed(n),
                }
            }
        };
        if ip_ok && accounts_ok {
            RequestAction::Continue(RequestChanges::default())
        } else {
            RequestAction::Respond(Reply::error(
                403,
                "APIG.0302",
                "Access denied by access control",
                req.request_id(),
            ))
        }
    }
}

wasmgate_sdk::export_policy!(AccessControl);
