//! `wasmgate:plugin/credentials`: apps and their keys, from the config. A lookup answers for
//! the one key the caller presented, with whether that app may call the API being served;
//! nothing lists or enumerates credentials.

use crate::HostState;
use crate::bindings::wasmgate::plugin::credentials::{Credential, Host};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// One app as the gateway's config defines it.
pub struct App {
    pub id: String,
    pub secret: String,
    /// API ids and group ids this app is authorised for.
    pub apis: Vec<String>,
    pub groups: Vec<String>,
}

impl fmt::Debug for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Secrets are never printed.
        f.debug_struct("App")
            .field("id", &self.id)
            .field("apis", &self.apis)
            .field("groups", &self.groups)
            .finish()
    }
}

/// All credentials, indexed by access key and by AppCode. Replaced whole on reload.
#[derive(Default, Debug)]
pub struct CredentialStore {
    by_key: HashMap<String, Arc<App>>,
    by_code: HashMap<String, Arc<App>>,
}

impl CredentialStore {
    pub fn insert(&mut self, key: String, app_code: Option<String>, app: App) {
        let app = Arc::new(app);
        if let Some(code) = app_code {
            self.by_code.insert(code, app.clone());
        }
        self.by_key.insert(key, app);
    }
}

impl HostState {
    fn credential(&self, app: Option<&Arc<App>>) -> Option<Credential> {
        let app = app?;
        let authorized = app.apis.contains(&self.route_api) || app.groups.contains(&self.route_group);
        Some(Credential { app_id: app.id.clone(), secret: app.secret.clone(), authorized })
    }
}

impl Host for HostState {
    fn by_key(&mut self, key: String) -> Option<Credential> {
        let store = self.caps.credentials.load();
        self.credential(store.by_key.get(&key))
    }

    fn by_app_code(&mut self, code: String) -> Option<Credential> {
        let store = self.caps.credentials.load();
        self.credential(store.by_code.get(&code))
    }
}
