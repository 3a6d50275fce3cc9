//! TLS client configuration: rustls with the `ring` provider, trusting only the CA
//! the pod was configured with. There are no system roots and no way to skip
//! verification; a certificate that does not chain to that CA or does not match the
//! URL's host fails the handshake.
//!
//! The provider is *ring*'s, assembled here without a key provider: the shim never
//! presents a client certificate, and leaving out *ring*'s signing code saves 65 KB of
//! the 2 MiB budget. Cipher suites (TLS 1.3), key exchange groups and signature
//! verification algorithms are exactly those of `rustls::crypto::ring::default_provider`
//! (a unit test keeps them in step).

use crate::config::{CaSource, ConfigError};
use rustls::crypto::ring::{cipher_suite, kx_group};
use rustls::crypto::{
    CryptoProvider, GetRandomFailed, KeyProvider, SecureRandom, WebPkiSupportedAlgorithms,
};
use rustls::{ClientConfig, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;
use webpki::ring as algs;

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
    let config = ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(format!("TLS setup failed: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// *ring*'s TLS 1.3 suites, key exchange groups and verification algorithms, without
/// signing keys.
pub fn provider() -> CryptoProvider {
    CryptoProvider {
        cipher_suites: vec![
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ],
        kx_groups: vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1],
        signature_verification_algorithms: SIG_ALGS,
        secure_random: &RingRandom,
        key_provider: &NoClientKeys,
    }
}

/// Randomness for TLS from *ring* (the kernel's getrandom).
#[derive(Debug)]
struct RingRandom;

impl SecureRandom for RingRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), buf)
            .map_err(|_| GetRandomFailed)
    }
}

/// The shim has no private key; nothing ever asks for one with `with_no_client_auth`.
#[derive(Debug)]
struct NoClientKeys;

impl KeyProvider for NoClientKeys {
    fn load_private_key(
        &self,
        _key: PrivateKeyDer<'static>,
    ) -> Result<Arc<dyn rustls::sign::SigningKey>, rustls::Error> {
        Err(rustls::Error::General(
            "the init-shim uses no client certificate".into(),
        ))
    }
}

/// Same as rustls's `SUPPORTED_SIG_ALGS` for *ring* (not public there).
static SIG_ALGS: WebPkiSupportedAlgorithms = WebPkiSupportedAlgorithms {
    all: &[
        algs::ECDSA_P256_SHA256,
        algs::ECDSA_P256_SHA384,
        algs::ECDSA_P384_SHA256,
        algs::ECDSA_P384_SHA384,
        algs::ED25519,
        algs::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
        algs::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
        algs::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
        algs::RSA_PKCS1_2048_8192_SHA256,
        algs::RSA_PKCS1_2048_8192_SHA384,
        algs::RSA_PKCS1_2048_8192_SHA512,
        algs::RSA_PKCS1_2048_8192_SHA256_ABSENT_PARAMS,
        algs::RSA_PKCS1_2048_8192_SHA384_ABSENT_PARAMS,
        algs::RSA_PKCS1_2048_8192_SHA512_ABSENT_PARAMS,
    ],
    mapping: &[
        (
            SignatureScheme::ECDSA_NISTP384_SHA384,
            &[algs::ECDSA_P384_SHA384, algs::ECDSA_P256_SHA384],
        ),
        (
            SignatureScheme::ECDSA_NISTP256_SHA256,
            &[algs::ECDSA_P256_SHA256, algs::ECDSA_P384_SHA256],
        ),
        (SignatureScheme::ED25519, &[algs::ED25519]),
        (
            SignatureScheme::RSA_PSS_SHA512,
            &[algs::RSA_PSS_2048_8192_SHA512_LEGACY_KEY],
        ),
        (
            SignatureScheme::RSA_PSS_SHA384,
            &[algs::RSA_PSS_2048_8192_SHA384_LEGACY_KEY],
        ),
        (
            SignatureScheme::RSA_PSS_SHA256,
            &[algs::RSA_PSS_2048_8192_SHA256_LEGACY_KEY],
        ),
        (
            SignatureScheme::RSA_PKCS1_SHA512,
            &[algs::RSA_PKCS1_2048_8192_SHA512],
        ),
        (
            SignatureScheme::RSA_PKCS1_SHA384,
            &[algs::RSA_PKCS1_2048_8192_SHA384],
        ),
        (
            SignatureScheme::RSA_PKCS1_SHA256,
            &[algs::RSA_PKCS1_2048_8192_SHA256],
        ),
    ],
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_matches_rings_default_for_tls13() {
        let ring = rustls::crypto::ring::default_provider();
        let ours = provider();
        let tls13 = |p: &CryptoProvider| {
            let mut v: Vec<_> = p
                .cipher_suites
                .iter()
                .filter(|s| s.version() == &rustls::version::TLS13)
                .map(|s| s.suite())
                .collect();
            v.sort_by_key(|s| u16::from(*s));
            v
        };
        assert_eq!(tls13(&ours), tls13(&ring));
        let groups = |p: &CryptoProvider| p.kx_groups.iter().map(|g| g.name()).collect::<Vec<_>>();
        assert_eq!(groups(&ours), groups(&ring));
        assert_eq!(
            ours.signature_verification_algorithms.supported_schemes(),
            ring.signature_verification_algorithms.supported_schemes()
        );
        assert_eq!(
            format!("{:?}", ours.signature_verification_algorithms),
            format!("{:?}", ring.signature_verification_algorithms)
        );
    }

    #[test]
    fn there_are_no_client_keys() {
        let key = PrivateKeyDer::try_from(vec![0u8; 8]).unwrap_or_else(|_| {
            PrivateKeyDer::Pkcs8(rustls_pki_types::PrivatePkcs8KeyDer::from(vec![0u8; 8]))
        });
        assert!(NoClientKeys.load_private_key(key).is_err());
    }

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
