//! The real `aegis-safe` binary as a child process: durability under SIGKILL at random
//! points, and no plaintext in the data directory or the logs.

mod common;

use aegis_safe::client::{Connection, SafeClient};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A running `aegis-safe dev`; killed when dropped, so a failing test leaves no process.
struct Running {
    child: Child,
    url: String,
    ca: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &Path, extra: &[&str], log: Option<&Path>) -> Running {
    let stderr = match log {
        Some(p) => Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .unwrap(),
        ),
        None => Stdio::null(),
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_aegis-safe"))
        .args(["dev", "--dir"])
        .arg(dir)
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = loop {
        match lines.next() {
            Some(Ok(l)) => {
                if let Some(u) = l.strip_prefix("AEGIS_SAFE_URL=") {
                    break u.to_string();
                }
            }
            _ => {
                let status = child.wait().unwrap();
                panic!("aegis-safe dev exited before printing its URL: {status}");
            }
        }
    };
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let ca = std::fs::read_to_string(dir.join("ca.crt")).unwrap();
    Running { child, url, ca }
}

/// A small xorshift generator; the seed is printed so a failure can be replayed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const CLIENTS: usize = 6;
const KEYS: usize = 5;
const ROUNDS: usize = 15;

/// key → value per client workload; `None` = absent.
type Model = Vec<BTreeMap<String, String>>;
/// A write whose answer never arrived: key, value before, value it tried to set.
type InFlight = (usize, String, Option<String>, Option<String>);

