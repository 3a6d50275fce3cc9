//! Start-up benchmark of the release shim (issue 3): runs
//! `aegis-init-shim -- aegis-envdump` N times against a real dev Safe on loopback, each
//! run a fresh process, TCP connection and TLS handshake, and reports:
//! - start latency: from just before `spawn` of the shim to the first instruction of
//!   CMD's `main` (CMD reads CLOCK_MONOTONIC first thing), and the same for CMD spawned
//!   directly; "added" is each shim run minus the median direct run;
//! - peak RSS, measured in a separate pass under GNU `/usr/bin/time -f %M` (required):
//!   Linux folds the high-water mark of the pre-exec image into the child's `ru_maxrss`,
//!   and a child spawned straight from this process would inherit this process's size
//!   (it hosts the Safe); `time` is a small C parent, so its figure is
//!   max(time's fork, shim, CMD) and the "CMD alone" row shows that floor;
//! - the binary size.
//!
//! `cargo bench -p aegis-init-shim --bench shim -- [--shim PATH] [--runs N]`
//! (default PATH: the musl release build; build it first, see docs/init-shim.md).
#![allow(unsafe_code)] // clock_gettime: the raw CLOCK_MONOTONIC value, comparable with CMD's.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

const ENVDUMP: &str = env!("CARGO_BIN_EXE_aegis-envdump");

fn main() -> anyhow::Result<()> {
    let mut shim = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/x86_64-unknown-linux-musl/release/aegis-init-shim");
    let mut runs = 1000usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--shim" => {
                shim = args
                    .next()
                    .map(PathBuf::from)
                    .ok_or_else(|| anyhow::anyhow!("--shim PATH"))?
            }
            "--runs" => {
                runs = args
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("--runs N"))?
                    .parse()?
            }
            "--bench" => {}
            other => anyhow::bail!("unknown argument {other:?}: use --shim PATH --runs N"),
        }
    }
    let size = std::fs::metadata(&shim)
        .map_err(|e| {
            anyhow::anyhow!(
                "{}: {e} (build the musl release shim first)",
                shim.display()
            )
        })?
        .len();

    let dir = tempfile::tempdir()?;
    let safe = aegis_safe::DevSafe::start(dir.path())?;
    let admin = safe.admin_token()?;
    for i in 0..5 {
        put(
            &safe,
            &admin,
            &format!("SECRET_{i}"),
            &format!("value-{i}-{}", "x".repeat(40)),
        )?;
    }
    let token_file = dir.path().join("bench-token");
    std::fs::write(&token_file, safe.token("bench", "app")?)?;
    let shim_spec = Spec {
        program: shim.clone(),
        args: vec![
            "--".into(),
            ENVDUMP.into(),
            "--flag".into(),
            "arg with spaces".into(),
        ],
        env: vec![
            ("PATH".into(), "/usr/bin:/bin".into()),
            ("AEGIS_SAFE_URL".into(), safe.url.clone()),
            ("AEGIS_SAFE_CA".into(), safe.ca_pem.clone()),
            ("AEGIS_TOKEN_FILE".into(), token_file.display().to_string()),
            ("DB".into(), "aegis:SECRET_0".into()),
        ],
    };
    let direct_spec = Spec {
        program: ENVDUMP.into(),
        args: vec!["--flag".into(), "arg with spaces".into()],
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
    };
    let shim_cmd = || shim_spec.command();
    let direct_cmd = || direct_spec.command();
    for _ in 0..20 {
        measure(&mut shim_cmd())?;
        measure(&mut direct_cmd())?;
    }
    let mut shim_runs = Vec::with_capacity(runs);
    let mut direct_runs = Vec::with_capacity(runs);
    for _ in 0..runs {
        shim_runs.push(measure(&mut shim_cmd())?);
        direct_runs.push(measure(&mut direct_cmd())?);
    }
    anyhow::ensure!(
        std::path::Path::new(TIME).exists(),
        "{TIME} (GNU time) is required for the RSS pass: apt-get install time"
    );
    let rss_runs = (runs / 5).max(10);
    let rss_file = dir.path().join("rss");
    let mut shim_rss = Vec::with_capacity(rss_runs);
    let mut direct_rss = Vec::with_capacity(rss_runs);
    for _ in 0..rss_runs {
        shim_rss.push(peak_rss_kib(&shim_spec, &rss_file)?);
        direct_rss.push(peak_rss_kib(&direct_spec, &rss_file)?);
    }
    safe.stop();

    let lat = |v: &[Sample]| v.iter().map(|s| s.latency).collect::<Vec<_>>();
    let (shim_lat, direct_lat) = (sorted(lat(&shim_runs)), sorted(lat(&direct_runs)));
    let base = pct(&direct_lat, 50.0);
    let added = sorted(shim_lat.iter().map(|l| l.saturating_sub(base)).collect());
    let (shim_rss, direct_rss) = (sorted(shim_rss), sorted(direct_rss));

    println!(
        "init-shim start-up, {runs} runs, fresh process + TCP + TLS 1.3 each, Safe on loopback"
    );
    println!(
        "binary: {} ({size} bytes = {:.2} MiB)\n",
        shim.display(),
        size as f64 / 1048576.0
    );
    println!("| measure | p50 | p99 | max |");
    println!("|---|---|---|---|");
    for (name, v) in [
        ("shim spawn → CMD main", &shim_lat),
        ("CMD spawned directly", &direct_lat),
        ("added by the shim", &added),
    ] {
        println!(
            "| {name} | {} | {} | {} |",
            ms(pct(v, 50.0)),
            ms(pct(v, 99.0)),
            ms(pct(v, 100.0))
        );
    }
    println!(
        "| peak RSS, shim run ({rss_runs} runs, under time) | {} | {} | {} |",
        kib(pct(&shim_rss, 50.0)),
        kib(pct(&shim_rss, 99.0)),
        kib(pct(&shim_rss, 100.0))
    );
    println!(
        "| peak RSS, CMD alone ({rss_runs} runs, under time) | {} | {} | {} |",
        kib(pct(&direct_rss, 50.0)),
        kib(pct(&direct_rss, 99.0)),
        kib(pct(&direct_rss, 100.0))
    );
    Ok(())
}

