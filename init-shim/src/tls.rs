//! TLS client configuration: rustls with the `ring` provider, trusting only the CA
//! the pod was configured with. There are no system roots and no way to skip
//! verification; a certificate that does not chain to that CA or does not match the
//! URL's host fails the handshake.

use crate::config::{CaSource, ConfigError};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::sync::Arc;

/// Loads the CA certificates (reads the file for [`CaSource::File`]).
pub fn load_ca(source: &CaSource) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    match source {
        CaSource::Inline(pem) => parse_ca_pem(pem.as_bytes(), "AEGIS_SAFE_CA"),
        CaSource::File(path) => {
            let pem = std::fs::read(path).map_err(|source| ConfigError::CaFile {
                path: path.clone(),
                source,
            })?;
            parse_ca_pem(&pem, &path.display().to_string())
        }
    }
}

/// Parses every `CERTIFICATE` block of a PEM text; at least one is required.
pub fn parse_ca_pem(pem: &[u8], origin: &str) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let bad = |reason: String| ConfigError::CaPem {
        origin: origin.to_string(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("invalid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(bad("no CERTIFICATE block found".into()));
    }
    Ok(certs)
}

/// A client configuration trusting exactly `cas`.
pub fn client_config(cas: &[CertificateDer<'static>]) -> Result<Arc<ClientConfig>, ConfigError> {
    let bad = |reason: String| ConfigError::CaPem {
        origin: "the configured CA".into(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    for ca in cas {
        roots
            .add(ca.clone())
            .map_err(|e| bad(format!("not a usable CA certificate: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(format!("TLS setup failed: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn parses_one_or_more_certificates() {
        let two = format!("{}{}", ca_pem(), ca_pem());
        assert_eq!(parse_ca_pem(two.as_bytes(), "t").unwrap().len(), 2);
        let certs = parse_ca_pem(ca_pem().as_bytes(), "t").unwrap();
        assert!(client_config(&certs).is_ok());
    }

    #[test]
    fn rejects_text_without_certificates() {
        let e = parse_ca_pem(b"hello", "AEGIS_SAFE_CA").unwrap_err();
        assert!(e.to_string().contains("AEGIS_SAFE_CA"), "{e}");
        assert!(parse_ca_pem(b"", "x").is_err());
    }

    #[test]
    fn rejects_a_certificate_that_is_not_der() {
        let pem = "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n";
        let certs = parse_ca_pem(pem.as_bytes(), "x").unwrap();
        assert!(client_config(&certs).is_err());
    }

    #[test]
    fn missing_ca_file_is_a_config_error() {
        let e = load_ca(&CaSource::File("/nonexistent/ca.pem".into())).unwrap_err();
        assert!(matches!(e, ConfigError::CaFile { .. }));
    }
}
