//! rustls configurations: the client's trust roots and the server's certificate chain and key.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::HttpError;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate of a PEM file; `what` names the setting in errors.
fn read_certs(what: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, HttpError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            HttpError::Config(format!(
                "{what}: cannot read PEM certificates from {}: {e}",
                path.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(HttpError::Config(format!(
            "{what}: {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(certs)
}

/// The client side: trust the certificates of `ca_file` (a self-signed certificate or a private CA),
/// or else the web PKI roots.
pub(crate) fn client_config(
    ca_file: Option<&Path>,
) -> Result<Arc<rustls::ClientConfig>, HttpError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in read_certs("ca_cert", path)? {
                roots.add(cert).map_err(|e| {
                    HttpError::Config(format!(
                        "ca_cert: {} holds a certificate rustls cannot use as a root: {e}",
                        path.display()
                    ))
                })?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| HttpError::Config(format!("tls: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The server side: the certificate chain of `cert_file` (leaf first) and the private key of
/// `key_file` (PKCS#8, PKCS#1 or SEC1 PEM).
#[cfg_attr(not(feature = "server"), allow(dead_code))]
pub(crate) fn server_config(
    cert_file: &Path,
    key_file: &Path,
) -> Result<Arc<rustls::ServerConfig>, HttpError> {
    let certs = read_certs("tls.cert", cert_file)?;
    // The key's bytes never appear in an error, only its path.
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| {
        HttpError::Config(format!(
            "tls.key: cannot read a PEM private key from {}: {e}",
            key_file.display()
        ))
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| HttpError::Config(format!("tls: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            HttpError::Config(format!(
                "tls: the key {} does not fit the certificate {}: {e}",
                key_file.display(),
                cert_file.display()
            ))
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
