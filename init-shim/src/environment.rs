//! CMD's environment, decided by one pure function, [`build_env`].
//!
//! Rules (design.md, "The init-shim"):
//! 1. Start from the container's environment, in its order, minus every `AEGIS_*`
//!    variable (those configure the shim, not the application).
//! 2. A variable whose value is exactly `aegis:KEY` gets the value of secret `KEY`; a
//!    reference to a key the workload does not have is an error (all such references
//!    are reported at once). The prefix is case-sensitive; `aegis:` followed by nothing
//!    is a reference to the empty key, hence missing.
//! 3. Every workload secret is added under its own name, after the container's
//!    variables, sorted by name.
//! 4. An explicit pod variable wins over a same-named secret, with a warning naming the
//!    key. A variable that references its own name (`DB=aegis:DB`) is not a conflict.
//!
//! Secret keys are checked again here (the Safe enforces them too): a key that is not an
//! environment-variable name, or uses the reserved `AEGIS_` prefix, would corrupt or
//! hijack the environment, so it fails the start rather than being skipped.
//!
//! Invariant: values are copied exactly once, into the `CString`s returned, which the
//! caller zeroes if exec fails. Nothing here logs or formats a value.

use aegis_core::names::{ENV_PREFIX, SECRET_REF_PREFIX};
use aegis_core::{Limits, SecretValue};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CString, OsString};
use std::fmt;
use std::os::unix::ffi::OsStrExt;

/// Something the operator should know about; CMD still starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// A pod variable shadows the workload secret of the same name.
    PodVariableWins {
        /// The variable/secret name.
        key: String,
    },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PodVariableWins { key } => write!(
                f,
                "pod variable {key} overrides the workload secret of the same name; \
                 remove the variable from the pod spec or rename the secret"
            ),
        }
    }
}

/// A variable that references a secret: `var=aegis:key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    /// The pod variable's name (lossy UTF-8, for messages).
    pub var: String,
    /// The referenced key (lossy UTF-8, for messages).
    pub key: String,
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}=aegis:{}", self.var, self.key)
    }
}

/// Why the environment could not be built. Never contains a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// Pod variables reference keys the workload does not have (exit 65).
    #[error("the pod references secrets this workload does not have: {}; store them with `aegis put` or fix the references", list(.0))]
    MissingKeys(Vec<SecretRef>),
    /// The Safe sent a key that cannot be an environment variable (exit 76).
    #[error("the Safe sent a secret key that cannot be used as an environment variable: {0}")]
    InvalidKey(String),
    /// The Safe sent a value with a NUL byte (exit 76).
    #[error(
        "the value of secret {0} contains a NUL byte, which an environment variable cannot hold"
    )]
    NulInValue(String),
}

