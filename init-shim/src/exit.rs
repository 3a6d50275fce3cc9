//! Exit codes: the shim's only way to tell the kubelet, and whoever reads
//! `kubectl describe pod`, why CMD did not start. Each failure class has its own code
//! so an operator can tell "the Safe is down" from "this workload is not allowed" at a
//! glance. Codes follow `sysexits.h` where one fits; 126/127 follow the shell.
//! The table is documented in docs/init-shim.md; changing a value is a breaking change.

/// Why the shim exited instead of becoming CMD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 64 (`EX_USAGE`): the command line is not `install DIR` or `-- CMD [ARGS...]`.
    Usage = 64,
    /// 65 (`EX_DATAERR`): the pod references a secret key (`aegis:KEY`) the workload lacks.
    MissingKey = 65,
    /// 69 (`EX_UNAVAILABLE`): the Safe could not be reached (or kept failing) until the
    /// fetch deadline.
    Unreachable = 69,
    /// 73 (`EX_CANTCREAT`): `install` could not write the shim into DIR.
    Install = 73,
    /// 76 (`EX_PROTOCOL`): the Safe answered something the shim cannot use (malformed
    /// HTTP or JSON, too large, an unexpected status, an invalid key or value).
    BadResponse = 76,
    /// 77 (`EX_NOPERM`): the Safe refused the token (401) or the workload (403).
    Denied = 77,
    /// 78 (`EX_CONFIG`): an `AEGIS_*` variable is missing or invalid, or the CA or
    /// token file cannot be read.
    Config = 78,
    /// 79: the TLS handshake failed, typically because the Safe's certificate is not
    /// signed by the configured CA or not valid for the URL's host. Not retried.
    Tls = 79,
    /// 126: CMD was found but could not be executed (permission, format, directory).
    NotExecutable = 126,
    /// 127: CMD was not found (no such file, or not on the container's `PATH`).
    NotFound = 127,
}

impl Exit {
    /// The process exit status.
    pub fn code(self) -> i32 {
        self as i32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_stable() {
        let all = [
            Exit::Usage,
            Exit::MissingKey,
            Exit::Unreachable,
            Exit::Install,
            Exit::BadResponse,
            Exit::Denied,
            Exit::Config,
            Exit::Tls,
            Exit::NotExecutable,
            Exit::NotFound,
        ];
        let codes: Vec<i32> = all.iter().map(|e| e.code()).collect();
        assert_eq!(codes, [64, 65, 69, 73, 76, 77, 78, 79, 126, 127]);
    }
}
