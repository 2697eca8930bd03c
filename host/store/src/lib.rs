//! Wasmgate's persistent store: what operators create through the admin API, kept in
//! embedded SQLite (a file, no server; the default) or in PostgreSQL (shared by the gateways of
//! a cluster), chosen by the URL.
//!
//! Every resource is a JSON document keyed by kind and id, with a revision counting its writes
//! (the admin API's ETag). Documents are the config crate's own serde structs, checked by the
//! same validation as the YAML file before they are written, so the two ways of configuring
//! cannot drift apart, and SQLite and PostgreSQL share one schema and one code path (sqlx's
//! `Any` driver). Migrations in `migrations/` are applied at open.
//!
//! Every write also bumps a single generation number in the same transaction. Writers queue on
//! that row, which makes check-then-write sequences inside a transaction safe on both
//! databases; gateways poll it to learn that the store changed.
#![forbid(unsafe_code)]

pub mod layout;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Row, Transaction};
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported store URL `{0}`: use sqlite://PATH or postgres://USER@HOST:PORT/DB")]
    Url(String),
    #[error("{kind} `{id}` does not exist")]
    NotFound { kind: Kind, id: String },
    #[error("{kind} `{id}` already exists")]
    Exists { kind: Kind, id: String },
    #[error("{kind} `{id}` is at revision {current}, not {expected}: it changed since it was read")]
    Conflict { kind: Kind, id: String, current: i64, expected: i64 },
    #[error("stored {kind} `{id}` is not valid JSON: {reason}")]
    Corrupt { kind: Kind, id: String, reason: String },
    #[error("store: {0}")]
    Database(#[from] sqlx::Error),
    #[error("store schema migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("the configuration changed while this change was being checked")]
    Moved,
}

/// What a resource is. Stored as its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Group,
    Api,
    Policy,
    Credential,
    Environment,
    Plugin,
    Certificate,
    /// A load-balance channel (members, balancing, health checks).
    Channel,
    /// Gateway-wide settings (listeners, limits, ...), one document per section.
    Setting,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::Group,
        Kind::Api,
        Kind::Policy,
        Kind::Credential,
        Kind::Environment,
        Kind::Plugin,
        Kind::Certificate,
        Kind::Channel,
        Kind::Setting,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Group => "group",
            Kind::Api => "api",
            Kind::Policy => "policy",
            Kind::Credential => "credential",
            Kind::Environment => "environment",
            Kind::Plugin => "plugin",
            Kind::Certificate => "certificate",
            Kind::Channel => "channel",
            Kind::Setting => "setting",
        }
    }

    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A resource as the config layout handles it (see [`layout`]).
pub type Resource = (Kind, String, Value);

/// One stored resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub kind: Kind,
    pub id: String,
    pub body: Value,
    /// 1 when created, +1 per write.
    pub revision: i64,
    pub updated_at_ms: i64,
}

/// How many publications are kept per API and environment (older ones are pruned, never
/// the one being served).
pub const HISTORY: i64 = 10;

/// One publication of an API in an environment.
#[derive(Debug, Clone, PartialEq)]
pub struct Publication {
    pub api_id: String,
    pub environment: String,
    pub version: i64,
    pub description: String,
    pub published_at_ms: i64,
    /// The API's definition as published.
    pub body: Value,
    /// Whether the environment serves this one now.
    pub current: bool,
}

impl Record {
    pub fn into_resource(self) -> Resource {
        (self.kind, self.id, self.body)
    }
}

/// What a write expects to find: the optimistic-concurrency check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Create or overwrite.
    Any,
    /// Create only.
    Absent,
    /// Overwrite (or delete) only this revision.
    Revision(i64),
}

