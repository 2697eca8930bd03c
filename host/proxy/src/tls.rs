//! TLS termination with rustls: TLS 1.2 and 1.3 only, HTTP/2 or HTTP/1.1 by ALPN.
//!
//! There is one `ServerConfig` per certificate, and one more per (certificate, client CA)
//! pair for domains with mutual TLS. The config is picked when the ClientHello arrives, from
//! the snapshot current at that moment: a reload swaps certificates for new connections and
//! leaves open ones alone.

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

/// ring: builds with the C compiler alone; no cmake, unlike aws-lc.
static PROVIDER: LazyLock<Arc<CryptoProvider>> =
    LazyLock::new(|| Arc::new(rustls::crypto::ring::default_provider()));

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read `{path}`: {message}")]
    Read { path: PathBuf, message: String },
    #[error("`{path}` holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("the key in `{key}` does not fit the certificate in `{cert}`: {source}")]
    Key { cert: PathBuf, key: PathBuf, source: rustls::Error },
    #[error("the client CAs in `{path}` cannot be used: {message}")]
    ClientCa { path: PathBuf, message: String },
}

/// A certificate chain with its private key, checked to belong together.
pub struct LoadedCertificate(Arc<CertifiedKey>);

impl LoadedCertificate {
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let chain = read_certificates(cert)?;
        let der = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| TlsError::Read { path: key.into(), message: e.to_string() })?;
        let certified = CertifiedKey::from_der(chain, der, &PROVIDER).map_err(|source| TlsError::Key {
            cert: cert.into(),
            key: key.into(),
            source,
        })?;
        Ok(LoadedCertificate(Arc::new(certified)))
    }
}

/// The CAs a mutual-TLS domain accepts client certificates from.
pub struct ClientCa(Arc<RootCertStore>);

impl ClientCa {
    pub fn load(path: &Path) -> Result<Self, TlsError> {
        let mut roots = RootCertStore::empty();
        for cert in read_certificates(path)? {
            roots.add(cert).map_err(|e| TlsError::ClientCa { path: path.into(), message: e.to_string() })?;
        }
        Ok(ClientCa(Arc::new(roots)))
    }
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read_err =
        |e: rustls::pki_types::pem::Error| TlsError::Read { path: path.into(), message: e.to_string() };
    let chain = CertificateDer::pem_file_iter(path).map_err(read_err)?.collect::<Result<Vec<_>, _>>();
    let chain = chain.map_err(read_err)?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: path.into() });
    }
    Ok(chain)
}

fn server_config(
    cert: &LoadedCertificate,
    client_ca: Option<&ClientCa>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let builder = ServerConfig::builder_with_provider(PROVIDER.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match client_ca {
        Some(ca) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(ca.0.clone(), PROVIDER.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    // One certificate per config (SNI has already chosen the config), shared, not re-parsed.
    let mut config = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(cert.0.clone())));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

struct DomainTls {
    config: Arc<ServerConfig>,
    client_auth: bool,
}

/// Server configs by domain (from SNI) and by certificate name (listener defaults).
#[derive(Default)]
pub struct TlsStore {
    domains: HashMap<String, DomainTls>,
    certificates: HashMap<String, Arc<ServerConfig>>,
    any_client_auth: bool,
}

impl TlsStore {
    pub fn add_certificate(&mut self, name: &str, cert: &LoadedCertificate) -> Result<(), rustls::Error> {
        self.certificates.insert(name.to_string(), server_config(cert, None)?);
        Ok(())
    }

    /// Serve `domain` with the certificate added under `certificate`, asking for a client
    /// certificate signed by `client_ca` when given.
    pub fn bind_domain(
        &mut self,
        domain: &str,
        certificate: &str,
        cert: &LoadedCertificate,
        client_ca: Option<&ClientCa>,
    ) -> Result<(), rustls::Error> {
        let config = match client_ca {
            Some(ca) => server_config(cert, Some(ca))?,
            None => self.certificates[certificate].clone(),
        };
        self.any_client_auth |= client_ca.is_some();
        self.domains
            .insert(domain.to_ascii_lowercase(), DomainTls { config, client_auth: client_ca.is_some() });
        Ok(())
    }

    /// The config for a ClientHello naming `server_name`, else the listener's default.
    pub fn config_for(&self, server_name: Option<&str>, default: Option<&str>) -> Option<Arc<ServerConfig>> {
        let by_name = server_name.and_then(|n| self.domains.get(&n.to_ascii_lowercase()));
        match by_name {
            Some(d) => Some(d.config.clone()),
            None => default.and_then(|c| self.certificates.get(c)).cloned(),
        }
    }

    /// Whether `host` (lower case) accepts only clients with a certificate.
    pub fn requires_client_certificate(&self, host: &str) -> bool {
        self.any_client_auth && self.domains.get(host).is_some_and(|d| d.client_auth)
    }
}

/// What the handshake established, for routing checks and policies.
#[derive(Debug, Default)]
pub struct TlsSession {
    /// The SNI name, lower case.
    pub server_name: Option<String>,
    /// The verified client certificate's subject (`CN=app, O=Example`), with mutual TLS.
    pub client_subject: Option<String>,
}

impl TlsSession {
    pub fn of(conn: &rustls::ServerConnection) -> Self {
        let client_subject = conn.peer_certificates().and_then(|chain| chain.first()).and_then(|leaf| {
            let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
            Some(parsed.subject().to_string())
        });
        TlsSession { server_name: conn.server_name().map(str::to_ascii_lowercase), client_subject }
    }
}
