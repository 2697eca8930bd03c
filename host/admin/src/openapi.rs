//! OpenAPI 3.0 documents in and out of a group. Import makes one API draft per operation
//! (path, method, name, declared parameters) with the backend the operator chose, and reports
//! what it skipped and why; export describes a group's APIs.

use serde_json::{Map, Value, json};

/// Larger documents are refused.
pub const MAX_DOCUMENT: usize = 100 * 1024;

const METHODS: [&str; 7] = ["get", "put", "post", "delete", "options", "head", "patch"];

/// What an import makes of a document.
#[derive(Debug, Default)]
pub struct Import {
    /// (API id, draft) in document order.
    pub apis: Vec<(String, Value)>,
    /// `{path, method, reason}` for each operation (or path) left out, or part of one.
    pub skipped: Vec<Value>,
}

/// Read an OpenAPI 3.0 document (YAML or JSON) into API drafts in `group`, each with
/// `backend`. `taken`: the group of an API id that exists already.
pub fn import(
    document: &str,
    group: &str,
    backend: &Value,
    taken: &dyn Fn(&str) -> Option<String>,
) -> Result<Import, String> {
    let doc: Value = if document.trim_start().starts_with('{') {
        serde_json::from_str(document).map_err(|e| format!("not JSON: {e}"))?
    } else {
        wasmgate_config::check_yaml_nesting(document)?;
        serde_norway::from_str(document).map_err(|e| format!("not YAML: {e}"))?
    };
    let version = doc.get("openapi").and_then(Value::as_str).unwrap_or("");
    if !version.starts_with("3.0") {
        let found =
            doc.get("swagger").map_or_else(|| format!("openapi: `{version}`"), |v| format!("swagger: {v}"));
        return Err(format!("not an OpenAPI 3.0 document ({found})"));
    }
    let Some(paths) = doc.get("paths").and_then(Value::as_object) else {
        return Err("the document has no `paths`".into());
    };
    let mut out = Import::default();
    let skip = |out: &mut Import, path: &str, method: &str, reason: &str| {
        out.skipped.push(json!({"path": path, "method": method, "reason": reason}));
    };
    for (path, item) in paths {
        let Some(item) = item.as_object() else { continue };
        if item.contains_key("$ref") {
            skip(&mut out, path, "", "path items by $ref are not supported");
            continue;
        }
        if item.contains_key("trace") {
            skip(&mut out, path, "trace", "TRACE is not a method APIs can have");
        }
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            if let Err(reason) = template(path) {
                skip(&mut out, path, method, &reason);
                continue;
            }
            let id = match op.get("operationId").map(|id| slug(id.as_str().unwrap_or(""))) {
                Some(op_id) if !op_id.is_empty() => op_id,
                _ => slug(&format!("{method}{}", slug(path))),
            };
            let holder =
                taken(&id).or_else(|| out.apis.iter().any(|(other, _)| *other == id).then(|| group.into()));
            if let Some(holder) = holder {
                let reason = format!("an API with the id `{id}` exists already (in group `{holder}`)");
                skip(&mut out, path, method, &reason);
                continue;
            }
            let parameters =
                parameters(path, method, [item.get("parameters"), op.get("parameters")], &mut out);
            let name = op.get("summary").and_then(Value::as_str).unwrap_or("");
            let mut api = json!({"id": id, "group": group, "name": name,
                                 "method": method.to_ascii_uppercase(), "path": path, "backend": backend});
            if !parameters.is_empty() {
                api["parameters"] = Value::Array(parameters);
            }
            out.apis.push((id.clone(), api));
        }
    }
    Ok(out)
}