pub struct Store {
    pool: AnyPool,
    /// Set on a handle from [`Store::since`]: its writes need the generation to be this.
    since: Option<i64>,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl Store {
    /// Open (creating an SQLite file if needed) and bring the schema up to date.
    /// `sqlite://PATH` or `postgres://...`.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let url = if let Some(path) = url.strip_prefix("sqlite://") {
            // `mode=rwc`: create the file on first use.
            format!("sqlite://{path}?mode=rwc")
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            url.to_string()
        } else {
            return Err(StoreError::Url(url.to_string()));
        };
        let pool = AnyPoolOptions::new().max_connections(8).connect(&url).await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Store { pool, since: None })
    }

    /// A handle whose writes are made only if nothing was written since `generation` (else
    /// [`StoreError::Moved`]): for a change checked against the whole configuration as it
    /// was at `generation`, so two changes each valid alone cannot together store a
    /// configuration that fails to load.
    pub fn since(&self, generation: i64) -> Store {
        Store { pool: self.pool.clone(), since: Some(generation) }
    }

    /// Changes whenever anything is written; compare to see whether to reload.
    pub async fn generation(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query("SELECT value FROM generation WHERE id = 1")
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?)
    }

    pub async fn get(&self, kind: Kind, id: &str) -> Result<Record, StoreError> {
        let row = sqlx::query(
            "SELECT id, body, revision, updated_at_ms FROM resources WHERE kind = $1 AND id = $2",
        )
        .bind(kind.as_str())
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => record(kind, &row, 0),
            None => Err(StoreError::NotFound { kind, id: id.to_string() }),
        }
    }

    /// Up to `limit` resources of a kind in id order, starting after the id `after` (the
    /// last id of the previous page).
    pub async fn list(&self, kind: Kind, after: Option<&str>, limit: u32) -> Result<Vec<Record>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, body, revision, updated_at_ms FROM resources \
             WHERE kind = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(kind.as_str())
        .bind(after.unwrap_or(""))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| record(kind, row, 0)).collect()
    }

    /// The generation and every resource, as of (at least) that generation: a gateway's
    /// whole configuration. The generation is read first, so a write landing in between makes
    /// the content newer than the number, never older; the next comparison reloads again.
    pub async fn everything(&self) -> Result<(i64, Vec<Record>), StoreError> {
        let generation = self.generation().await?;
        let rows =
            sqlx::query("SELECT kind, id, body, revision, updated_at_ms FROM resources ORDER BY kind, id")
                .fetch_all(&self.pool)
                .await?;
        let records = rows.iter().map(|row| {
            let kind: String = row.try_get(0)?;
            let Some(kind) = Kind::parse(&kind) else {
                let id = row.try_get(1)?;
                return Err(StoreError::Corrupt {
                    kind: Kind::Setting,
                    id,
                    reason: format!("unknown kind `{kind}`"),
                });
            };
            record(kind, row, 1)
        });
        Ok((generation, records.collect::<Result<_, _>>()?))
    }

    /// Write one resource if `expect` holds; returns it as stored.
    pub async fn put(
        &self,
        kind: Kind,
        id: &str,
        body: &Value,
        expect: Expect,
    ) -> Result<Record, StoreError> {
        let mut tx = self.write().await?;
        let record = put_in(&mut tx, kind, id, body, expect).await?;
        tx.commit().await?;
        Ok(record)
    }

    /// Create all of these or, if any exists, none.
    pub async fn create_all(&self, resources: &[Resource]) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        for (kind, id, body) in resources {
            put_in(&mut tx, *kind, id, body, Expect::Absent).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn delete(&self, kind: Kind, id: &str, expect: Expect) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        let current = revision_in(&mut tx, kind, id).await?;
        check(kind, id, current, expect)?;
        if current.is_none() {
            return Err(StoreError::NotFound { kind, id: id.to_string() });
        }
        sqlx::query("DELETE FROM resources WHERE kind = $1 AND id = $2")
            .bind(kind.as_str())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Make the store hold exactly these resources and serve exactly these publications
    /// (API id, environment, definition), in one transaction: a YAML import. Earlier
    /// publications stay in the history.
    pub async fn replace_all(
        &self,
        resources: &[Resource],
        publish: &[(String, String, Value)],
        description: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        sqlx::query("DELETE FROM resources").execute(&mut *tx).await?;
        sqlx::query("DELETE FROM deployments").execute(&mut *tx).await?;
        for (kind, id, body) in resources {
            put_in(&mut tx, *kind, id, body, Expect::Absent).await?;
        }
        for (api_id, environment, body) in publish {
            publish_in(&mut tx, api_id, environment, description, body).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Keep an uploaded plugin component; returns its SHA-256 in hex, the name a plugin's
    /// `sha256` gives it. The same bytes stored twice are kept once.
    pub async fn put_component(&self, bytes: &[u8]) -> Result<String, StoreError> {
        let sha256 = hex::encode(Sha256::digest(bytes));
        sqlx::query(
            "INSERT INTO components (sha256, size, created_at_ms, body) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (sha256) DO NOTHING",
        )
        .bind(&sha256)
        .bind(bytes.len() as i64)
        .bind(now_ms())
        .bind(BASE64.encode(bytes))
        .execute(&self.pool)
        .await?;
        Ok(sha256)
    }

    /// An uploaded component's bytes, checked against their hash.
    pub async fn component(&self, sha256: &str) -> Result<Vec<u8>, StoreError> {
        let not_found = || StoreError::NotFound { kind: Kind::Plugin, id: format!("component {sha256}") };
        let row = sqlx::query("SELECT body FROM components WHERE sha256 = $1")
            .bind(sha256)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(not_found)?;
        let corrupt = |reason: String| StoreError::Corrupt {
            kind: Kind::Plugin,
            id: format!("component {sha256}"),
            reason,
        };
        let bytes = BASE64.decode(row.try_get::<String, _>(0)?).map_err(|e| corrupt(e.to_string()))?;
        if hex::encode(Sha256::digest(&bytes)) != sha256 {
            return Err(corrupt("its bytes do not match its SHA-256".into()));
        }
        Ok(bytes)
    }

    /// A value the gateway keeps for itself (not part of the configuration).
    pub async fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        let row =
            sqlx::query("SELECT value FROM meta WHERE key = $1").bind(key).fetch_optional(&self.pool).await?;
        Ok(match row {
            Some(row) => Some(row.try_get(0)?),
            None => None,
        })
    }

    /// Set `key` unless it is set already (by this or another gateway); whether it was set.
    pub async fn meta_init(&self, key: &str, value: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Queue behind other writers, so two gateways starting together set it once.
        sqlx::query("UPDATE generation SET value = value WHERE id = 1").execute(&mut *tx).await?;
        if sqlx::query("SELECT 1 FROM meta WHERE key = $1")
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?
            .is_some()
        {
            return Ok(false);
        }
        sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2)")
            .bind(key)
            .bind(value)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Publish `body` as the next version of `api_id` in `environment` and serve it there.
    pub async fn publish(
        &self,
        api_id: &str,
        environment: &str,
        description: &str,
        body: &Value,
    ) -> Result<Publication, StoreError> {
        let mut tx = self.write().await?;
        let publication = publish_in(&mut tx, api_id, environment, description, body).await?;
        tx.commit().await?;
        Ok(publication)
    }

    /// Serve an earlier publication again.
    pub async fn rollback(&self, api_id: &str, environment: &str, version: i64) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        let exists =
            sqlx::query("SELECT 1 FROM publications WHERE api_id = $1 AND environment = $2 AND version = $3")
                .bind(api_id)
                .bind(environment)
                .bind(version)
                .fetch_optional(&mut *tx)
                .await?;
        if exists.is_none() {
            return Err(StoreError::NotFound {
                kind: Kind::Api,
                id: format!("{api_id} version {version} in {environment}"),
            });
        }
        deploy_in(&mut tx, api_id, environment, version).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Stop serving `api_id` in `environment` (its history stays).
    pub async fn unpublish(&self, api_id: &str, environment: &str) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        let done = sqlx::query("DELETE FROM deployments WHERE api_id = $1 AND environment = $2")
            .bind(api_id)
            .bind(environment)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound { kind: Kind::Api, id: format!("{api_id} in {environment}") });
        }
        tx.commit().await?;
        Ok(())
    }

    /// The publications of `api_id` (in `environment`, or in all), newest first.
    pub async fn history(
        &self,
        api_id: &str,
        environment: Option<&str>,
    ) -> Result<Vec<Publication>, StoreError> {
        let rows = sqlx::query(
            "SELECT p.api_id, p.environment, p.version, p.description, p.published_at_ms, p.body, d.version \
             FROM publications p LEFT JOIN deployments d \
               ON d.api_id = p.api_id AND d.environment = p.environment \
             WHERE p.api_id = $1 AND ($2 = '' OR p.environment = $2) \
             ORDER BY p.environment, p.version DESC",
        )
        .bind(api_id)
        .bind(environment.unwrap_or(""))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(publication).collect()
    }

    /// What every environment serves: the current publication of each API there.
    pub async fn served(&self) -> Result<Vec<Publication>, StoreError> {
        let rows = sqlx::query(
            "SELECT p.api_id, p.environment, p.version, p.description, p.published_at_ms, p.body, d.version \
             FROM deployments d JOIN publications p \
               ON p.api_id = d.api_id AND p.environment = d.environment AND p.version = d.version \
             ORDER BY p.api_id, p.environment",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(publication).collect()
    }

    /// What gateways serve, as resources for [`layout::assemble`]: every resource but the
    /// API drafts, and for each API the publication each environment serves, marked as
    /// published in that environment only. With the generation read first: the resources are
    /// at least that new.
    pub async fn served_resources(&self) -> Result<(i64, Vec<Resource>), StoreError> {
        let (generation, records) = self.everything().await?;
        let mut resources: Vec<_> =
            records.into_iter().filter(|r| r.kind != Kind::Api).map(Record::into_resource).collect();
        resources.extend(
            self.served()
                .await?
                .into_iter()
                .map(|p| (Kind::Api, p.api_id, in_environment(p.body, &p.environment))),
        );
        only_served_authorisations(&mut resources);
        Ok((generation, resources))
    }

    /// A write transaction, already queued behind other writers (see the module docs).
    async fn write(&self) -> Result<Transaction<'static, Any>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let bumped = match self.since {
            None => sqlx::query("UPDATE generation SET value = value + 1 WHERE id = 1"),
            Some(g) => {
                sqlx::query("UPDATE generation SET value = value + 1 WHERE id = 1 AND value = $1").bind(g)
            }
        };
        // The row lock taken here queues other writers until this transaction ends, so the
        // generation cannot move between this check and the commit.
        if bumped.execute(&mut *tx).await?.rows_affected() == 0 {
            return Err(StoreError::Moved);
        }
        Ok(tx)
    }
}

