//! How a whole gateway configuration (the YAML file's document, as JSON) is kept as store
//! resources, and put back together. One resource per thing an operator manages on its own:
//! each group (without its APIs), API (naming its group), named policy, credential, custom
//! plugin and certificate; the listeners and the `gateway` section are settings.
//!
//! Groups, APIs, credentials, certificates and environments come back in id order; their
//! order in a file carries no meaning (routes are matched by specificity). Everything else
//! comes back as it was stored.

use crate::{Kind, Resource};
use serde_json::{Map, Value};

/// The settings resources' ids.
const LISTENERS: &str = "listeners";
const GATEWAY: &str = "gateway";
/// The field an API's resource names its group in (not part of the file's API entry).
const GROUP: &str = "group";

/// Why a document cannot be split.
#[derive(Debug, thiserror::Error)]
#[error("{at}: {message}")]
pub struct LayoutError {
    pub at: String,
    pub message: String,
}

fn fail<T>(at: impl Into<String>, message: &str) -> Result<T, LayoutError> {
    Err(LayoutError { at: at.into(), message: message.into() })
}

fn id_of(item: &Value, field: &str, at: String) -> Result<String, LayoutError> {
    match item.get(field).and_then(Value::as_str) {
        Some(id) => Ok(id.to_string()),
        None => fail(at, &format!("has no string `{field}`")),
    }
}

/// The resources a configuration document is made of.
pub fn split(config: &Value) -> Result<Vec<Resource>, LayoutError> {
    let Some(top) = config.as_object() else { return fail("config", "is not a mapping") };
    let mut out = Vec::new();
    for (section, value) in top {
        match section.as_str() {
            LISTENERS | GATEWAY => out.push((Kind::Setting, section.clone(), value.clone())),
            "plugins" | "policies" | "channels" => {
                let kind = match section.as_str() {
                    "plugins" => Kind::Plugin,
                    "policies" => Kind::Policy,
                    _ => Kind::Channel,
                };
                let Some(map) = value.as_object() else { return fail(section.as_str(), "is not a mapping") };
                out.extend(map.iter().map(|(name, v)| (kind, name.clone(), v.clone())));
            }
            "credentials" | "certificates" | "environments" => {
                let (kind, key) = match section.as_str() {
                    "credentials" => (Kind::Credential, "id"),
                    "certificates" => (Kind::Certificate, "name"),
                    _ => (Kind::Environment, "name"),
                };
                for (i, item) in list(value, section)?.iter().enumerate() {
                    out.push((kind, id_of(item, key, format!("{section}[{i}]"))?, item.clone()));
                }
            }
            "groups" => {
                for (i, group) in list(value, section)?.iter().enumerate() {
                    let gid = id_of(group, "id", format!("groups[{i}]"))?;
                    let mut group = group.clone();
                    let apis = group.as_object_mut().and_then(|g| g.remove("apis"));
                    for (j, api) in
                        apis.as_ref().map(|a| list(a, "apis")).transpose()?.unwrap_or(&[]).iter().enumerate()
                    {
                        let id = id_of(api, "id", format!("groups[{i}].apis[{j}]"))?;
                        let mut api = api.clone();
                        if let Some(fields) = api.as_object_mut() {
                            fields.insert(GROUP.into(), Value::String(gid.clone()));
                        }
                        out.push((Kind::Api, id, api));
                    }
                    out.push((Kind::Group, gid, group));
                }
            }
            other => return fail(other, "is not a config section"),
        }
    }
    Ok(out)
}

fn list<'a>(value: &'a Value, at: &str) -> Result<&'a [Value], LayoutError> {
    match value.as_array() {
        Some(items) => Ok(items),
        None => fail(at, "is not a list"),
    }
}

