//! Benchmark of the Safe against the targets of issue 2. Prints a table; figures go to
//! docs/benchmarks.md. Run in release: `cargo run --release -p aegis-safe --bin aegis-safe-bench`.
//!
//! Everything runs on this machine: the Safe (a dev Safe on its own runtime, or the real
//! `aegis-safe` binary for restart and memory) and the load generator.

use aegis_core::{Limits, SecretValue, Workload};
use aegis_safe::client::SafeClient;
use aegis_safe::commit::{Committer, Mutation};
use aegis_safe::crypto::{RootKey, Sealer};
use aegis_safe::DevSafe;
use anyhow::Context;
use clap::Parser;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Measures the Safe's throughput, restart time and memory.
#[derive(Debug, Parser)]
struct Args {
    /// Seconds per throughput measurement.
    #[arg(long, env = "AEGIS_BENCH_SECONDS", default_value_t = 5)]
    seconds: u64,
    /// Concurrent clients for the fetch measurements.
    #[arg(long, env = "AEGIS_BENCH_CLIENTS", default_value_t = 64)]
    clients: usize,
    /// Concurrent writers for the durable-write measurement.
    #[arg(long, env = "AEGIS_BENCH_WRITERS", default_value_t = 32)]
    writers: usize,
    /// Secrets for the restart and memory measurements.
    #[arg(long, env = "AEGIS_BENCH_SECRETS", default_value_t = 100_000)]
    secrets: usize,
    /// Keep the 100,000-secret directory here (it must not exist yet) instead of a
    /// temporary one, to inspect it afterwards.
    #[arg(long, env = "AEGIS_BENCH_KEEP_DIR")]
    keep_dir: Option<std::path::PathBuf>,
    /// Only measure restart and memory.
    #[arg(long, env = "AEGIS_BENCH_ONLY_RESTART")]
    only_restart: bool,
    /// Bytes per secret value for the restart and memory measurements.
    #[arg(long, env = "AEGIS_BENCH_VALUE_BYTES", default_value_t = 100)]
    value_bytes: usize,
}

struct Row {
    what: String,
    figure: String,
    target: &'static str,
    met: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The Safe's default log filter with JSON formatting, written nowhere: the audit event of
    // every request is built and formatted as in production, so its cost is measured.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn,aegis=info"))
        .json()
        .with_writer(std::io::sink)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut rows = Vec::new();
    if !args.only_restart {
        rows.extend(throughput(&args, &rt)?);
    }
    let big = tempfile::tempdir()?;
    let big_dir = args
        .keep_dir
        .clone()
        .unwrap_or_else(|| big.path().to_path_buf());
    populate(&big_dir, args.secrets, args.value_bytes, &rt)?;
    let (ready, rss) = restart_real_binary(&big_dir)?;
    rows.push(Row {
        what: format!("restart to ready, real binary ({} secrets)", args.secrets),
        figure: format!("{:.0} ms", ready.as_secs_f64() * 1000.0),
        target: "< 1 s",
        met: ready < Duration::from_secs(1),
    });
    rows.push(Row {
        what: format!(
            "resident memory ({} x {}-byte secrets)",
            args.secrets, args.value_bytes
        ),
        figure: format!("{:.1} MiB", rss as f64 / 1024.0 / 1024.0),
        target: "< 64 MiB",
        met: rss < 64 * 1024 * 1024,
    });

    println!("| measurement | figure | target | met |");
    println!("|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} |",
            r.what,
            r.figure,
            r.target,
            if r.met { "yes" } else { "NO" }
        );
    }
    Ok(())
}