/// A record from a row of `id, body, revision, updated_at_ms` starting at column `first`.
fn record(kind: Kind, row: &AnyRow, first: usize) -> Result<Record, StoreError> {
    let id: String = row.try_get(first)?;
    let body: String = row.try_get(first + 1)?;
    let body = serde_json::from_str(&body).map_err(|e| StoreError::Corrupt {
        kind,
        id: id.clone(),
        reason: e.to_string(),
    })?;
    Ok(Record { kind, id, body, revision: row.try_get(first + 2)?, updated_at_ms: row.try_get(first + 3)? })
}

async fn revision_in(
    tx: &mut Transaction<'static, Any>,
    kind: Kind,
    id: &str,
) -> Result<Option<i64>, StoreError> {
    let row = sqlx::query("SELECT revision FROM resources WHERE kind = $1 AND id = $2")
        .bind(kind.as_str())
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(match row {
        Some(row) => Some(row.try_get(0)?),
        None => None,
    })
}

fn check(kind: Kind, id: &str, current: Option<i64>, expect: Expect) -> Result<(), StoreError> {
    match (expect, current) {
        (Expect::Any, _) | (Expect::Absent, None) => Ok(()),
        (Expect::Absent, Some(_)) => Err(StoreError::Exists { kind, id: id.to_string() }),
        (Expect::Revision(_), None) => Err(StoreError::NotFound { kind, id: id.to_string() }),
        (Expect::Revision(expected), Some(current)) if expected == current => Ok(()),
        (Expect::Revision(expected), Some(current)) => {
            Err(StoreError::Conflict { kind, id: id.to_string(), current, expected })
        }
    }
}

