//! The projected ServiceAccount token: read once, held in zeroized memory, sent as a
//! bearer token, and decoded *without verification* only to name the workload in a
//! denial message (the Safe is the one that verifies it).

use crate::config::ConfigError;
use aegis_core::{TokenClaims, Workload};
use base64::Engine as _;
use std::fmt;
use std::io::Read as _;
use std::path::Path;
use zeroize::Zeroizing;

/// Largest token file accepted; Kubernetes tokens are around 1 KiB.
pub const MAX_TOKEN_BYTES: u64 = 64 * 1024;

/// A bearer token. `Debug` never shows it; memory is zeroed on drop.
pub struct Token(Zeroizing<String>);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token([REDACTED])")
    }
}

impl Token {
    /// Wraps a token (surrounding whitespace removed, as kubelet files end without one
    /// but hand-made ones often have a newline).
    pub fn new(token: &str) -> Self {
        Self(Zeroizing::new(token.trim().to_string()))
    }

    /// Reads the token file.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let io_err = |source| ConfigError::TokenFile {
            path: path.to_path_buf(),
            source,
        };
        let content = |reason| ConfigError::TokenContent {
            path: path.to_path_buf(),
            reason,
        };
        let file = std::fs::File::open(path).map_err(io_err)?;
        let mut raw = Zeroizing::new(Vec::with_capacity(4096));
        file.take(MAX_TOKEN_BYTES + 1)
            .read_to_end(&mut raw)
            .map_err(io_err)?;
        if raw.len() as u64 > MAX_TOKEN_BYTES {
            return Err(content("larger than 64 KiB"));
        }
        let text = std::str::from_utf8(&raw).map_err(|_| content("not UTF-8 text"))?;
        let token = Self::new(text);
        if token.0.is_empty() {
            return Err(content("the file is empty"));
        }
        if !token.0.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(content("it contains spaces or control characters"));
        }
        Ok(token)
    }

    /// The token, for the `Authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The workload the token *claims* (`namespace/serviceaccount`), unverified.
    /// For messages only, never for a decision.
    pub fn unverified_workload(&self) -> Option<Workload> {
        let payload = self.0.split('.').nth(1)?;
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .ok()?;
        if let Ok(claims) = serde_json::from_slice::<TokenClaims>(&json) {
            return claims.workload().ok();
        }
        #[derive(serde::Deserialize)]
        struct Sub {
            sub: String,
        }
        Workload::from_username(&serde_json::from_slice::<Sub>(&json).ok()?.sub)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn jwt(payload: &str) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.sig",
            b64.encode(r#"{"alg":"ES256"}"#),
            b64.encode(payload)
        )
    }

    #[test]
    fn names_the_workload_from_kubernetes_claims() {
        let t = Token::new(&jwt(
            r#"{"iss":"i","aud":["aegis-safe"],"exp":1,"sub":"system:serviceaccount:demo:app",
               "kubernetes.io":{"namespace":"demo","serviceaccount":{"name":"app","uid":"u"}}}"#,
        ));
        assert_eq!(t.unverified_workload().unwrap().to_string(), "demo/app");
    }

    #[test]
    fn falls_back_to_sub_and_tolerates_garbage() {
        let t = Token::new(&jwt(r#"{"sub":"system:serviceaccount:ns1:sa1"}"#));
        assert_eq!(t.unverified_workload().unwrap().to_string(), "ns1/sa1");
        assert!(Token::new("not-a-jwt").unverified_workload().is_none());
        assert!(Token::new("a.!!!.c").unverified_workload().is_none());
    }

    #[test]
    fn debug_hides_the_token() {
        let t = Token::new("secret-token");
        assert_eq!(format!("{t:?}"), "Token([REDACTED])");
    }

    #[test]
    fn reads_and_trims_the_file() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"abc.def.ghi\n").unwrap();
        assert_eq!(Token::read(f.path()).unwrap().expose(), "abc.def.ghi");
    }

    #[test]
    fn rejects_missing_empty_and_odd_files() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        assert!(matches!(
            Token::read(&missing),
            Err(ConfigError::TokenFile { .. })
        ));
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        assert!(matches!(
            Token::read(&empty),
            Err(ConfigError::TokenContent { .. })
        ));
        let spaced = dir.path().join("spaced");
        std::fs::write(&spaced, "a b").unwrap();
        assert!(matches!(
            Token::read(&spaced),
            Err(ConfigError::TokenContent { .. })
        ));
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'a'; 70 * 1024]).unwrap();
        assert!(matches!(
            Token::read(&big),
            Err(ConfigError::TokenContent { .. })
        ));
    }
}