/// Fresh-connection fetches, kept-alive fetches and durable writes against a dev Safe.
fn throughput(args: &Args, rt: &tokio::runtime::Runtime) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let dir = tempfile::tempdir()?;
    let safe = DevSafe::start(dir.path())?;
    let admin = safe.admin_token()?;
    let token = safe.token("bench", "app")?;
    let client = SafeClient::new(&safe.url, &safe.ca_pem)?;
    rt.block_on(async {
        for i in 0..10 {
            let body = serde_json::json!({ "value": "x".repeat(100) })
                .to_string()
                .into_bytes();
            let path = format!("/v1/workloads/bench/app/secrets/KEY_{i}");
            client
                .request("PUT", &path, Some(&admin), Some(body))
                .await?;
        }
        anyhow::Ok(())
    })?;

    // A fresh process (the shim) never resumes a TLS session: measure full handshakes.
    let mut cfg = (*aegis_safe::tls::client_config(&safe.ca_pem)?).clone();
    cfg.resumption = rustls::client::Resumption::disabled();
    let fresh = SafeClient::with_config(&safe.url, Arc::new(cfg))?;
    let secs = Duration::from_secs(args.seconds);
    let cpu = CpuMeter::start();
    let (rate, n) = rt.block_on(fetch_rate(&fresh, &token, args.clients, secs, false))?;
    rows.push(Row {
        what: "fetches/s, fresh TLS connection each".into(),
        figure: format!("{rate:.0} ({} per fetch)", cpu.per(n)),
        target: ">= 3,000",
        met: rate >= 3000.0,
    });
    let cpu = CpuMeter::start();
    let (rate, n) = rt.block_on(fetch_rate(&client, &token, args.clients, secs, true))?;
    rows.push(Row {
        what: "fetches/s, kept-alive connections".into(),
        figure: format!("{rate:.0} ({} per fetch)", cpu.per(n)),
        target: ">= 30,000",
        met: rate >= 30000.0,
    });
    let cpu = CpuMeter::start();
    let (rate, n) = rt.block_on(write_rate(&client, &admin, args.writers, secs))?;
    rows.push(Row {
        what: format!("durable writes/s, {} writers", args.writers),
        figure: format!("{rate:.0} ({} per write)", cpu.per(n)),
        target: ">= 2,000",
        met: rate >= 2000.0,
    });
    safe.stop();
    Ok(rows)
}

/// CPU time of this process (Safe and load generator together), and of the Safe's own
/// threads (its runtime and journal writer), to tell "slow code" from "the machine is busy
/// with something else", and the Safe's share from the load generator's.
struct CpuMeter {
    total: f64,
    safe: f64,
}

/// utime + stime (fields 14 and 15) of a `/proc/.../stat` text, in seconds.
fn stat_cpu(stat: &str) -> f64 {
    let after = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<f64> = after.split(' ').map(|x| x.parse().unwrap_or(0.0)).collect();
    // Clock ticks: 100 per second on Linux.
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0
}

impl CpuMeter {
    fn now() -> (f64, f64) {
        let total = stat_cpu(&std::fs::read_to_string("/proc/self/stat").unwrap_or_default());
        let mut safe = 0.0;
        for task in std::fs::read_dir("/proc/self/task")
            .into_iter()
            .flatten()
            .flatten()
        {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.starts_with("aegis-dev-safe") || comm.starts_with("aegis-journal") {
                safe += stat_cpu(
                    &std::fs::read_to_string(task.path().join("stat")).unwrap_or_default(),
                );
            }
        }
        (total, safe)
    }

    fn start() -> Self {
        let (total, safe) = Self::now();
        Self { total, safe }
    }

    fn per(&self, n: u64) -> String {
        let (total, safe) = Self::now();
        let per = |secs: f64| secs * 1e6 / n.max(1) as f64;
        format!(
            "{:.0} µs CPU, Safe {:.0} µs",
            per(total - self.total),
            per(safe - self.safe)
        )
    }
}

