//! The throttling engine: limits per API, user, app and client IP in a period, parameter-
//! based rules (first match wins) and per-app / per-user exclusions. Counting is done by the
//! host's counters (`local`: this node; `counter`: the cluster), in fixed windows aligned to
//! the epoch, so one check costs one atomic increment per limit.
//!
//! Three plugins share it with configs of their own: `throttling` (Request Throttling 2.0,
//! everything), `request-throttling` (traditional: the four limits in one period) and
//! `credential-quota` (calls per credential per period).
#![forbid(unsafe_code)]

use serde::Deserialize;
use wasmgate_param_rules::{Matcher, ParameterConfig, Parameters, WhenConfig};
use wasmgate_sdk::host::counters::{self, Consistency};
use wasmgate_sdk::prelude::*;

const MAX_RULES: usize = 100;
const MAX_EXCLUSIONS: usize = 30;

#[derive(Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Basic,
    Shared,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    Second,
    Minute,
    Hour,
    Day,
}

impl Unit {
    pub fn ms(self) -> u64 {
        match self {
            Unit::Second => 1_000,
            Unit::Minute => 60_000,
            Unit::Hour => 3_600_000,
            Unit::Day => 86_400_000,
        }
    }
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    Counter,
    Local,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleConfig {
    /// For the people reading the config; the engine identifies rules by position.
    #[serde(default)]
    #[allow(dead_code)]
    name: String,
    when: WhenConfig,
    limit: u64,
    period: Option<u64>,
    unit: Option<Unit>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppExclusion {
    id: String,
    limit: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserExclusion {
    name: String,
    limit: u64,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ExclusionsConfig {
    #[serde(default)]
    apps: Vec<AppExclusion>,
    #[serde(default)]
    users: Vec<UserExclusion>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "basic")]
    r#type: Scope,
    #[serde(default = "one")]
    period: u64,
    #[serde(default = "second")]
    unit: Unit,
    api_limit: u64,
    user_limit: Option<u64>,
    app_limit: Option<u64>,
    ip_limit: Option<u64>,
    #[serde(default = "counter")]
    algorithm: Algorithm,
    #[serde(default)]
    parameters: Vec<ParameterConfig>,
    #[serde(default)]
    rules: Vec<RuleConfig>,
    #[serde(default)]
    exclusions: ExclusionsConfig,
}

pub fn basic() -> Scope {
    Scope::Basic
}
pub fn one() -> u64 {
    1
}
pub fn second() -> Unit {
    Unit::Second
}
pub fn counter() -> Algorithm {
    Algorithm::Counter
}

struct Rule {
    matcher: Matcher,
    limit: u64,
    window_ms: u64,
}

/// What a 429 says, so each plugin answers in its own words.
pub struct Refusal {
    pub code: &'static str,
    pub message: &'static str,
}

pub const THROTTLED: Refusal =
    Refusal { code: "APIG.0308", message: "The throttling threshold has been reached" };

pub struct Throttling {
    scope: Scope,
    window_ms: u64,
    /// `None`: no limit on the API as a whole (credential quota).
    api_limit: Option<u64>,
    user_limit: Option<u64>,
    app_limit: Option<u64>,
    ip_limit: Option<u64>,
    consistency: Consistency,
    params: Parameters,
    rules: Vec<Rule>,
    app_exclusions: Vec<(String, u64)>,
    user_exclusions: Vec<(String, u64)>,
    refusal: Refusal,
}

fn err(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::new(field, message)
}

fn check_period(field: &str, period: u64) -> Result<(), ConfigError> {
    if period == 0 || period > 1_000_000 {
        return Err(err(field, format!("{period} is outside 1..=1000000")));
    }
    Ok(())
}

/// The simple limits every variant has: one period, four optional limits.
pub struct Basic {
    pub scope: Scope,
    pub period: u64,
    pub unit: Unit,
    pub api_limit: Option<u64>,
    pub user_limit: Option<u64>,
    pub app_limit: Option<u64>,
    pub ip_limit: Option<u64>,
    pub algorithm: Algorithm,
}

impl Throttling {
    /// Plain limits (traditional throttling, credential quota), no rules or exclusions.
    pub fn basic(b: Basic, refusal: Refusal) -> Result<(Self, BindingInfo), ConfigError> {
        check_period("period", b.period)?;
        if let Some(api) = b.api_limit {
            for (name, limit) in
                [("user_limit", b.user_limit), ("app_limit", b.app_limit), ("ip_limit", b.ip_limit)]
            {
                if let Some(l) = limit
                    && l > api
                {
                    return Err(err(name, format!("{l} is above api_limit ({api})")));
                }
            }
        }
        let mut fields = RequestFields::REQUEST_ID | RequestFields::ROUTE | RequestFields::IDENTITY;
        if b.ip_limit.is_some() {
            fields = fields | RequestFields::CLIENT_IP;
        }
        let mut info = BindingInfo::request_only();
        info.request_fields = fields;
        let t = Throttling {
            scope: b.scope,
            window_ms: b.period * b.unit.ms(),
            api_limit: b.api_limit,
            user_limit: b.user_limit,
            app_limit: b.app_limit,
            ip_limit: b.ip_limit,
            consistency: match b.algorithm {
                Algorithm::Counter => Consistency::Cluster,
                Algorithm::Local => Consistency::Local,
            },
            params: Parameters::default(),
            rules: Vec::new(),
            app_exclusions: Vec::new(),
            user_exclusions: Vec::new(),
            refusal,
        };
        Ok((t, info))
    }

    /// Request Throttling 2.0: everything, from its JSON config.
    pub fn request_throttling_2_0(config: &str) -> Result<(Self, BindingInfo), ConfigError> {
        let c: Config = parse_config(config)?;
        // The period and the four limits are the basic variant's; rules and exclusions come on top.
        let basic = Basic {
            scope: c.r#type,
            period: c.period,
            unit: c.unit,
            api_limit: Some(c.api_limit),
            user_limit: c.user_limit,
            app_limit: c.app_limit,
            ip_limit: c.ip_limit,
            algorithm: c.algorithm,
        };
        let (mut policy, mut info) = Self::basic(basic, THROTTLED)?;
        if c.rules.len() > MAX_RULES {
            return Err(err("rules", format!("{} given, at most {MAX_RULES}", c.rules.len())));
        }
        if c.exclusions.apps.len() > MAX_EXCLUSIONS {
            return Err(err(
                "exclusions.apps",
                format!("{} given, at most {MAX_EXCLUSIONS}", c.exclusions.apps.len()),
            ));
        }
        if c.exclusions.users.len() > MAX_EXCLUSIONS {
            return Err(err(
                "exclusions.users",
                format!("{} given, at most {MAX_EXCLUSIONS}", c.exclusions.users.len()),
            ));
        }

        let params = Parameters::compile(&c.parameters, "parameters", &mut info)?;
        let mut rules = Vec::with_capacity(c.rules.len());
        for (i, r) in c.rules.into_iter().enumerate() {
            let at = |f: &str| format!("rules[{i}].{f}");
            let matcher = params.matcher(r.when, &at("when"))?;
            let period = r.period.unwrap_or(c.period);
            check_period(&at("period"), period)?;
            rules.push(Rule { matcher, limit: r.limit, window_ms: period * r.unit.unwrap_or(c.unit).ms() });
        }

        policy.params = params;
        policy.rules = rules;
        policy.app_exclusions = c.exclusions.apps.into_iter().map(|e| (e.id, e.limit)).collect();
        policy.user_exclusions = c.exclusions.users.into_iter().map(|e| (e.name, e.limit)).collect();
        Ok((policy, info))
    }

    /// Count this request against every limit that applies; 429 at the first one exceeded.
    pub fn check(&self, req: &Request) -> RequestAction {
        // Basic scope counts each API alone; shared scope counts every API bound to the policy.
        let scope = match self.scope {
            Scope::Basic => req.route().api_id,
            Scope::Shared => "",
        };
        let identity = req.identity();
        // The most specific limits are checked first, so a caller refused by its own limit
        // does not use up the API's.
        let mut checks: Vec<(String, u64, u64)> = Vec::with_capacity(4);
        if let Some(ip_limit) = self.ip_limit {
            checks.push((format!("{scope}|ip|{}", req.client_ip()), ip_limit, self.window_ms));
        }
        if let Some(app) = identity.app_id {
            let excluded = self.app_exclusions.iter().find(|(id, _)| id == app).map(|(_, l)| *l);
            if let Some(limit) = excluded.or(self.app_limit) {
                checks.push((format!("{scope}|app|{app}"), limit, self.window_ms));
            }
        }
        if let Some(user) = identity.user {
            let excluded = self.user_exclusions.iter().find(|(n, _)| n == user).map(|(_, l)| *l);
            if let Some(limit) = excluded.or(self.user_limit) {
                checks.push((format!("{scope}|user|{user}"), limit, self.window_ms));
            }
        }
        match self.rules.iter().position(|r| self.params.matches(&r.matcher, req)) {
            Some(i) => {
                checks.push((format!("{scope}|rule|{i}"), self.rules[i].limit, self.rules[i].window_ms))
            }
            None => {
                if let Some(limit) = self.api_limit {
                    checks.push((format!("{scope}|api"), limit, self.window_ms));
                }
            }
        }

        let mut shown = None;
        for (key, limit, window_ms) in &checks {
            let w = counters::increment(key, 1, *limit, *window_ms, self.consistency);
            let reset_s = w.reset_ms.div_ceil(1000).max(1);
            let headers = vec![
                HeaderOp::Set(("x-ratelimit-limit".into(), limit.to_string())),
                HeaderOp::Set(("x-ratelimit-remaining".into(), limit.saturating_sub(w.count).to_string())),
                HeaderOp::Set(("x-ratelimit-reset".into(), reset_s.to_string())),
            ];
            if !w.allowed {
                let mut reply = Reply::error(429, self.refusal.code, self.refusal.message, req.request_id());
                reply.headers.push(("retry-after".into(), reset_s.to_string()));
                for h in headers {
                    if let HeaderOp::Set(pair) = h {
                        reply.headers.push(pair);
                    }
                }
                return RequestAction::Respond(reply);
            }
            shown = Some(headers);
        }
        // The headers shown on success are those of the API (or rule) limit, checked last.
        RequestAction::Continue(RequestChanges {
            response_headers: shown.unwrap_or_default(),
            ..Default::default()
        })
    }
}
