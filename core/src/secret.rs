//! A secret value that is zeroed when dropped and never printed.

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// A secret value. `Debug` prints `[REDACTED]`; memory is zeroed on drop.
/// Serialises as a plain JSON string, because that is the wire format.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
#[serde(transparent)]
pub struct SecretValue(String);

impl SecretValue {
    /// Wraps a value; the caller's `String` is moved, not copied.
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The plaintext. Call sites are the few places that must see it (encrypt, exec).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for SecretValue {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[REDACTED]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let v = SecretValue::new("hunter2".into());
        assert_eq!(format!("{v:?}"), "[REDACTED]");
        assert_eq!(format!("{:?}", Some(&v)), "Some([REDACTED])");
    }

    #[test]
    fn serialises_as_a_plain_string() {
        let v = SecretValue::new("s3cr3t".into());
        assert_eq!(serde_json::to_string(&v).unwrap(), "\"s3cr3t\"");
        let back: SecretValue = serde_json::from_str("\"s3cr3t\"").unwrap();
        assert_eq!(back.expose(), "s3cr3t");
    }
}