/// GET /v1/secrets from `clients` concurrent loops for `dur`; requests per second.
async fn fetch_rate(
    client: &SafeClient,
    token: &str,
    clients: usize,
    dur: Duration,
    keep_alive: bool,
) -> anyhow::Result<(f64, u64)> {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + dur;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, token, done) = (client.clone(), token.to_string(), Arc::clone(&done));
        tasks.push(tokio::spawn(async move {
            let mut conn = if keep_alive {
                Some(client.connect().await?)
            } else {
                None
            };
            while Instant::now() < deadline {
                let r = match conn.as_mut() {
                    Some(c) => c.request("GET", "/v1/secrets", Some(&token), None).await?,
                    None => {
                        client
                            .request("GET", "/v1/secrets", Some(&token), None)
                            .await?
                    }
                };
                anyhow::ensure!(r.status == 200, "status {}", r.status);
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    let started = Instant::now();
    for t in tasks {
        t.await??;
    }
    let n = done.load(Ordering::Relaxed);
    Ok((
        n as f64 / started.elapsed().as_secs_f64().max(dur.as_secs_f64()),
        n,
    ))
}

/// PUTs from `writers` concurrent kept-alive connections; acknowledged writes per second.
async fn write_rate(
    client: &SafeClient,
    admin: &str,
    writers: usize,
    dur: Duration,
) -> anyhow::Result<(f64, u64)> {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + dur;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (client, admin, done) = (client.clone(), admin.to_string(), Arc::clone(&done));
        tasks.push(tokio::spawn(async move {
            let mut conn = client.connect().await?;
            let mut n = 0u64;
            while Instant::now() < deadline {
                let path = format!("/v1/workloads/bench/w{w}/secrets/KEY_{}", n % 50);
                let body = serde_json::json!({ "value": format!("value-{n}") })
                    .to_string()
                    .into_bytes();
                let r = conn.request("PUT", &path, Some(&admin), Some(body)).await?;
                anyhow::ensure!(r.status == 200 || r.status == 201, "status {}", r.status);
                done.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let n = done.load(Ordering::Relaxed);
    Ok((n as f64 / started.elapsed().as_secs_f64(), n))
}

/// Creates dev material in `dir` and stores `n` secrets (100 per workload) through the
/// real journal writer.
fn populate(
    dir: &Path,
    n: usize,
    value_bytes: usize,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<()> {
    aegis_safe::dev::ensure_material(dir)?;
    let key = aegis_safe::rootkey::load_file(&dir.join("root.key"))?;
    let sealer = Arc::new(Sealer::new(&RootKey::from_bytes(key.expose())?));
    let (store, journal, _) =
        aegis_safe::recovery::recover(&dir.join("data"), &sealer, Limits::default())?;
    let store = Arc::new(store);
    let metrics = Arc::new(aegis_safe::metrics::Metrics::new());
    let committer = Arc::new(Committer::start(
        journal,
        sealer,
        store,
        aegis_safe::server::DEFAULT_JOURNAL_ROTATE_BYTES,
        metrics,
    ));
    rt.block_on(async {
        let mut i = 0;
        while i < n {
            let mut batch = Vec::new();
            for j in i..(i + 1024).min(n) {
                let c = Arc::clone(&committer);
                let workload =
                    Workload::new("bench", &format!("sa-{}", j / 100)).context("workload")?;
                let value = SecretValue::new(format!("{j:0width$}", width = value_bytes));
                let m = Mutation::Put {
                    workload,
                    key: format!("SECRET_{}", j % 100),
                    value,
                };
                batch.push(tokio::spawn(async move { c.commit(m).await }));
            }
            for b in batch {
                b.await?.map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            i += 1024;
        }
        anyhow::Ok(())
    })?;
    committer.shutdown();
    Ok(())
}

/// Starts the real binary on `dir`; time until it prints its URL (printed once ready) and
/// its resident set size then.
fn restart_real_binary(dir: &Path) -> anyhow::Result<(Duration, u64)> {
    let exe = std::env::current_exe()?.with_file_name("aegis-safe");
    let started = Instant::now();
    let mut child = Command::new(&exe)
        .args(["dev", "--listen", "127.0.0.1:0", "--dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let ready = loop {
        match lines.next() {
            Some(Ok(l)) if l.starts_with("AEGIS_SAFE_URL=") => break started.elapsed(),
            Some(_) => continue,
            None => anyhow::bail!("aegis-safe exited before it was ready"),
        }
    };
    std::thread::sleep(Duration::from_millis(200));
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()))?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS")?;
    child.kill()?;
    child.wait()?;
    Ok((ready, rss_kib * 1024))
}