fn put(safe: &aegis_safe::DevSafe, admin: &str, key: &str, value: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let body = serde_json::json!({ "value": value }).to_string();
    let cas = aegis_init_shim::tls::parse_ca_pem(safe.ca_pem.as_bytes(), "bench")?;
    let cfg = aegis_init_shim::tls::client_config(&cas)?;
    let name = rustls::pki_types::ServerName::IpAddress(safe.addr.ip().into());
    let conn = rustls::ClientConnection::new(cfg, name)?;
    let mut s = rustls::StreamOwned::new(conn, std::net::TcpStream::connect(safe.addr)?);
    write!(
        s,
        "PUT /v1/workloads/bench/app/secrets/{key} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {admin}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        safe.addr,
        body.len()
    )?;
    let status = aegis_init_shim::http::read_response(&mut s, 1 << 20)?.status;
    anyhow::ensure!(status == 200 || status == 201, "PUT {key}: HTTP {status}");
    Ok(())
}

const TIME: &str = "/usr/bin/time";

/// A command line with a cleared environment.
struct Spec {
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Spec {
    fn command(&self) -> Command {
        let mut c = Command::new(&self.program);
        c.args(&self.args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }
}

/// Peak RSS (KiB) of one run under GNU time.
fn peak_rss_kib(spec: &Spec, out: &std::path::Path) -> anyhow::Result<u64> {
    let status = Command::new(TIME)
        .args(["-f", "%M", "-o"])
        .arg(out)
        .arg(&spec.program)
        .args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "run under time failed: {status}");
    Ok(std::fs::read_to_string(out)?.trim().parse()?)
}

struct Sample {
    latency: Duration,
}

/// Spawns, reads CMD's timestamp from its output, and reaps the child.
fn measure(cmd: &mut Command) -> anyhow::Result<Sample> {
    let t0 = monotonic_ns();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut out = Vec::new();
    child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?
        .read_to_end(&mut out)?;
    let status = child.wait()?;
    anyhow::ensure!(status.success(), "run failed: {status}");
    let v: serde_json::Value = serde_json::from_slice(&out)?;
    let t1 = v["monotonic_ns"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no timestamp"))?;
    Ok(Sample {
        latency: Duration::from_nanos(t1.saturating_sub(t0)),
    })
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// Nearest-rank percentile of sorted data.
fn pct<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn kib(k: u64) -> String {
    format!("{:.2} MiB", k as f64 / 1024.0)
}
