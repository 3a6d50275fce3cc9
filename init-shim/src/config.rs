//! Configuration from `AEGIS_*` environment variables.
//!
//! [`Config::from_env`] is pure: it takes the environment as a map, so tests never touch
//! the process environment. Reading the CA file and the token is done later, by
//! [`crate::tls`] and [`crate::token`], and their failures are configuration errors too.
//! Every problem is reported as one line naming the variable and what to do.

use crate::log::Level;
use aegis_core::names::{
    ENV_FETCH_TIMEOUT, ENV_LOG, ENV_SAFE_CA, ENV_SAFE_CA_FILE, ENV_SAFE_URL, ENV_TOKEN_FILE,
    TOKEN_PATH,
};
use rustls_pki_types::ServerName;
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::time::Duration;

/// The environment as a map (name → value), as the OS gave it.
pub type EnvMap = BTreeMap<OsString, OsString>;

/// Default fetch deadline.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(60);

/// Invalid or missing configuration, or an unreadable CA/token file (exit 78).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A required variable is not set (or empty).
    #[error("{0} is not set: the Aegis webhook sets it; when running by hand, set it")]
    Missing(&'static str),
    /// A variable is not valid UTF-8.
    #[error("{0} is not valid UTF-8")]
    NotUnicode(&'static str),
    /// `AEGIS_SAFE_URL` cannot be used.
    #[error("AEGIS_SAFE_URL {url:?} is invalid: {reason}")]
    SafeUrl {
        /// The value as given (a URL holds no secret).
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Neither CA variable is set.
    #[error("no CA for the Safe: set AEGIS_SAFE_CA (PEM) or AEGIS_SAFE_CA_FILE (path); the shim trusts nothing else")]
    NoCa,
    /// Both CA variables are set, so the intended one is unclear.
    #[error("both AEGIS_SAFE_CA and AEGIS_SAFE_CA_FILE are set: set only one")]
    TwoCas,
    /// The CA file cannot be read.
    #[error("cannot read AEGIS_SAFE_CA_FILE {path:?}: {source}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The CA PEM holds no usable certificate.
    #[error("the Safe's CA ({origin}) is not usable: {reason}")]
    CaPem {
        /// `AEGIS_SAFE_CA` or the file name.
        origin: String,
        /// What is wrong.
        reason: String,
    },
    /// `AEGIS_FETCH_TIMEOUT` is not a positive duration.
    #[error("AEGIS_FETCH_TIMEOUT: {0}")]
    Timeout(String),
    /// `AEGIS_LOG` is not a level.
    #[error("AEGIS_LOG: {0}")]
    LogLevel(String),
    /// The token file cannot be read.
    #[error("cannot read the ServiceAccount token {path:?} (AEGIS_TOKEN_FILE): {source}; is the aegis-token volume mounted?")]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The token file is empty, too large, or not text.
    #[error("the ServiceAccount token {path:?} is unusable: {reason}")]
    TokenContent {
        /// The file.
        path: PathBuf,
        /// What is wrong (never the token itself).
        reason: &'static str,
    },
}

/// Where the Safe's CA comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaSource {
    /// PEM text from `AEGIS_SAFE_CA`.
    Inline(String),
    /// A PEM file from `AEGIS_SAFE_CA_FILE`.
    File(PathBuf),
}

/// The Safe's address, from an `https://host[:port][/prefix]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafeUrl {
    /// Host name or IP address, without IPv6 brackets.
    pub host: String,
    /// TCP port (443 when the URL has none).
    pub port: u16,
    /// Path prefix without trailing slash (`""` for none), for a Safe behind a proxy path.
    pub prefix: String,
    /// The URL as given, for messages.
    pub url: String,
    /// The TLS server name the certificate must be valid for.
    pub server_name: ServerName<'static>,
}