/// An operation's parameters (the path item's, then the operation's, which override them by
/// name and place) as the API's declared parameters: name, place, type, required, default,
/// enum, bounds and pattern. What cannot be declared (cookies, `$ref`s) is reported skipped.
fn parameters(path: &str, method: &str, lists: [Option<&Value>; 2], out: &mut Import) -> Vec<Value> {
    let mut declared: Vec<Value> = Vec::new();
    for p in lists.into_iter().flatten().filter_map(Value::as_array).flatten() {
        let field = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or("");
        let (name, place) = (field("name"), field("in"));
        let reason = match place {
            _ if p.get("$ref").is_some() => Some("parameters by $ref are not resolved".to_string()),
            "path" | "query" | "header" if !name.is_empty() => None,
            _ => Some(format!("`{name}` ({place}): only path, query and header parameters can be declared")),
        };
        if let Some(reason) = reason {
            out.skipped.push(json!({"path": path, "method": method, "reason": reason}));
            continue;
        }
        let schema = p.get("schema").cloned().unwrap_or(Value::Null);
        let kind = schema
            .get("type")
            .and_then(Value::as_str)
            .filter(|t| matches!(*t, "integer" | "number" | "boolean"))
            .unwrap_or("string");
        let number = |k: &str| schema.get(k).and_then(Value::as_f64);
        let (min, max) = if kind == "string" {
            (number("minLength"), number("maxLength"))
        } else {
            (number("minimum"), number("maximum"))
        };
        let mut d = json!({"name": name, "in": place, "type": kind,
                           "required": place == "path" || p.get("required") == Some(&Value::Bool(true))});
        let scalar = |v: &Value| match v {
            Value::String(s) => Some(Value::String(s.clone())),
            Value::Number(_) | Value::Bool(_) => Some(Value::String(v.to_string())),
            _ => None,
        };
        if let Some(v) = schema.get("default").and_then(scalar) {
            d["default"] = v;
        }
        if let Some(list) = schema.get("enum").and_then(Value::as_array) {
            d["enum"] = list.iter().filter_map(scalar).collect();
        }
        if let Some(v) = min {
            d["min"] = json!(v);
        }
        if let Some(v) = max {
            d["max"] = json!(v);
        }
        if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
            d["pattern"] = json!(pattern);
        }
        declared.retain(|o| !(o["name"] == d["name"] && o["in"] == d["in"]));
        declared.push(d);
    }
    declared
}

/// Path templates the router takes: each `{name}` is a whole segment.
fn template(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("`{path}` does not start with /"));
    }
    for segment in path.split('/') {
        let braces = segment.contains('{') || segment.contains('}');
        let whole = segment.starts_with('{') && segment.ends_with('}') && segment.matches('{').count() == 1;
        if braces && !whole {
            return Err(format!("`{segment}`: a path parameter must be a whole segment"));
        }
    }
    Ok(())
}

/// An API id from free text: letters, digits, `_` and `-`; anything else becomes `-`.
/// An API id (`wasmgate_config::check_id`) from free text: other characters become `-`, and
/// it starts with a letter or digit and has at most 128 of them.
fn slug(text: &str) -> String {
    let s: String = text
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '-' })
        .collect();
    let s = s.trim_start_matches(['-', '_']);
    s[..s.len().min(128)].trim_end_matches('-').to_string()
}

/// An OpenAPI 3.0 description of a group's APIs (`ANY` is described as each method).
pub fn export(group: &str, apis: &[Value]) -> Value {
    let mut paths = Map::new();
    for api in apis {
        let id = api.get("id").and_then(Value::as_str).unwrap_or("");
        let raw_path = api.get("path").and_then(Value::as_str).unwrap_or("/");
        // `{rest+}` (the rest of the path) has no OpenAPI form; it is described as one segment.
        let path = raw_path.replace("+}", "}");
        let methods: Vec<String> = match api.get("method") {
            Some(Value::String(m)) if !m.eq_ignore_ascii_case("ANY") => vec![m.to_ascii_lowercase()],
            Some(Value::Array(list)) => {
                list.iter().filter_map(Value::as_str).map(str::to_ascii_lowercase).collect()
            }
            _ => METHODS.iter().map(|m| m.to_string()).collect(),
        };
        let parameters: Vec<Value> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let item = paths.entry(path.clone()).or_insert_with(|| json!({}));
        let several = methods.len() > 1;
        for m in methods {
            let op_id = if several { format!("{id}-{m}") } else { id.to_string() };
            let mut op = json!({"operationId": op_id, "responses": {"default": {"description": "The backend's answer"}}});
            if let Some(name) = api.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()) {
                op["summary"] = json!(name);
            }
            if !parameters.is_empty() {
                op["parameters"] = json!(parameters);
            }
            item[m] = op;
        }
    }
    json!({"openapi": "3.0.3", "info": {"title": group, "version": "1"}, "paths": paths})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_the_router_cannot_take_are_named() {
        assert!(template("/pets/{petId}").is_ok());
        assert!(template("/files/{name}.json").unwrap_err().contains("whole segment"));
        assert!(template("pets").is_err());
        assert_eq!(slug("list pets!"), "list-pets");
        assert_eq!(slug("__private"), "private");
        assert_eq!(slug(&"x".repeat(200)).len(), 128);
        for text in ["list pets!", "__private", "get/pets/{id}", "ünïcode"] {
            let id = slug(text);
            assert!(id.is_empty() || wasmgate_config::check_id(&id).is_ok(), "{text} -> {id}");
        }
    }
}
