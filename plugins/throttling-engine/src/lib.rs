//! The throttling engine: limits per API, user, app and client IP in a period, parameter-
//! based rules (first match wins) and per-app / per-user exclusions. Counting is done by the
//! host's counters (`local`: this node; `counter`: the cluster), in fixed windows aligned to
//! the epoch, so one check costs one atomic increment per limit.
//!
//! Three plugins share it with configs of their own: `throttling` (Request Throttling 2.0,
//! everything), `request-throttling` (traditional: the four limits in one period) and
//! `credential-quota` (calls per credential per period).

use serde::Deserialize;
use wasmgate_sdk::host::counters::{self, Consistency};
use wasmgate_sdk::prelude::*;

const MAX_PARAMETERS: usize = 20;
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
#[serde(rename_all = "lowercase")]
enum Source {
    Path,
    Query,
    Header,
    System,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ParameterConfig {
    name: String,
    from: Source,
    /// Path parameter, query key, header name, or one of the system parameters.
    key: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Values {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConditionConfig {
    param: String,
    op: String,
    value: Values,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WhenConfig {
    #[serde(default)]
    all: Vec<ConditionConfig>,
    #[serde(default)]
    any: Vec<ConditionConfig>,
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

/// Where a parameter's value comes from, resolved at load.
enum Param {
    FromPath(String),
    Query(String),
    Header(String),
    ReqPath,
    Method,
    ServerName,
    SourceIp,
}

enum Op {
    Eq(String),
    In(Vec<String>),
    Matches(regex_lite::Regex),
}

struct Condition {
    param: usize,
    op: Op,
}

struct Rule {
    conditions: Vec<Condition>,
    any: bool,
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
    params: Vec<Param>,
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
            params: Vec::new(),
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
        if c.parameters.len() > MAX_PARAMETERS {
            return Err(err("parameters", format!("{} given, at most {MAX_PARAMETERS}", c.parameters.len())));
        }
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

        let mut fields = info.request_fields;
        let mut headers: Vec<String> = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        let mut params = Vec::new();
        for (i, p) in c.parameters.iter().enumerate() {
            let field = |f: &str| format!("parameters[{i}].{f}");
            if p.name.is_empty() || names.contains(&p.name.as_str()) {
                return Err(err(field("name"), format!("`{}` is empty or used twice", p.name)));
            }
            names.push(&p.name);
            params.push(match p.from {
                Source::Path => {
                    fields = fields | RequestFields::PATH_PARAMS;
                    Param::FromPath(p.key.clone())
                }
                Source::Query => {
                    fields = fields | RequestFields::QUERY;
                    Param::Query(p.key.clone())
                }
                Source::Header => {
                    let h = p.key.to_ascii_lowercase();
                    headers.push(h.clone());
                    Param::Header(h)
                }
                Source::System => match p.key.as_str() {
                    "reqPath" => {
                        fields = fields | RequestFields::PATH;
                        Param::ReqPath
                    }
                    "method" => Param::Method,
                    "serverName" => {
                        fields = fields | RequestFields::HOST;
                        Param::ServerName
                    }
                    "sourceIp" => {
                        fields = fields | RequestFields::CLIENT_IP;
                        Param::SourceIp
                    }
                    other => {
                        return Err(err(
                            field("key"),
                            format!(
                                "`{other}` is not a system parameter (reqPath, method, serverName, sourceIp)"
                            ),
                        ));
                    }
                },
            });
        }

        let mut rules = Vec::with_capacity(c.rules.len());
        for (i, r) in c.rules.into_iter().enumerate() {
            let at = |f: &str| format!("rules[{i}].{f}");
            let (list, any, kind) = match (r.when.all.is_empty(), r.when.any.is_empty()) {
                (false, true) => (r.when.all, false, "all"),
                (true, false) => (r.when.any, true, "any"),
                _ => return Err(err(at("when"), "needs exactly one of `all` or `any`, not empty")),
            };
            let mut conditions = Vec::with_capacity(list.len());
            for (j, cond) in list.into_iter().enumerate() {
                let at = |f: &str| format!("rules[{i}].when.{kind}[{j}].{f}");
                let param = names.iter().position(|n| *n == cond.param).ok_or_else(|| {
                    err(at("param"), format!("`{}` is not one of `parameters`", cond.param))
                })?;
                let op = match (cond.op.as_str(), cond.value) {
                    ("==", Values::One(v)) => Op::Eq(v),
                    ("in", Values::Many(v)) => Op::In(v),
                    ("~~", Values::One(v)) => Op::Matches(
                        regex_lite::Regex::new(&format!("^(?:{v})$"))
                            .map_err(|e| err(at("value"), format!("bad regular expression: {e}")))?,
                    ),
                    ("==" | "~~", Values::Many(_)) => return Err(err(at("value"), "needs one string")),
                    ("in", Values::One(_)) => return Err(err(at("value"), "needs a list of strings")),
                    (other, _) => return Err(err(at("op"), format!("`{other}` is not one of ==, in, ~~"))),
                };
                conditions.push(Condition { param, op });
            }
            let period = r.period.unwrap_or(c.period);
            check_period(&at("period"), period)?;
            rules.push(Rule {
                conditions,
                any,
                limit: r.limit,
                window_ms: period * r.unit.unwrap_or(c.unit).ms(),
            });
        }

        info.request_fields = fields;
        if !headers.is_empty() {
            info.request_headers = HeaderSelection::Only(headers);
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
            Scope::Basic => req.route().api_id.as_str(),
            Scope::Shared => "",
        };
        let identity = req.identity();
        // The most specific limits are checked first, so a caller refused by its own limit
        // does not use up the API's.
        let mut checks: Vec<(String, u64, u64)> = Vec::with_capacity(4);
        if let Some(ip_limit) = self.ip_limit {
            checks.push((format!("{scope}|ip|{}", req.client_ip()), ip_limit, self.window_ms));
        }
        if let Some(app) = identity.app_id.as_deref() {
            let excluded = self.app_exclusions.iter().find(|(id, _)| id == app).map(|(_, l)| *l);
            if let Some(limit) = excluded.or(self.app_limit) {
                checks.push((format!("{scope}|app|{app}"), limit, self.window_ms));
            }
        }
        if let Some(user) = identity.user.as_deref() {
            let excluded = self.user_exclusions.iter().find(|(n, _)| n == user).map(|(_, l)| *l);
            if let Some(limit) = excluded.or(self.user_limit) {
                checks.push((format!("{scope}|user|{user}"), limit, self.window_ms));
            }
        }
        match self.rules.iter().position(|r| self.matches(r, req)) {
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

impl Throttling {
    fn value<'a>(&self, param: &Param, req: &'a Request) -> Option<&'a str> {
        match param {
            Param::FromPath(k) => req.path_param(k),
            Param::Query(k) => req
                .query()
                .split('&')
                .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
                .find(|(key, _)| key == k)
                .map(|(_, v)| v),
            Param::Header(h) => req.header(h),
            Param::ReqPath => Some(req.path()),
            Param::Method => Some(req.method.as_str()),
            Param::ServerName => Some(req.host()),
            Param::SourceIp => Some(req.client_ip()),
        }
    }

    fn matches(&self, rule: &Rule, req: &Request) -> bool {
        let test = |c: &Condition| {
            let Some(v) = self.value(&self.params[c.param], req) else { return false };
            match &c.op {
                Op::Eq(x) => v == x,
                Op::In(xs) => xs.iter().any(|x| x == v),
                Op::Matches(re) => re.is_match(v),
            }
        };
        if rule.any { rule.conditions.iter().any(test) } else { rule.conditions.iter().all(test) }
    }
}
