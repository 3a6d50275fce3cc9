//! The CLI's error type: a message for the user, an optional hint, and an exit code.

use aegis_core::ErrorCode;

/// Everything that can go wrong in a command. Messages never contain a secret value.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line or configuration is incomplete or contradictory.
    #[error("{0}")]
    Usage(String),
    /// A local file or stream could not be read or written.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The Safe could not be reached (DNS, TCP, TLS).
    #[error("could not reach the Safe at {url}: {reason}")]
    Unreachable {
        /// The Safe's base URL.
        url: String,
        /// The transport error chain.
        reason: String,
    },
    /// The Safe answered with an error.
    #[error("the Safe refused the request ({status}): {message}")]
    Safe {
        /// HTTP status.
        status: u16,
        /// Machine code from the body, when the body had one.
        code: Option<ErrorCode>,
        /// The Safe's message.
        message: String,
        /// What to do about it.
        hint: Option<String>,
    },
    /// A manifest could not be parsed or a pod could not be injected.
    #[error("{0}")]
    Inject(String),
    /// A step of `aegis demo` failed.
    #[error("demo failed at step '{step}': {reason}")]
    Demo {
        /// Which step.
        step: String,
        /// Why.
        reason: String,
    },
}

impl CliError {
    /// Wraps an I/O error with what we were doing.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// Builds a demo failure.
    pub fn demo(step: &str, reason: impl std::fmt::Display) -> Self {
        Self::Demo {
            step: step.to_string(),
            reason: reason.to_string(),
        }
    }

    /// A hint printed under the error, when there is one.
    pub fn hint(&self) -> Option<&str> {
        match self {
            Self::Safe { hint, .. } => hint.as_deref(),
            Self::Unreachable { .. } => Some(
                "check --safe-url / AEGIS_SAFE_URL and that --safe-ca-file / AEGIS_SAFE_CA_FILE is the CA that signed the Safe's certificate",
            ),
            _ => None,
        }
    }

    /// Process exit code: 2 for usage errors, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => 2,
            _ => 1,
        }
    }
}
