//! Parameter-based rules, as the managed gateways define them: named parameters taken from
//! the path, query, headers or the system (`reqPath`, `method`, `serverName`, `sourceIp`),
//! and conditions on them (`==`, `in`, `~~` for a whole-value regular expression) combined
//! with `all` or `any`. Compiled once at load; a match reads only the selected fields.
#![forbid(unsafe_code)]

use serde::Deserialize;
use wasmgate_sdk::prelude::*;

pub const MAX_PARAMETERS: usize = 20;

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum Source {
    Path,
    Query,
    Header,
    System,
}

/// `{name, from: path|query|header|system, key}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParameterConfig {
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

/// `{all: [conditions]}` or `{any: [conditions]}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhenConfig {
    #[serde(default)]
    all: Vec<ConditionConfig>,
    #[serde(default)]
    any: Vec<ConditionConfig>,
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

/// A compiled `when`.
pub struct Matcher {
    conditions: Vec<Condition>,
    any: bool,
}

/// The declared parameters, by position.
#[derive(Default)]
pub struct Parameters {
    params: Vec<Param>,
    names: Vec<String>,
}

fn err(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::new(field, message)
}

impl Parameters {
    /// Compile `list` (found at `field` in the config), adding the request fields and
    /// headers the parameters read to `info`.
    pub fn compile(
        list: &[ParameterConfig],
        field: &str,
        info: &mut BindingInfo,
    ) -> Result<Self, ConfigError> {
        if list.len() > MAX_PARAMETERS {
            return Err(err(field, format!("{} given, at most {MAX_PARAMETERS}", list.len())));
        }
        let mut out = Parameters::default();
        let mut headers = Vec::new();
        for (i, p) in list.iter().enumerate() {
            let at = |f: &str| format!("{field}[{i}].{f}");
            if p.name.is_empty() || out.names.contains(&p.name) {
                return Err(err(at("name"), format!("`{}` is empty or used twice", p.name)));
            }
            out.names.push(p.name.clone());
            let fields = &mut info.request_fields;
            out.params.push(match p.from {
                Source::Path => {
                    *fields = *fields | RequestFields::PATH_PARAMS;
                    Param::FromPath(p.key.clone())
                }
                Source::Query => {
                    *fields = *fields | RequestFields::QUERY;
                    Param::Query(p.key.clone())
                }
                Source::Header => {
                    let h = p.key.to_ascii_lowercase();
                    headers.push(h.clone());
                    Param::Header(h)
                }
                Source::System => match p.key.as_str() {
                    "reqPath" => {
                        *fields = *fields | RequestFields::PATH;
                        Param::ReqPath
                    }
                    "method" => Param::Method,
                    "serverName" => {
                        *fields = *fields | RequestFields::HOST;
                        Param::ServerName
                    }
                    "sourceIp" => {
                        *fields = *fields | RequestFields::CLIENT_IP;
                        Param::SourceIp
                    }
                    other => {
                        return Err(err(
                            at("key"),
                            format!(
                                "`{other}` is not a system parameter (reqPath, method, serverName, sourceIp)"
                            ),
                        ));
                    }
                },
            });
        }
        if !headers.is_empty() {
            info.request_headers = match std::mem::replace(&mut info.request_headers, HeaderSelection::None) {
                HeaderSelection::All => HeaderSelection::All,
                HeaderSelection::None => HeaderSelection::Only(headers),
                HeaderSelection::Only(mut had) => {
                    had.extend(headers);
                    HeaderSelection::Only(had)
                }
            };
        }
        Ok(out)
    }

    /// Compile a rule's `when` (found at `at`) against these parameters.
    pub fn matcher(&self, when: WhenConfig, at: &str) -> Result<Matcher, ConfigError> {
        let (list, any, kind) = match (when.all.is_empty(), when.any.is_empty()) {
            (false, true) => (when.all, false, "all"),
            (true, false) => (when.any, true, "any"),
            _ => return Err(err(at, "needs exactly one of `all` or `any`, not empty")),
        };
        let mut conditions = Vec::with_capacity(list.len());
        for (j, cond) in list.into_iter().enumerate() {
            let at = |f: &str| format!("{at}.{kind}[{j}].{f}");
            let param =
                self.names.iter().position(|n| *n == cond.param).ok_or_else(|| {
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
        Ok(Matcher { conditions, any })
    }

    fn value<'a>(&self, param: &Param, req: &'a Request) -> Option<&'a str> {
        match param {
            Param::FromPath(k) => req.path_param(k),
            Param::Query(k) => req.query_param(k),
            Param::Header(h) => req.header(h),
            Param::ReqPath => Some(req.path()),
            Param::Method => Some(req.method.as_str()),
            Param::ServerName => Some(req.host()),
            Param::SourceIp => Some(req.client_ip()),
        }
    }

    /// Whether `req` meets `m`'s conditions.
    pub fn matches(&self, m: &Matcher, req: &Request) -> bool {
        let test = |c: &Condition| {
            let Some(v) = self.value(&self.params[c.param], req) else { return false };
            match &c.op {
                Op::Eq(x) => v == x,
                Op::In(xs) => xs.iter().any(|x| x == v),
                Op::Matches(re) => re.is_match(v),
            }
        };
        if m.any { m.conditions.iter().any(test) } else { m.conditions.iter().all(test) }
    }
}
