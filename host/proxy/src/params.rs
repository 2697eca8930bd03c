//! Request parameters: an API's declared path, query and header parameters, checked right
//! after routing (before any policy runs), with defaults filled in; and the mapping of
//! request parameters, constants and system values onto the backend request.

use http::{HeaderMap, HeaderName, HeaderValue};
use std::borrow::Cow;
use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    Path,
    Query,
    Header,
}

impl Location {
    pub fn as_str(self) -> &'static str {
        match self {
            Location::Path => "path",
            Location::Query => "query",
            Location::Header => "header",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    String,
    Integer,
    Number,
    Boolean,
}

/// One declared parameter. For strings `min`/`max` bound the length in characters, for
/// numbers the value.
#[derive(Debug, Clone)]
pub struct ParamRule {
    pub name: String,
    pub location: Location,
    pub kind: ParamType,
    pub required: bool,
    pub default: Option<String>,
    pub allowed: Vec<String>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub pattern: Option<regex::Regex>,
}

/// Why a request's parameter is refused; the message names the parameter.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{location} parameter `{name}`: {reason}")]
pub struct ParamError {
    pub name: String,
    pub location: &'static str,
    pub reason: String,
}

impl ParamRule {
    /// Whether `value` is acceptable, or why not.
    pub fn check(&self, value: &str) -> Result<(), String> {
        if !self.allowed.is_empty() && !self.allowed.iter().any(|a| a == value) {
            return Err(format!("`{value}` is not one of {}", self.allowed.join(", ")));
        }
        let measure = match self.kind {
            ParamType::String => value.chars().count() as f64,
            ParamType::Integer => {
                value.parse::<i64>().map_err(|_| format!("`{value}` is not an integer"))? as f64
            }
            ParamType::Number => match value.parse::<f64>() {
                Ok(n) if n.is_finite() => n,
                _ => return Err(format!("`{value}` is not a number")),
            },
            ParamType::Boolean if value == "true" || value == "false" => return Ok(()),
            ParamType::Boolean => return Err(format!("`{value}` is not true or false")),
        };
        let unit = if self.kind == ParamType::String { " characters" } else { "" };
        if let Some(min) = self.min
            && measure < min
        {
            return Err(format!("{measure}{unit} is less than the minimum {min}"));
        }
        if let Some(max) = self.max
            && measure > max
        {
            return Err(format!("{measure}{unit} is more than the maximum {max}"));
        }
        if let Some(p) = &self.pattern
            && !p.is_match(value)
        {
            return Err(format!("`{value}` does not match `{}`", p.as_str()));
        }
        Ok(())
    }
}

/// The request's parameters as the checks and the mapping change them.
pub struct RequestParams<'a> {
    pub path: &'a mut Vec<(String, String)>,
    pub query: &'a mut String,
    pub headers: &'a mut HeaderMap,
}

/// `query` without the pairs named `name`; the others keep the client's own encoding.
fn without(query: &str, name: &str) -> String {
    let keep = |pair: &&str| {
        let key = pair.split('=').next().unwrap_or("");
        form_urlencoded::parse(key.as_bytes()).next().is_none_or(|(k, _)| k != name)
    };
    query.split('&').filter(|p| !p.is_empty()).filter(keep).collect::<Vec<_>>().join("&")
}

impl RequestParams<'_> {
    fn get(&self, location: Location, name: &str) -> Option<Cow<'_, str>> {
        match location {
            Location::Path => {
                self.path.iter().find(|(n, _)| n == name).map(|(_, v)| Cow::Borrowed(v.as_str()))
            }
            Location::Query => {
                form_urlencoded::parse(self.query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v)
            }
            Location::Header => self.headers.get(name).map(|v| String::from_utf8_lossy(v.as_bytes())),
        }
    }

    fn set(&mut self, location: Location, name: &str, value: &str) {
        match location {
            Location::Path => match self.path.iter_mut().find(|(n, _)| n == name) {
                Some(slot) => slot.1 = value.to_string(),
                None => self.path.push((name.to_string(), value.to_string())),
            },
            Location::Query => {
                let mut query = without(self.query, name);
                if !query.is_empty() {
                    query.push('&');
                }
                query.extend(form_urlencoded::byte_serialize(name.as_bytes()));
                query.push('=');
                query.extend(form_urlencoded::byte_serialize(value.as_bytes()));
                *self.query = query;
            }
            Location::Header => {
                if let (Ok(n), Ok(v)) =
                    (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value))
                {
                    self.headers.insert(n, v);
                }
            }
        }
    }

    fn remove(&mut self, location: Location, name: &str) {
        match location {
            Location::Path => self.path.retain(|(n, _)| n != name),
            Location::Query => *self.query = without(self.query, name),
            Location::Header => drop(self.headers.remove(name)),
        }
    }

    /// Check every declared parameter; fill in the defaults of absent ones.
    pub fn validate(&mut self, rules: &[ParamRule]) -> Result<(), ParamError> {
        for rule in rules {
            let fail = |reason: String| ParamError {
                name: rule.name.clone(),
                location: rule.location.as_str(),
                reason,
            };
            match self.get(rule.location, &rule.name).map(Cow::into_owned) {
                Some(value) => rule.check(&value).map_err(fail)?,
                None => match &rule.default {
                    Some(d) => self.set(rule.location, &rule.name, d),
                    None if rule.required => return Err(fail("is required".into())),
                    None => {}
                },
            }
        }
        Ok(())
    }

    /// Apply the mapping to the backend request, in order.
    pub fn map(&mut self, rules: &[MapRule], system: &SystemValues<'_>) {
        for rule in rules {
            let value = match &rule.source {
                Source::Param(location, name) => {
                    let Some(v) = self.get(*location, name).map(Cow::into_owned) else { continue };
                    // Moved, not copied: the backend gets it under its new name only.
                    self.remove(*location, name);
                    v
                }
                Source::Constant(v) => v.clone(),
                Source::System(s) => match system.get(*s) {
                    Some(v) => v,
                    None => continue,
                },
            };
            self.set(rule.to.0, &rule.to.1, &value);
        }
    }
}