async fn put_in(
    tx: &mut Transaction<'static, Any>,
    kind: Kind,
    id: &str,
    body: &Value,
    expect: Expect,
) -> Result<Record, StoreError> {
    let current = revision_in(tx, kind, id).await?;
    check(kind, id, current, expect)?;
    let revision = current.unwrap_or(0) + 1;
    let updated_at_ms = now_ms();
    let sql = if current.is_some() {
        "UPDATE resources SET body = $3, revision = $4, updated_at_ms = $5 WHERE kind = $1 AND id = $2"
    } else {
        "INSERT INTO resources (kind, id, body, revision, updated_at_ms) VALUES ($1, $2, $3, $4, $5)"
    };
    sqlx::query(sql)
        .bind(kind.as_str())
        .bind(id)
        .bind(body.to_string())
        .bind(revision)
        .bind(updated_at_ms)
        .execute(&mut **tx)
        .await?;
    Ok(Record { kind, id: id.to_string(), body: body.clone(), revision, updated_at_ms })
}

fn publication(row: &AnyRow) -> Result<Publication, StoreError> {
    let api_id: String = row.try_get(0)?;
    let body: String = row.try_get(5)?;
    let body = serde_json::from_str(&body).map_err(|e| StoreError::Corrupt {
        kind: Kind::Api,
        id: api_id.clone(),
        reason: e.to_string(),
    })?;
    let version: i64 = row.try_get(2)?;
    let served: Option<i64> = row.try_get(6)?;
    Ok(Publication {
        api_id,
        environment: row.try_get(1)?,
        version,
        description: row.try_get(3)?,
        published_at_ms: row.try_get(4)?,
        body,
        current: served == Some(version),
    })
}