impl SafeUrl {
    /// Parses `https://host[:port][/prefix]`. No user info, query or fragment.
    pub fn parse(url: &str) -> Result<Self, ConfigError> {
        let bad = |reason| ConfigError::SafeUrl {
            url: url.to_string(),
            reason,
        };
        let scheme_len = "https://".len();
        if url.len() < scheme_len || !url[..scheme_len].eq_ignore_ascii_case("https://") {
            return Err(bad("it must start with https:// (the shim only talks TLS)"));
        }
        let rest = &url[scheme_len..];
        if rest.contains(['?', '#']) {
            return Err(bad("it must not have a query or fragment"));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(bad("it must not contain user info"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("unclosed '[' in host"))?;
            match after {
                "" => (host, None),
                p => (
                    host,
                    Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ']'"))?),
                ),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("the host is empty"));
        }
        let port = match port {
            None => 443,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p != 0 => p,
                _ => return Err(bad("the port must be a number from 1 to 65535")),
            },
        };
        let server_name = ServerName::try_from(host.to_string())
            .map_err(|_| bad("the host is not a valid DNS name or IP address"))?;
        Ok(Self {
            server_name,
            host: host.to_string(),
            port,
            prefix: path.trim_end_matches('/').to_string(),
            url: url.to_string(),
        })
    }

    /// The `Host` header value.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == 443 {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// Request path of `GET /v1/secrets`.
    pub fn secrets_path(&self) -> String {
        format!("{}/v1/secrets", self.prefix)
    }
}

/// The shim's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `AEGIS_SAFE_URL`.
    pub safe: SafeUrl,
    /// `AEGIS_SAFE_CA` or `AEGIS_SAFE_CA_FILE`.
    pub ca: CaSource,
    /// `AEGIS_TOKEN_FILE`.
    pub token_file: PathBuf,
    /// `AEGIS_FETCH_TIMEOUT`: the whole fetch, retries included, ends by then.
    pub fetch_timeout: Duration,
    /// `AEGIS_LOG`.
    pub log_level: Level,
}

impl Config {
    /// Builds the configuration from the environment. Pure.
    pub fn from_env(env: &EnvMap) -> Result<Self, ConfigError> {
        let safe = SafeUrl::parse(&required(env, ENV_SAFE_URL)?)?;
        let ca = match (optional(env, ENV_SAFE_CA)?, env_os(env, ENV_SAFE_CA_FILE)) {
            (Some(pem), None) => CaSource::Inline(pem),
            (None, Some(path)) => CaSource::File(PathBuf::from(path)),
            (Some(_), Some(_)) => return Err(ConfigError::TwoCas),
            (None, None) => return Err(ConfigError::NoCa),
        };
        let token_file =
            env_os(env, ENV_TOKEN_FILE).map_or_else(|| TOKEN_PATH.into(), PathBuf::from);
        let fetch_timeout = match optional(env, ENV_FETCH_TIMEOUT)? {
            None => DEFAULT_FETCH_TIMEOUT,
            Some(s) => match aegis_core::parse_duration(&s) {
                Ok(d) if d.is_zero() => {
                    return Err(ConfigError::Timeout(format!(
                        "{s:?} must be greater than zero"
                    )))
                }
                Ok(d) => d,
                Err(e) => return Err(ConfigError::Timeout(e)),
            },
        };
        let log_level = match optional(env, ENV_LOG)? {
            None => Level::Warn,
            Some(s) => s.parse().map_err(ConfigError::LogLevel)?,
        };
        Ok(Self {
            safe,
            ca,
            token_file,
            fetch_timeout,
            log_level,
        })
    }
}

/// The log level alone, so even a configuration error is logged at the wanted level.
pub fn log_level(env: &EnvMap) -> Level {
    optional(env, ENV_LOG)
        .ok()
        .flatten()
        .and_then(|s| s.parse().ok())
        .unwrap_or(Level::Warn)
}

/// A set, non-empty variable.
fn env_os<'a>(env: &'a EnvMap, name: &str) -> Option<&'a OsStr> {
    env.get(OsStr::new(name))
        .map(OsString::as_os_str)
        .filter(|v| !v.is_empty())
}

fn optional(env: &EnvMap, name: &'static str) -> Result<Option<String>, ConfigError> {
    env_os(env, name)
        .map(|v| {
            v.to_str()
                .map(str::to_string)
                .ok_or(ConfigError::NotUnicode(name))
        })
        .transpose()
}

