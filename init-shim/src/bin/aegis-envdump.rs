//! Test helper (not shipped in the image): prints, as one JSON object on stdout, what a
//! process started by the shim received: its pid and parent pid, a monotonic timestamp
//! taken first thing in `main`, and argv and environment byte for byte. (Not its signal
//! dispositions: the Rust runtime changes SIGPIPE before `main`.) Tests and the benchmark compare this with what they expect.

use std::io::Write as _;
use std::os::unix::ffi::OsStrExt;

fn main() {
    let monotonic_ns = monotonic_ns();
    let argv: Vec<Vec<u8>> = std::env::args_os().map(|a| a.as_bytes().to_vec()).collect();
    let env: Vec<Vec<u8>> = std::env::vars_os()
        .map(|(k, v)| [k.as_bytes(), b"=", v.as_bytes()].concat())
        .collect();
    let out = serde_json::json!({
        "pid": std::process::id(),
        "ppid": std::os::unix::process::parent_id(),
        "monotonic_ns": monotonic_ns,
        "argv": argv,
        "env": env,
    });
    let mut stdout = std::io::stdout().lock();
    if writeln!(stdout, "{out}").is_err() {
        std::process::exit(1);
    }
}

/// CLOCK_MONOTONIC in nanoseconds, comparable across processes on this machine (the
/// benchmark subtracts the instant it spawned the shim).
#[allow(unsafe_code)] // clock_gettime is a syscall; std's Instant does not expose its value.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call, and
    // CLOCK_MONOTONIC is always supported on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}
