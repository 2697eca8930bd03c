//! What a plugin component says about itself, read without compiling it: its
//! `wasmgate-manifest` custom section (name, version, language, the JSON Schema of its
//! config) and its imports and exports (the contract version, the capabilities it uses).
//!
//! The Rust SDK's `manifest!` puts the section in the core module; the Python and JS build
//! scripts append it to the component. Either is found.

use std::sync::Arc;

/// The custom section holding a plugin's manifest (JSON).
pub const SECTION: &str = "wasmgate-manifest";

#[derive(Debug, Default, serde::Deserialize)]
struct Section {
    name: Option<String>,
    version: Option<String>,
    language: Option<String>,
    config_schema: Option<serde_json::Value>,
}

/// A plugin's self-description.
#[derive(Default)]
pub struct PluginInfo {
    pub name: Option<String>,
    pub version: Option<String>,
    /// `rust`, `python`, `javascript`, as its SDK says.
    pub language: Option<String>,
    /// What the component imports, by interface name (`wasmgate:plugin/counters@0.2.0`,
    /// `wasi:io/streams@0.2.6`).
    pub imports: Vec<String>,
    /// What it exports, likewise (`wasmgate:plugin/policy@0.2.0`).
    pub exports: Vec<String>,
    pub config_schema: Option<serde_json::Value>,
    /// The schema, compiled once when the component is loaded.
    pub(crate) validator: Option<Arc<jsonschema::Validator>>,
}

impl std::fmt::Debug for PluginInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginInfo")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("contract", &self.contract())
            .finish_non_exhaustive()
    }
}

impl PluginInfo {
    /// Read a component's description; an error says what is malformed (the component's
    /// binary, the manifest's JSON, or its schema).
    pub fn read(bytes: &[u8]) -> Result<PluginInfo, String> {
        let mut info = PluginInfo::default();
        let mut section = None;
        let mut depth = 0usize;
        for payload in wasmparser::Parser::new(0).parse_all(bytes) {
            use wasmparser::Payload::*;
            match payload.map_err(|e| format!("not a WebAssembly component: {e}"))? {
                ModuleSection { .. } | ComponentSection { .. } => depth += 1,
                End(_) => depth = depth.saturating_sub(1),
                CustomSection(c) if c.name() == SECTION && section.is_none() => {
                    let parsed: Section = serde_json::from_slice(c.data())
                        .map_err(|e| format!("its {SECTION} section is not valid: {e}"))?;
                    section = Some(parsed);
                }
                ComponentImportSection(imports) if depth == 0 => {
                    for import in imports {
                        let import = import.map_err(|e| format!("not a WebAssembly component: {e}"))?;
                        info.imports.push(import.name.name.to_string());
                    }
                }
                ComponentExportSection(exports) if depth == 0 => {
                    for export in exports {
                        let export = export.map_err(|e| format!("not a WebAssembly component: {e}"))?;
                        info.exports.push(export.name.name.to_string());
                    }
                }
                _ => {}
            }
        }
        let section = section.unwrap_or_default();
        if let Some(schema) = &section.config_schema {
            let validator = jsonschema::validator_for(schema)
                .map_err(|e| format!("its config schema is not a valid JSON Schema: {e}"))?;
            info.validator = Some(Arc::new(validator));
        }
        info.name = section.name;
        info.version = section.version;
        info.language = section.language;
        info.config_schema = section.config_schema;
        Ok(info)
    }

    /// The version of `wasmgate:plugin` it was built against (`0.2.0`): its policy export's.
    pub fn contract(&self) -> Option<&str> {
        self.exports.iter().find_map(|name| name.strip_prefix("wasmgate:plugin/policy@"))
    }

    /// The Wasmgate capabilities it imports (`counters`, `kv`, ...; not the shared `types`).
    pub fn capabilities(&self) -> impl Iterator<Item = &str> {
        self.imports.iter().filter_map(|name| {
            let rest = name.strip_prefix("wasmgate:plugin/")?;
            Some(rest.split_once('@').map_or(rest, |(interface, _)| interface)).filter(|i| *i != "types")
        })
    }

    /// Check a binding's config against the plugin's schema, if it declares one; the error
    /// names the field (`variants.beta`, `rules[2]`) as the plugin's own check would.
    pub fn check_config(&self, config: &serde_json::Value) -> Result<(), (String, String)> {
        let Some(validator) = &self.validator else { return Ok(()) };
        match validator.validate(config) {
            Ok(()) => Ok(()),
            Err(e) => Err((field_path(&e.instance_path().to_string()), e.to_string())),
        }
    }
}

/// A JSON pointer (`/rules/2/when`) as the gateway names fields (`rules[2].when`).
fn field_path(pointer: &str) -> String {
    let mut out = String::new();
    for part in pointer.split('/').skip(1) {
        let part = part.replace("~1", "/").replace("~0", "~");
        if !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&part);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A component with only a manifest section and no imports: enough for the reader.
    fn component_with(manifest: &str) -> Vec<u8> {
        let mut bytes = b"\0asm\x0d\0\x01\0".to_vec();
        let name = SECTION.as_bytes();
        let leb = |mut n: usize, out: &mut Vec<u8>| loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            out.push(if n > 0 { b | 0x80 } else { b });
            if n == 0 {
                break;
            }
        };
        let body_len = 1 + name.len() + manifest.len();
        bytes.push(0);
        leb(body_len, &mut bytes);
        leb(name.len(), &mut bytes);
        bytes.extend(name);
        bytes.extend(manifest.as_bytes());
        bytes
    }

    #[test]
    fn reads_the_manifest_and_checks_configs_against_its_schema() {
        let schema = r#"{"type":"object","required":["n"],"properties":{"n":{"type":"integer"},"l":{"type":"array","items":{"type":"string"}}}}"#;
        let bytes = component_with(&format!(r#"{{"name":"p","version":"1.2.0","config_schema":{schema}}}"#));
        let info = PluginInfo::read(&bytes).unwrap();
        assert_eq!((info.name.as_deref(), info.version.as_deref()), (Some("p"), Some("1.2.0")));
        assert_eq!(info.check_config(&json!({"n": 3, "l": ["a"]})), Ok(()));
        let (field, message) = info.check_config(&json!({"n": 3, "l": ["a", 7]})).unwrap_err();
        assert_eq!(field, "l[1]");
        assert!(message.contains("is not of type \"string\""), "{message}");
        let (field, message) = info.check_config(&json!({})).unwrap_err();
        assert_eq!(field, "");
        assert!(message.contains("\"n\" is a required property"), "{message}");
    }

    #[test]
    fn a_plugin_without_manifest_accepts_any_config_and_a_bad_manifest_is_named() {
        let info = PluginInfo::read(b"\0asm\x0d\0\x01\0").unwrap();
        assert!(info.name.is_none() && info.check_config(&json!({"any": 1})).is_ok());
        let e = PluginInfo::read(&component_with(r#"{"config_schema":{"type":7}}"#)).unwrap_err();
        assert!(e.contains("not a valid JSON Schema"), "{e}");
        let e = PluginInfo::read(&component_with("{nope")).unwrap_err();
        assert!(e.contains("wasmgate-manifest section is not valid"), "{e}");
    }

    #[test]
    fn field_paths_read_like_the_plugins_own() {
        assert_eq!(field_path(""), "");
        assert_eq!(field_path("/rules/2/when"), "rules[2].when");
        assert_eq!(field_path("/variants/a~1b"), "variants.a/b");
    }
}