async fn publish_in(
    tx: &mut Transaction<'static, Any>,
    api_id: &str,
    environment: &str,
    description: &str,
    body: &Value,
) -> Result<Publication, StoreError> {
    let latest = sqlx::query("SELECT MAX(version) FROM publications WHERE api_id = $1 AND environment = $2")
        .bind(api_id)
        .bind(environment)
        .fetch_one(&mut **tx)
        .await?;
    let version = latest.try_get::<Option<i64>, _>(0)?.unwrap_or(0) + 1;
    let published_at_ms = now_ms();
    sqlx::query(
        "INSERT INTO publications (api_id, environment, version, description, published_at_ms, body) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(api_id)
    .bind(environment)
    .bind(version)
    .bind(description)
    .bind(published_at_ms)
    .bind(body.to_string())
    .execute(&mut **tx)
    .await?;
    deploy_in(tx, api_id, environment, version).await?;
    // Keep the last HISTORY, and always the one served.
    sqlx::query(
        "DELETE FROM publications WHERE api_id = $1 AND environment = $2 AND version <= $3 \
         AND version <> COALESCE((SELECT version FROM deployments WHERE api_id = $1 AND environment = $2), 0)",
    )
    .bind(api_id)
    .bind(environment)
    .bind(version - HISTORY)
    .execute(&mut **tx)
    .await?;
    Ok(Publication {
        api_id: api_id.into(),
        environment: environment.into(),
        version,
        description: description.into(),
        published_at_ms,
        body: body.clone(),
        current: true,
    })
}

async fn deploy_in(
    tx: &mut Transaction<'static, Any>,
    api_id: &str,
    environment: &str,
    version: i64,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM deployments WHERE api_id = $1 AND environment = $2")
        .bind(api_id)
        .bind(environment)
        .execute(&mut **tx)
        .await?;
    sqlx::query("INSERT INTO deployments (api_id, environment, version) VALUES ($1, $2, $3)")
        .bind(api_id)
        .bind(environment)
        .bind(version)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// An API definition marked as published in `environment` only.
/// Drop from credentials' `apis` the APIs these resources do not serve. A credential may be
/// authorised to an API not published yet (or taken offline): that means nothing to
/// gateways, and the file format refuses a reference to an API it does not have.
pub fn only_served_authorisations(resources: &mut [Resource]) {
    let served: std::collections::HashSet<String> =
        resources.iter().filter(|(k, ..)| *k == Kind::Api).map(|(_, id, _)| id.clone()).collect();
    for (kind, _, body) in resources.iter_mut() {
        if let (Kind::Credential, Some(Value::Array(apis))) = (*kind, body.get_mut("apis")) {
            apis.retain(|a| a.as_str().is_some_and(|a| served.contains(a)));
        }
    }
}

pub fn in_environment(mut api: Value, environment: &str) -> Value {
    if let Some(fields) = api.as_object_mut() {
        fields.insert("environments".into(), Value::Array(vec![Value::String(environment.into())]));
    }
    api
}
