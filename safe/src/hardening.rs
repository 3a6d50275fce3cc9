//! Process hardening at start-up: no core dumps, not dumpable (no ptrace by other
//! same-uid processes, no /proc/PID/mem), and memory locked so secrets are not swapped out.
//!
//! Each step is best effort: the outcome is returned and logged clearly, because a Safe that
//! cannot lock memory (no CAP_IPC_LOCK, low RLIMIT_MEMLOCK) should still run, but the
//! operator must be able to see it. This is the only module with `unsafe` code.
#![allow(unsafe_code)] // prctl, setrlimit and mlockall have no safe wrapper in std/libc.

/// What hardening achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hardening {
    /// `prctl(PR_SET_DUMPABLE, 0)` succeeded.
    pub non_dumpable: bool,
    /// `setrlimit(RLIMIT_CORE, 0)` succeeded.
    pub no_core_dumps: bool,
    /// `mlockall(MCL_CURRENT | MCL_FUTURE)` succeeded; otherwise the OS error.
    pub memory_locked: Result<(), String>,
}

/// Applies every hardening step and logs one line per outcome.
pub fn harden_process() -> Hardening {
    // SAFETY: prctl with PR_SET_DUMPABLE takes plain integer arguments and touches no
    // memory of ours.
    let non_dumpable = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } == 0;
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `zero` is a valid rlimit that lives across the call; setrlimit only reads it.
    let no_core_dumps = unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) } == 0;
    let memory_locked = lock_memory();
    let h = Hardening {
        non_dumpable,
        no_core_dumps,
        memory_locked,
    };
    log(&h);
    h
}

/// CAP_IPC_LOCK's bit in the capability sets.
const CAP_IPC_LOCK: u32 = 14;

/// Locks current and future memory, but only when that cannot backfire: with MCL_FUTURE a
/// finite RLIMIT_MEMLOCK (without CAP_IPC_LOCK) would make later allocations fail once the
/// Safe grows past it, turning a hardening measure into a crash. So it needs either the
/// capability or an unlimited limit.
fn lock_memory() -> Result<(), String> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit that outlives the call.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
    let unlimited = rc == 0 && lim.rlim_cur == libc::RLIM_INFINITY;
    let capable = has_effective_capability(CAP_IPC_LOCK);
    if !unlimited && !capable {
        return Err(format!(
            "RLIMIT_MEMLOCK is {} bytes and CAP_IPC_LOCK is not held",
            lim.rlim_cur
        ));
    }
    // MCL_ONFAULT locks pages when they are first touched instead of faulting in every
    // mapping now (the whole binary, every thread's full stack): secrets live in touched
    // pages, so they are locked all the same, and the resident set stays what it would be.
    // Kernels before 4.4 do not know the flag (EINVAL); then lock without it.
    // SAFETY: mlockall takes flags only and touches no memory of ours.
    let rc = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE | libc::MCL_ONFAULT) };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EINVAL) {
        return Err(err.to_string());
    }
    // SAFETY: as above.
    let rc = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().to_string())
    }
}

/// Whether the effective capability set (from /proc/self/status) holds `cap`.
fn has_effective_capability(cap: u32) -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let hex = s
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))?
                .trim()
                .to_string();
            u64::from_str_radix(&hex, 16).ok()
        })
        .is_some_and(|bits| bits & (1u64 << cap) != 0)
}

fn log(h: &Hardening) {
    if h.non_dumpable {
        tracing::info!("process marked non-dumpable (prctl PR_SET_DUMPABLE=0)");
    } else {
        tracing::warn!("could not mark the process non-dumpable (prctl failed)");
    }
    if h.no_core_dumps {
        tracing::info!("core dumps disabled (RLIMIT_CORE=0)");
    } else {
        tracing::warn!("could not disable core dumps (setrlimit RLIMIT_CORE failed)");
    }
    match &h.memory_locked {
        Ok(()) => tracing::info!("memory locked (mlockall): secrets cannot be swapped to disk"),
        Err(e) => tracing::warn!(
            error = %e,
            "memory NOT locked (mlockall needs CAP_IPC_LOCK or an unlimited RLIMIT_MEMLOCK); secrets could be swapped to disk if the node has swap enabled"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hardening_disables_core_dumps_and_dumpability() {
        // Runs in a forked child so the test process itself stays debuggable.
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "hardening::tests::child_entry",
                "--nocapture",
                "--ignored",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("dumpable=0 core=0"), "child output: {text}");
    }

    #[test]
    #[ignore = "entry point for hardening_disables_core_dumps_and_dumpability (runs in a child process)"]
    fn child_entry() {
        let h = harden_process();
        // SAFETY: plain integer prctl query.
        let dumpable = unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) };
        let mut lim = libc::rlimit {
            rlim_cur: 1,
            rlim_max: 1,
        };
        // SAFETY: `lim` is a valid, writable rlimit.
        unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut lim) };
        assert!(h.non_dumpable && h.no_core_dumps);
        println!("dumpable={dumpable} core={}", lim.rlim_cur);
    }
}
