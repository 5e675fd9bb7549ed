//! Mutual TLS for the links between nodes: each node presents its certificate and accepts only
//! peers whose certificates the cluster's CA signed, both ways (a client without a certificate
//! never reaches the cookie handshake).

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig, crypto};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::config::TlsConfig;

/// Both ends of a node's TLS: for the links it accepts and the ones it dials.
pub(crate) struct Tls {
    pub acceptor: TlsAcceptor,
    pub connector: TlsConnector,
}

/// Loads `config`'s PEM files, naming the file at fault.
pub(crate) fn load(config: &TlsConfig) -> Result<Tls, String> {
    let certificates = certificates(&config.cert)?;
    let key = PrivateKeyDer::from_pem_file(&config.key)
        .map_err(|e| format!("cluster.tls.key: {}: {e}", config.key.display()))?;
    let mut roots = RootCertStore::empty();
    for ca in certificates_at("cluster.tls.ca", &config.ca)? {
        roots
            .add(ca)
            .map_err(|e| format!("cluster.tls.ca: {}: {e}", config.ca.display()))?;
    }
    let roots = Arc::new(roots);
    let provider = Arc::new(crypto::aws_lc_rs::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| format!("cluster.tls.ca: {e}"))?;
    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certificates.clone(), key.clone_key())
        .map_err(|e| format!("cluster.tls.cert/key: {e}"))?;
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_auth_cert(certificates, key)
        .map_err(|e| format!("cluster.tls.cert/key: {e}"))?;
    Ok(Tls {
        acceptor: TlsAcceptor::from(Arc::new(server)),
        connector: TlsConnector::from(Arc::new(client)),
    })
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    certificates_at("cluster.tls.cert", path)
}

fn certificates_at(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let found = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{key}: {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{key}: {}: {e}", path.display()))?;
    if found.is_empty() {
        return Err(format!("{key}: {}: no certificate in it", path.display()));
    }
    Ok(found)
}