async fn observe(client: &SafeClient, dir: &Path) -> Model {
    let mut out = Vec::new();
    for c in 0..CLIENTS {
        let t = aegis_safe::dev::issue_token(
            dir,
            "durable",
            &format!("c{c}"),
            "aegis-safe",
            Duration::from_secs(600),
        )
        .unwrap();
        let r = client
            .request("GET", "/v1/secrets", Some(&t), None)
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        let j = r.json();
        let m = j["secrets"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        out.push(m);
    }
    out
}

/// Writes until the Safe dies; returns the number of acknowledged writes and the write
/// that was in flight when it died.
async fn client_loop(
    mut conn: Connection,
    admin: String,
    c: usize,
    round: usize,
    seed: u64,
    model: Arc<Mutex<Model>>,
) -> (usize, Option<InFlight>) {
    let mut rng = Rng(seed | 1);
    let mut acked = 0;
    for n in 0.. {
        let key = format!("K{}", rng.below(KEYS as u64));
        let old = model.lock().unwrap()[c].get(&key).cloned();
        let path = format!("/v1/workloads/durable/c{c}/secrets/{key}");
        let delete = old.is_some() && rng.below(5) == 0;
        let (new, r) = if delete {
            (
                None,
                conn.request("DELETE", &path, Some(&admin), None).await,
            )
        } else {
            let v = format!("c{c}-r{round}-n{n}");
            let body = serde_json::json!({ "value": v }).to_string().into_bytes();
            (
                Some(v),
                conn.request("PUT", &path, Some(&admin), Some(body)).await,
            )
        };
        match r {
            Ok(reply) if reply.status == 200 || reply.status == 201 || reply.status == 204 => {
                let mut m = model.lock().unwrap();
                match &new {
                    Some(v) => m[c].insert(key, v.clone()),
                    None => m[c].remove(&key),
                };
                acked += 1;
            }
            Ok(reply) => panic!("unexpected status {} for {path}", reply.status),
            // The Safe was killed while this write was in flight: it may or may not be durable.
            Err(_) => return (acked, Some((c, key, old, new))),
        }
    }
    (acked, None)
}

fn check(observed: &Model, acked: &Model, in_flight: &[InFlight]) {
    for c in 0..CLIENTS {
        let keys: std::collections::BTreeSet<&String> =
            observed[c].keys().chain(acked[c].keys()).collect();
        for k in keys {
            let got = observed[c].get(k).cloned();
            let want = acked[c].get(k).cloned();
            if got == want {
                continue;
            }
            let allowed = in_flight
                .iter()
                .any(|(ic, ik, _old, new)| *ic == c && ik == k && got == *new);
            assert!(allowed, "client {c} key {k}: observed {got:?}, acknowledged {want:?}, in flight {in_flight:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill_at_random_points() {
    let dir = tempfile::tempdir().unwrap();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    println!("seed {seed}");
    let mut rng = Rng(seed | 1);
    // A tiny rotation threshold makes kills land during snapshots and rotations too.
    let extra = ["--journal-rotate-bytes", "8192"];
    let model: Arc<Mutex<Model>> = Arc::new(Mutex::new(vec![BTreeMap::new(); CLIENTS]));
    let admin = aegis_safe::dev::issue_token(
        dir.path(),
        "aegis-system",
        "aegis-sentinel",
        "aegis-safe",
        Duration::from_secs(3600),
    )
    .unwrap();
    let mut in_flight: Vec<InFlight> = Vec::new();
    let mut total_acked = 0usize;
    for round in 0..=ROUNDS {
        let mut safe = start(dir.path(), &extra, None);
        let client = SafeClient::new(&safe.url, &safe.ca).unwrap();
        let observed = observe(&client, dir.path()).await;
        check(&observed, &model.lock().unwrap(), &in_flight);
        // Writes in flight are now decided one way or the other: adopt what is durable.
        *model.lock().unwrap() = observed;
        in_flight.clear();
        if round == ROUNDS {
            let _ = safe.child.kill();
            let _ = safe.child.wait();
            break;
        }
        let mut tasks = Vec::new();
        for c in 0..CLIENTS {
            let conn = client.connect().await.unwrap();
            tasks.push(tokio::spawn(client_loop(
                conn,
                admin.clone(),
                c,
                round,
                rng.next(),
                Arc::clone(&model),
            )));
        }
        tokio::time::sleep(Duration::from_millis(100 + rng.below(400))).await;
        safe.child.kill().unwrap(); // SIGKILL
        safe.child.wait().unwrap();
        for t in tasks {
            let (acked, f) = t.await.unwrap();
            total_acked += acked;
            in_flight.extend(f);
        }
    }
    println!("{total_acked} acknowledged writes over {ROUNDS} kills");
    assert!(
        total_acked >= 100 * ROUNDS,
        "too few writes to mean anything: {total_acked}"
    );
    let files = common::all_files(&dir.path().join("data"));
    assert!(
        files.len() <= 3,
        "stale generations left behind: {:?}",
        files.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn no_value_or_key_name_reaches_the_disk_or_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = tempfile::tempdir().unwrap();
    let log: PathBuf = log_dir.path().join("aegis-safe.log");
    let safe = start(
        dir.path(),
        &[
            "--journal-rotate-bytes",
            "2048",
            "--log",
            "debug",
            "--log-format",
            "json",
        ],
        Some(&log),
    );
    let client = SafeClient::new(&safe.url, &safe.ca).unwrap();
    let admin = aegis_safe::dev::issue_token(
        dir.path(),
        "aegis-system",
        "aegis-sentinel",
        "aegis-safe",
        Duration::from_secs(600),
    )
    .unwrap();
    let app = aegis_safe::dev::issue_token(
        dir.path(),
        "demo",
        "app",
        "aegis-safe",
        Duration::from_secs(600),
    )
    .unwrap();
    let mut values = Vec::new();
    let mut keys = Vec::new();
    for i in 0..60 {
        let key = format!("CANARYKEY_{i:02}_QX");
        let value = format!("canary-value-{i:02}-7f3a9d");
        let body = serde_json::json!({ "value": value })
            .to_string()
            .into_bytes();
        let r = client
            .request(
                "PUT",
                &format!("/v1/workloads/demo/app/secrets/{key}"),
                Some(&admin),
                Some(body),
            )
            .await
            .unwrap();
        assert!(r.status == 201, "{}", r.status);
        keys.push(key);
        values.push(value);
    }
    // Reads and a failing request with a value in the body, to exercise every log path.
    let r = client
        .request("GET", "/v1/secrets", Some(&app), None)
        .await
        .unwrap();
    assert!(common::contains(&r.body, values[0].as_bytes()));
    let bad = br#"{"value":"canary-value-bad-7f3a9d","x":1}"#.to_vec();
    assert_eq!(
        client
            .request(
                "PUT",
                "/v1/workloads/demo/app/secrets/K",
                Some(&admin),
                Some(bad)
            )
            .await
            .unwrap()
            .status,
        400
    );
    let r = client
        .request(
            "PUT",
            "/v1/workloads/demo/app/secrets/K",
            Some(&app),
            Some(br#"{"value":"canary-value-x-7f3a9d"}"#.to_vec()),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 403);
    // Every log line is written as it happens and every write is fsynced before its
    // answer, so nothing is lost by killing it.
    let mut safe = safe;
    safe.child.kill().unwrap();
    safe.child.wait().unwrap();

    let files = common::all_files(dir.path());
    assert!(
        files
            .iter()
            .any(|(p, _)| p.to_string_lossy().ends_with(".snap")),
        "a snapshot was written"
    );
    for (path, bytes) in &files {
        assert!(
            !common::contains(bytes, b"7f3a9d"),
            "a value is in {}",
            path.display()
        );
        assert!(
            !common::contains(bytes, b"CANARYKEY"),
            "a key name is in {}",
            path.display()
        );
        assert!(
            !common::contains(bytes, b"canary-value"),
            "a value is in {}",
            path.display()
        );
    }
    let logs = std::fs::read(&log).unwrap();
    // Exactly one audit event per API request, naming who, what and the outcome.
    let audit: Vec<serde_json::Value> = String::from_utf8_lossy(&logs)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|j| j["target"] == "aegis::audit")
        .collect();
    assert_eq!(audit.len(), 60 + 3, "one audit event per request");
    let last = audit.last().unwrap();
    assert_eq!(last["caller"], "demo/app");
    assert_eq!(last["workload"], "demo/app");
    assert_eq!(last["key"], "K");
    assert_eq!(last["action"], "put");
    assert_eq!(last["outcome"], "forbidden");
    assert_eq!(last["status"], 403);
    assert_eq!(audit[0]["caller"], "aegis-system/aegis-sentinel");
    assert_eq!(audit[0]["key"], "CANARYKEY_00_QX");
    assert!(
        !common::contains(&logs, b"7f3a9d"),
        "a value reached the log"
    );
}

/// `aegis-safe serve` (the production entrypoint) with files for TLS and the root key and the
/// captured cluster's JWKS: the captured token reads its (empty) secrets, the metrics port
/// answers, and the start-up log reports hardening.
#[tokio::test]
async fn serve_runs_the_production_path_from_flags() {
    let dir = tempfile::tempdir().unwrap();
    let (paths, ca, _) = aegis_safe::dev::ensure_material(dir.path()).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_aegis-safe"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .arg("--data-dir")
        .arg(paths.data())
        .arg("--tls-cert")
        .arg(paths.tls_cert())
        .arg("--tls-key")
        .arg(paths.tls_key())
        .arg("--root-key-file")
        .arg(paths.root_key())
        .args([
            "--token-auth",
            "jwks",
            "--issuer",
            "https://kubernetes.default.svc.cluster.local",
        ])
        .arg("--jwks-file")
        .arg(common::fixture("jwks.json"))
        .args([
            "--admin",
            "aegis-system/aegis-sentinel",
            "--admin",
            "ops/admin",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    // Killed on drop, also when an assertion below fails.
    let _guard = Running {
        child,
        url: String::new(),
        ca: String::new(),
    };
    let mut log = Vec::new();
    let mut lines = BufReader::new(stderr).lines();
    let ready = loop {
        let Some(Ok(line)) = lines.next() else {
            panic!("aegis-safe serve exited before it was ready: {log:?}");
        };
        let j: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        log.push(line);
        if j["message"] == "aegis-safe ready" {
            break j;
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let api = ready["api"].as_str().unwrap().to_string();
    let metrics: std::net::SocketAddr = ready["metrics"].as_str().unwrap().parse().unwrap();
    assert!(log.iter().any(|l| l.contains("non-dumpable")), "{log:?}");
    assert!(
        log.iter().any(|l| l.contains("core dumps disabled")),
        "{log:?}"
    );
    assert!(log.iter().any(|l| l.contains("memory")), "{log:?}");

    let client = SafeClient::new(&format!("https://{api}"), &ca).unwrap();
    let token = std::fs::read_to_string(common::fixture("demo-app.aegis-safe.jwt")).unwrap();
    let r = client
        .request("GET", "/v1/secrets", Some(token.trim()), None)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.json()["revision"], 0);
    let mut s = tokio::net::TcpStream::connect(metrics).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
}