/// The configuration document these resources make, in the file's layout.
pub fn assemble(resources: &[Resource]) -> Result<Value, LayoutError> {
    let mut top = Map::new();
    let mut plugins = Map::new();
    let mut policies = Map::new();
    let mut channels = Map::new();
    let (mut credentials, mut certificates, mut environments) = (Vec::new(), Vec::new(), Vec::new());
    let mut groups: Vec<(String, Value)> = Vec::new();
    let mut apis: Vec<(String, String, Value)> = Vec::new();
    for (kind, id, body) in resources {
        match kind {
            Kind::Setting if id == LISTENERS || id == GATEWAY => {
                top.insert(id.clone(), body.clone());
            }
            Kind::Plugin => drop(plugins.insert(id.clone(), body.clone())),
            Kind::Policy => drop(policies.insert(id.clone(), body.clone())),
            Kind::Channel => drop(channels.insert(id.clone(), body.clone())),
            Kind::Credential => credentials.push((id.clone(), body.clone())),
            Kind::Certificate => certificates.push((id.clone(), body.clone())),
            Kind::Environment => environments.push((id.clone(), body.clone())),
            Kind::Group => groups.push((id.clone(), body.clone())),
            Kind::Api => {
                let mut api = body.clone();
                let group = api.as_object_mut().and_then(|a| a.remove(GROUP));
                let Some(Value::String(group)) = group else {
                    return fail(format!("api `{id}`"), "names no group");
                };
                apis.push((group, id.clone(), api));
            }
            Kind::Setting => {}
        }
    }
    groups.sort_by(|a, b| a.0.cmp(&b.0));
    apis.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    if let Some((_, api, _)) = apis.iter().find(|(g, ..)| !groups.iter().any(|(id, _)| id == g)) {
        return fail(format!("api `{api}`"), "names a group that does not exist");
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(gid, mut group)| {
            let mine = apis.iter().filter(|(g, ..)| *g == gid).map(|(.., api)| api.clone()).collect();
            if let Some(fields) = group.as_object_mut() {
                fields.insert("apis".into(), Value::Array(mine));
            }
            group
        })
        .collect();
    let sorted = |mut items: Vec<(String, Value)>| {
        items.sort_by(|a, b| a.0.cmp(&b.0));
        Value::Array(items.into_iter().map(|(_, v)| v).collect())
    };
    top.insert("plugins".into(), Value::Object(plugins));
    top.insert("policies".into(), Value::Object(policies));
    top.insert("channels".into(), Value::Object(channels));
    top.insert("credentials".into(), sorted(credentials));
    top.insert("certificates".into(), sorted(certificates));
    top.insert("environments".into(), sorted(environments));
    top.insert("groups".into(), Value::Array(groups));
    Ok(Value::Object(top))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_config_splits_into_resources_and_comes_back_whole() {
        let config = json!({
            "listeners": [{"address": "127.0.0.1:0"}],
            "gateway": {"environment": "RELEASE"},
            "plugins": {"mine": {"path": "/p/mine.wasm"}},
            "policies": {"slow": {"plugin": "cors", "config": {"max_age": 5}}},
            "channels": {"users": {"members": [{"address": "10.0.0.1:80", "weight": 2}]}},
            "credentials": [{"id": "b", "key": "k2", "secret": "s"}, {"id": "a", "key": "k1", "secret": "s"}],
            "certificates": [{"name": "c", "cert": "/c.pem", "key": "/k.pem"}],
            "environments": [{"name": "TEST", "variables": {"HOST": "t.example"}}],
            "groups": [
                {"id": "g2", "domains": [], "apis": [{"id": "z", "path": "/z"}, {"id": "y", "path": "/y"}]},
                {"id": "g1", "domains": ["a.example"], "apis": []},
            ],
        });
        let resources = split(&config).unwrap();
        let api_y = resources.iter().find(|(k, id, _)| *k == Kind::Api && id == "y").unwrap();
        assert_eq!(api_y.2, json!({"id": "y", "path": "/y", "group": "g2"}));
        assert_eq!(resources.iter().filter(|(k, ..)| *k == Kind::Group).count(), 2);

        let back = assemble(&resources).unwrap();
        assert_eq!(back["groups"][0]["id"], "g1", "groups in id order");
        assert_eq!(back["groups"][1]["apis"], json!([{"id": "y", "path": "/y"}, {"id": "z", "path": "/z"}]));
        assert_eq!(back["credentials"][0]["id"], "a");
        for section in
            ["listeners", "gateway", "plugins", "policies", "channels", "certificates", "environments"]
        {
            assert_eq!(back[section], config[section], "{section}");
        }
    }

    #[test]
    fn what_cannot_be_laid_out_is_named() {
        let e = split(&json!({"groups": [{"apis": []}]})).unwrap_err();
        assert_eq!(e.to_string(), "groups[0]: has no string `id`");
        assert!(split(&json!({"nonsense": 1})).is_err());
        let orphan = [(Kind::Api, "a".to_string(), json!({"id": "a", "group": "gone"}))];
        assert_eq!(assemble(&orphan).unwrap_err().to_string(), "api `a`: names a group that does not exist");
    }
}