/// A backend parameter and where its value comes from.
#[derive(Debug, Clone)]
pub struct MapRule {
    pub to: (Location, String),
    pub source: Source,
}

#[derive(Debug, Clone)]
pub enum Source {
    Param(Location, String),
    Constant(String),
    System(SystemValue),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemValue {
    ClientIp,
    RequestId,
    AppId,
    ApiId,
}

/// What system values are for this request.
pub struct SystemValues<'a> {
    pub client_ip: IpAddr,
    pub request_id: &'a str,
    pub app_id: Option<&'a str>,
    pub api_id: &'a str,
}

impl SystemValues<'_> {
    fn get(&self, v: SystemValue) -> Option<String> {
        match v {
            SystemValue::ClientIp => Some(self.client_ip.to_string()),
            SystemValue::RequestId => Some(self.request_id.to_string()),
            SystemValue::AppId => self.app_id.map(str::to_string),
            SystemValue::ApiId => Some(self.api_id.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(kind: ParamType) -> ParamRule {
        ParamRule {
            name: "p".into(),
            location: Location::Query,
            kind,
            required: false,
            default: None,
            allowed: Vec::new(),
            min: None,
            max: None,
            pattern: None,
        }
    }

    #[test]
    fn values_are_checked_by_type_range_enum_and_pattern() {
        let int = ParamRule { min: Some(1.0), max: Some(100.0), ..rule(ParamType::Integer) };
        assert!(int.check("7").is_ok());
        assert_eq!(int.check("x").unwrap_err(), "`x` is not an integer");
        assert_eq!(int.check("101").unwrap_err(), "101 is more than the maximum 100");
        assert_eq!(int.check("0").unwrap_err(), "0 is less than the minimum 1");
        let text = ParamRule {
            max: Some(3.0),
            pattern: Some(regex::Regex::new("^[a-z]+$").unwrap()),
            ..rule(ParamType::String)
        };
        assert_eq!(text.check("abcd").unwrap_err(), "4 characters is more than the maximum 3");
        assert_eq!(text.check("A1").unwrap_err(), "`A1` does not match `^[a-z]+$`");
        let choice = ParamRule { allowed: vec!["asc".into(), "desc".into()], ..rule(ParamType::String) };
        assert_eq!(choice.check("up").unwrap_err(), "`up` is not one of asc, desc");
        assert!(rule(ParamType::Boolean).check("yes").is_err());
        assert!(rule(ParamType::Number).check("1.5e3").is_ok());
        assert!(rule(ParamType::Number).check("NaN").is_err());
    }

    #[test]
    fn defaults_are_filled_in_and_mapping_moves_renames_and_adds() {
        let (mut path, mut query, mut headers) =
            (vec![("id".to_string(), "7".to_string())], "a=1&b=x+y".to_string(), HeaderMap::new());
        headers.insert("x-tenant", HeaderValue::from_static("blue"));
        let mut p = RequestParams { path: &mut path, query: &mut query, headers: &mut headers };
        let limit =
            ParamRule { name: "limit".into(), default: Some("20".into()), ..rule(ParamType::Integer) };
        let need = ParamRule {
            name: "must".into(),
            required: true,
            location: Location::Header,
            ..rule(ParamType::String)
        };
        p.validate(std::slice::from_ref(&limit)).unwrap();
        assert_eq!(p.validate(&[need]).unwrap_err().to_string(), "header parameter `must`: is required");
        let rules = [
            MapRule {
                to: (Location::Query, "user".into()),
                source: Source::Param(Location::Path, "id".into()),
            },
            MapRule {
                to: (Location::Header, "x-b".into()),
                source: Source::Param(Location::Query, "b".into()),
            },
            MapRule {
                to: (Location::Query, "t".into()),
                source: Source::Param(Location::Header, "x-tenant".into()),
            },
            MapRule { to: (Location::Header, "x-ver".into()), source: Source::Constant("v2".into()) },
            MapRule { to: (Location::Header, "x-ip".into()), source: Source::System(SystemValue::ClientIp) },
            MapRule { to: (Location::Header, "x-app".into()), source: Source::System(SystemValue::AppId) },
        ];
        let system =
            SystemValues { client_ip: [10, 0, 0, 1].into(), request_id: "r", app_id: None, api_id: "a" };
        p.map(&rules, &system);
        assert_eq!(query, "a=1&limit=20&user=7&t=blue");
        assert_eq!((headers["x-b"].to_str().unwrap(), headers["x-ver"].to_str().unwrap()), ("x y", "v2"));
        assert_eq!(headers["x-ip"], "10.0.0.1");
        assert!(!headers.contains_key("x-tenant") && !headers.contains_key("x-app"));
        assert!(path.is_empty());
    }
}
