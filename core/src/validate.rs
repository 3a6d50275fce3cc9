//! Limits on keys, values and workloads, shared by the Safe (which enforces them) and
//! the CLI (which checks early to give a better message).

/// Why a key or value was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// The key is not an environment-variable name.
    #[error("key {0:?} is not a valid environment variable name ([A-Za-z_][A-Za-z0-9_]*, at most {1} characters)")]
    Key(String, usize),
    /// The key uses the reserved `AEGIS_` prefix, which the shim strips.
    #[error("key {0:?} starts with the reserved prefix AEGIS_")]
    ReservedKey(String),
    /// The value is longer than allowed. The value itself is never included.
    #[error("value is {size} bytes; the limit is {limit} bytes")]
    ValueTooLarge {
        /// Actual size.
        size: usize,
        /// Limit.
        limit: usize,
    },
    /// The value contains a NUL byte, which no environment variable can hold.
    #[error("value contains a NUL byte, which an environment variable cannot hold")]
    ValueNul,
}

/// Enforced limits. The defaults are the documented ones (docs/api.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest key, in bytes.
    pub max_key_len: usize,
    /// Largest value, in bytes.
    pub max_value_bytes: usize,
    /// Most secrets one workload may hold.
    pub max_secrets_per_workload: usize,
    /// Largest sum of key and value bytes for one workload.
    pub max_workload_bytes: usize,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_key_len: 128,
            max_value_bytes: 64 * 1024,
            max_secrets_per_workload: 256,
            max_workload_bytes: 1024 * 1024,
            max_body_bytes: 256 * 1024,
        }
    }
}

impl Limits {
    /// Checks a key name.
    pub fn check_key(&self, key: &str) -> Result<(), ValidationError> {
        let b = key.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= self.max_key_len
            && (b[0].is_ascii_alphabetic() || b[0] == b'_')
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_');
        if !ok {
            return Err(ValidationError::Key(key.to_string(), self.max_key_len));
        }
        if key.starts_with(crate::names::ENV_PREFIX) {
            return Err(ValidationError::ReservedKey(key.to_string()));
        }
        Ok(())
    }

    /// Checks a value without ever copying it into the error.
    pub fn check_value(&self, value: &str) -> Result<(), ValidationError> {
        if value.len() > self.max_value_bytes {
            return Err(ValidationError::ValueTooLarge {
                size: value.len(),
                limit: self.max_value_bytes,
            });
        }
        if value.as_bytes().contains(&0) {
            return Err(ValidationError::ValueNul);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_environment_variable_names() {
        let l = Limits::default();
        for ok in ["A", "_x", "DB_PASSWORD", "a1_B2"] {
            assert!(l.check_key(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1A", "A-B", "A B", "Ä", "A=B"] {
            assert!(
                matches!(l.check_key(bad), Err(ValidationError::Key(..))),
                "{bad}"
            );
        }
        assert!(l.check_key(&"A".repeat(128)).is_ok());
        assert!(l.check_key(&"A".repeat(129)).is_err());
    }

    #[test]
    fn reserved_prefix_is_refused() {
        assert!(matches!(
            Limits::default().check_key("AEGIS_SAFE_URL"),
            Err(ValidationError::ReservedKey(_))
        ));
    }

    #[test]
    fn value_errors_never_contain_the_value() {
        let l = Limits {
            max_value_bytes: 4,
            ..Limits::default()
        };
        let e = l.check_value("topsecret").unwrap_err();
        assert!(!e.to_string().contains("topsecret"));
        assert_eq!(l.check_value("a\0b"), Err(ValidationError::ValueNul));
        assert!(l.check_value("abcd").is_ok());
    }
}
