//! TLS for the API: rustls with the `ring` provider, TLS 1.3 and 1.2 only, HTTP/1.1 ALPN,
//! serving a certificate that is reloaded when its files change (`aegis_net::tls`, shared
//! with the webhook). Also generates the dev-mode CA and server certificate (rcgen).

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use aegis_net::tls::ReloadingCert;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("reading {what} from {path}: {reason}")]
    Pem {
        /// certificate chain or private key.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// rustls refused the configuration (e.g. the key does not match the certificate).
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
    /// The serving certificate or key could not be loaded.
    #[error(transparent)]
    Load(#[from] aegis_net::tls::TlsError),
    /// Certificate generation failed (dev mode).
    #[error("generating a dev certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// The crypto provider every TLS endpoint of the Safe uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Server configuration from PEM files (certificate chain, then PKCS#8/SEC1/PKCS#1 key).
/// The returned [`ReloadingCert`] serves new handshakes from the files' current contents
/// once its watcher is running (`spawn_watcher`); a bad new pair is ignored with a warning.
pub fn server_config(
    cert: &Path,
    key: &Path,
) -> Result<(Arc<ReloadingCert>, Arc<rustls::ServerConfig>), TlsError> {
    let reloading = Arc::new(ReloadingCert::load(cert, key)?);
    let mut cfg = reloading.server_config()?;
    // No session resumption: clients are one-shot processes (the shim, the CLI) that never
    // resume, so tickets and a session cache would cost every handshake work and keep
    // resumption secrets in memory for nothing.
    cfg.send_tls13_tickets = 0;
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok((reloading, Arc::new(cfg)))
}

fn pem_err(what: &'static str, path: &Path, e: rustls::pki_types::pem::Error) -> TlsError {
    TlsError::Pem {
        what,
        path: path.into(),
        reason: e.to_string(),
    }
}

/// A client configuration trusting only the CA certificates in `ca_pem`.
pub fn client_config(ca_pem: &str) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let c = c.map_err(|e| pem_err("CA certificate", Path::new("<inline>"), e))?;
        roots.add(c)?;
    }
    if roots.is_empty() {
        // A client with no trust anchor can only fail later, with a vaguer handshake error.
        return Err(TlsError::Pem {
            what: "CA certificate",
            path: "<inline>".into(),
            reason: "the bundle holds no certificate".into(),
        });
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// PEM texts of a generated CA and a server certificate signed by it.
pub struct DevCerts {
    /// CA certificate.
    pub ca_cert: String,
    /// CA private key.
    pub ca_key: String,
    /// Server certificate.
    pub server_cert: String,
    /// Server private key.
    pub server_key: String,
}

/// Generates an ECDSA P-256 CA ("Aegis dev CA") and a server certificate for `localhost`,
/// `127.0.0.1` and `::1` signed by it.
pub fn generate_dev_certs() -> Result<DevCerts, TlsError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "Aegis dev CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, &ca_key);

    let server_key = KeyPair::generate()?;
    let mut server = CertificateParams::new(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ])?;
    server
        .distinguished_name
        .push(DnType::CommonName, "aegis-safe (dev)");
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server.signed_by(&server_key, &issuer)?;
    Ok(DevCerts {
        ca_cert: ca_cert.pem(),
        ca_key: ca_key.serialize_pem(),
        server_cert: server_cert.pem(),
        server_key: server_key.serialize_pem(),
    })
}