fn required(env: &EnvMap, name: &'static str) -> Result<String, ConfigError> {
    optional(env, name)?.ok_or(ConfigError::Missing(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> EnvMap {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    const URL: (&str, &str) = ("AEGIS_SAFE_URL", "https://aegis-safe.aegis-system.svc:8443");
    const CA: (&str, &str) = ("AEGIS_SAFE_CA", "-----BEGIN CERTIFICATE-----");

    #[test]
    fn minimal_config_uses_documented_defaults() {
        let c = Config::from_env(&env(&[URL, CA])).unwrap();
        assert_eq!(c.safe.host, "aegis-safe.aegis-system.svc");
        assert_eq!(c.safe.port, 8443);
        assert_eq!(c.ca, CaSource::Inline("-----BEGIN CERTIFICATE-----".into()));
        assert_eq!(c.token_file, PathBuf::from("/var/run/secrets/aegis/token"));
        assert_eq!(c.fetch_timeout, Duration::from_secs(60));
        assert_eq!(c.log_level, Level::Warn);
    }

    #[test]
    fn reads_every_variable() {
        let c = Config::from_env(&env(&[
            ("AEGIS_SAFE_URL", "https://127.0.0.1:9000/"),
            ("AEGIS_SAFE_CA_FILE", "/etc/aegis/ca.pem"),
            ("AEGIS_TOKEN_FILE", "/tmp/tok"),
            ("AEGIS_FETCH_TIMEOUT", "1500ms"),
            ("AEGIS_LOG", "debug"),
        ]))
        .unwrap();
        assert_eq!(c.ca, CaSource::File("/etc/aegis/ca.pem".into()));
        assert_eq!(c.token_file, PathBuf::from("/tmp/tok"));
        assert_eq!(c.fetch_timeout, Duration::from_millis(1500));
        assert_eq!(c.log_level, Level::Debug);
        assert_eq!(c.safe.secrets_path(), "/v1/secrets");
        assert_eq!(c.safe.host_header(), "127.0.0.1:9000");
    }

    #[test]
    fn missing_url_and_ca_are_errors() {
        assert!(matches!(
            Config::from_env(&env(&[CA])),
            Err(ConfigError::Missing("AEGIS_SAFE_URL"))
        ));
        assert!(matches!(
            Config::from_env(&env(&[URL])),
            Err(ConfigError::NoCa)
        ));
        let both = env(&[URL, CA, ("AEGIS_SAFE_CA_FILE", "/x")]);
        assert!(matches!(Config::from_env(&both), Err(ConfigError::TwoCas)));
        // An empty variable counts as unset, as a shell user would expect.
        assert!(matches!(
            Config::from_env(&env(&[("AEGIS_SAFE_URL", ""), CA])),
            Err(ConfigError::Missing(_))
        ));
    }

    #[test]
    fn bad_timeout_and_log_level_are_errors() {
        for bad in ["soon", "0s", "-1s"] {
            let e = Config::from_env(&env(&[URL, CA, ("AEGIS_FETCH_TIMEOUT", bad)])).unwrap_err();
            assert!(matches!(e, ConfigError::Timeout(_)), "{bad}: {e}");
        }
        let e = Config::from_env(&env(&[URL, CA, ("AEGIS_LOG", "loud")])).unwrap_err();
        assert!(matches!(e, ConfigError::LogLevel(_)));
        assert_eq!(log_level(&env(&[("AEGIS_LOG", "loud")])), Level::Warn);
        assert_eq!(log_level(&env(&[("AEGIS_LOG", "info")])), Level::Info);
    }

    #[test]
    fn non_utf8_value_is_named() {
        use std::os::unix::ffi::OsStringExt;
        let mut e = env(&[CA]);
        e.insert("AEGIS_SAFE_URL".into(), OsString::from_vec(vec![0xff]));
        assert!(matches!(
            Config::from_env(&e),
            Err(ConfigError::NotUnicode("AEGIS_SAFE_URL"))
        ));
    }

    #[test]
    fn safe_url_shapes() {
        let u = SafeUrl::parse("HTTPS://safe.example").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.host_header()),
            ("safe.example", 443, "safe.example".into())
        );
        let u = SafeUrl::parse("https://[::1]:8443/aegis/").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 8443));
        assert_eq!(u.host_header(), "[::1]:8443");
        assert_eq!(u.secrets_path(), "/aegis/v1/secrets");
        for bad in [
            "http://safe:8443",
            "https://",
            "https://:8443",
            "https://safe:0",
            "https://safe:99999",
            "https://safe:x",
            "https://user@safe",
            "https://safe/?a=b",
            "https://safe#frag",
            "https://[::1",
            "https://bad_host!:1",
            "safe:8443",
        ] {
            assert!(
                matches!(SafeUrl::parse(bad), Err(ConfigError::SafeUrl { .. })),
                "{bad} should be rejected"
            );
        }
    }
}