fn list(refs: &[SecretRef]) -> String {
    refs.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Builds CMD's `envp` from the container's environment and the workload's secrets.
pub fn build_env(
    container_env: &[(OsString, OsString)],
    secrets: &BTreeMap<String, SecretValue>,
) -> Result<(Vec<CString>, Vec<Warning>), EnvError> {
    let limits = Limits::default();
    for key in secrets.keys() {
        limits
            .check_key(key)
            .map_err(|e| EnvError::InvalidKey(e.to_string()))?;
    }
    let kept: Vec<&(OsString, OsString)> = container_env
        .iter()
        .filter(|(name, _)| !name.as_bytes().starts_with(ENV_PREFIX.as_bytes()))
        .collect();

    let mut missing = Vec::new();
    let mut pod_names = BTreeSet::new();
    let mut warnings = Vec::new();
    for (name, value) in &kept {
        pod_names.insert(name.as_bytes());
        let target = reference(value.as_bytes());
        if let Some(key) = target {
            if !secrets.contains_key(key) {
                missing.push(SecretRef {
                    var: name.to_string_lossy().into_owned(),
                    key: key.to_string(),
                });
            }
        }
        if let Ok(n) = std::str::from_utf8(name.as_bytes()) {
            if secrets.contains_key(n) && target != Some(n) {
                let warning = Warning::PodVariableWins { key: n.to_string() };
                if !warnings.contains(&warning) {
                    warnings.push(warning);
                }
            }
        }
    }
    if !missing.is_empty() {
        return Err(EnvError::MissingKeys(missing));
    }

    let mut envp = Vec::with_capacity(kept.len() + secrets.len());
    for (name, value) in &kept {
        let value = match reference(value.as_bytes()).and_then(|k| secrets.get(k)) {
            Some(secret) => secret.expose().as_bytes(),
            None => value.as_bytes(),
        };
        envp.push(entry(name.as_bytes(), value).map_err(|()| nul_error(name.as_bytes()))?);
    }
    for (key, value) in secrets {
        if !pod_names.contains(key.as_bytes()) {
            let e = entry(key.as_bytes(), value.expose().as_bytes());
            envp.push(e.map_err(|()| EnvError::NulInValue(key.clone()))?);
        }
    }
    Ok((envp, warnings))
}

/// The key of an `aegis:KEY` value, if the value is a reference.
fn reference(value: &[u8]) -> Option<&str> {
    let key = value.strip_prefix(SECRET_REF_PREFIX.as_bytes())?;
    // A non-UTF-8 key can never match (keys are ASCII) but is still a reference.
    Some(std::str::from_utf8(key).unwrap_or("\u{fffd}"))
}

fn nul_error(name: &[u8]) -> EnvError {
    EnvError::NulInValue(String::from_utf8_lossy(name).into_owned())
}

/// `NAME=VALUE` as a C string, built in one allocation of exactly the final size so no
/// stray copy of the value is left behind by a reallocation.
fn entry(name: &[u8], value: &[u8]) -> Result<CString, ()> {
    let mut bytes = Vec::with_capacity(name.len() + 1 + value.len() + 1);
    bytes.extend_from_slice(name);
    bytes.push(b'=');
    bytes.extend_from_slice(value);
    CString::new(bytes).map_err(|e| {
        let mut rejected = e.into_vec();
        zeroize::Zeroize::zeroize(&mut rejected);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    fn secrets(pairs: &[(&str, &str)]) -> BTreeMap<String, SecretValue> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), SecretValue::new(v.to_string())))
            .collect()
    }

    fn strings(envp: &[CString]) -> Vec<&str> {
        envp.iter().map(|c| c.to_str().unwrap()).collect()
    }

    #[test]
    fn container_env_minus_aegis_then_sorted_secrets() {
        let (envp, warnings) = build_env(
            &env(&[
                ("PATH", "/usr/bin"),
                ("AEGIS_SAFE_URL", "https://x"),
                ("AEGIS_SAFE_CA", "pem"),
                ("HOME", "/root"),
            ]),
            &secrets(&[("ZED", "z"), ("API_KEY", "k")]),
        )
        .unwrap();
        assert_eq!(
            strings(&envp),
            ["PATH=/usr/bin", "HOME=/root", "API_KEY=k", "ZED=z"]
        );
        assert!(warnings.is_empty());
    }

    #[test]
    fn references_are_replaced_and_the_secret_is_still_added() {
        let (envp, warnings) = build_env(
            &env(&[
                ("DATABASE_URL", "aegis:DB_URL"),
                ("MODE", "aegis-like but not a ref"),
            ]),
            &secrets(&[("DB_URL", "postgres://u:p@db/x")]),
        )
        .unwrap();
        assert_eq!(
            strings(&envp),
            [
                "DATABASE_URL=postgres://u:p@db/x",
                "MODE=aegis-like but not a ref",
                "DB_URL=postgres://u:p@db/x"
            ]
        );
        assert!(warnings.is_empty());
    }

    #[test]
    fn explicit_pod_variable_wins_with_a_warning_naming_the_key() {
        let (envp, warnings) = build_env(
            &env(&[("LOG_LEVEL", "debug")]),
            &secrets(&[("LOG_LEVEL", "info")]),
        )
        .unwrap();
        assert_eq!(strings(&envp), ["LOG_LEVEL=debug"]);
        assert_eq!(
            warnings,
            [Warning::PodVariableWins {
                key: "LOG_LEVEL".into()
            }]
        );
        assert!(warnings[0].to_string().contains("LOG_LEVEL"));
        assert!(!warnings[0].to_string().contains("info"));
    }

    #[test]
    fn a_reference_to_another_key_also_wins_over_the_same_named_secret() {
        let (envp, warnings) = build_env(
            &env(&[("A", "aegis:B")]),
            &secrets(&[("A", "a"), ("B", "b")]),
        )
        .unwrap();
        assert_eq!(strings(&envp), ["A=b", "B=b"]);
        assert_eq!(warnings, [Warning::PodVariableWins { key: "A".into() }]);
    }

    #[test]
    fn a_self_reference_is_not_a_conflict() {
        let (envp, warnings) =
            build_env(&env(&[("DB", "aegis:DB")]), &secrets(&[("DB", "v")])).unwrap();
        assert_eq!(strings(&envp), ["DB=v"]);
        assert!(warnings.is_empty());
    }

    #[test]
    fn every_missing_reference_is_reported_without_values() {
        let e = build_env(
            &env(&[
                ("A", "aegis:NOPE"),
                ("B", "aegis:"),
                ("C", "aegis:OK"),
                ("D", "Aegis:X"),
            ]),
            &secrets(&[("OK", "hidden-value")]),
        )
        .unwrap_err();
        assert_eq!(
            e,
            EnvError::MissingKeys(vec![
                SecretRef {
                    var: "A".into(),
                    key: "NOPE".into()
                },
                SecretRef {
                    var: "B".into(),
                    key: "".into()
                },
            ])
        );
        let msg = e.to_string();
        assert!(
            msg.contains("A=aegis:NOPE") && msg.contains("B=aegis:"),
            "{msg}"
        );
        assert!(!msg.contains("hidden-value"));
    }

    #[test]
    fn aegis_variables_are_not_resolved_or_kept_even_when_they_reference() {
        let (envp, _) = build_env(&env(&[("AEGIS_X", "aegis:MISSING")]), &secrets(&[])).unwrap();
        assert!(envp.is_empty());
    }

    #[test]
    fn invalid_or_reserved_secret_keys_fail_the_start() {
        for bad in ["A=B", "1X", "AEGIS_SAFE_URL", ""] {
            let e = build_env(&[], &secrets(&[(bad, "v")])).unwrap_err();
            assert!(matches!(e, EnvError::InvalidKey(_)), "{bad}");
        }
    }

    #[test]
    fn nul_in_a_secret_value_is_refused_naming_the_key() {
        let e = build_env(&[], &secrets(&[("K", "a\0b")])).unwrap_err();
        assert_eq!(e, EnvError::NulInValue("K".into()));
        let e = build_env(&env(&[("V", "aegis:K")]), &secrets(&[("K", "a\0b")])).unwrap_err();
        assert_eq!(e, EnvError::NulInValue("V".into()));
    }

    #[test]
    fn non_utf8_container_variables_pass_through_byte_for_byte() {
        use std::os::unix::ffi::OsStringExt;
        let name = OsString::from_vec(b"N\xff".to_vec());
        let value = OsString::from_vec(b"v\xfe x".to_vec());
        let (envp, _) = build_env(&[(name, value)], &secrets(&[("S", "s")])).unwrap();
        assert_eq!(envp[0].as_bytes(), b"N\xff=v\xfe x");
        assert_eq!(envp[1].as_bytes(), b"S=s");
    }

    #[test]
    fn values_with_equals_newlines_and_unicode_are_exact() {
        let v = "a=b\nc d \"e\" 'f' ünï 🙂";
        let (envp, _) = build_env(&[], &secrets(&[("K", v)])).unwrap();
        assert_eq!(envp[0].as_bytes(), format!("K={v}").as_bytes());
    }
}
