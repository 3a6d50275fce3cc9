//! The Safe serves a rotated certificate (cert-manager, `helm upgrade`) without a restart.

use aegis_safe::DevSafe;
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A full TLS handshake with the Safe, trusting only `ca_pem`.
fn handshake(safe: &DevSafe, ca_pem: &str) -> Result<(), String> {
    let cfg = aegis_safe::tls::client_config(ca_pem).map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let mut conn = rustls::ClientConnection::new(cfg, name).map_err(|e| e.to_string())?;
    let mut tcp = TcpStream::connect(safe.addr).map_err(|e| e.to_string())?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn replace(path: &std::path::Path, contents: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn a_rotated_certificate_is_served_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let safe = DevSafe::start(dir.path()).unwrap();
    let old_ca = safe.ca_pem.clone();
    handshake(&safe, &old_ca).expect("the original certificate verifies");

    let new = aegis_safe::tls::generate_dev_certs().unwrap();
    // Key first, then certificate: in between the pair does not match, which the Safe must
    // ignore (keep serving the old pair) and pick up at a later poll.
    replace(&dir.path().join("tls.key"), &new.server_key);
    replace(&dir.path().join("tls.crt"), &new.server_cert);

    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(e) = handshake(&safe, &new.ca_cert) {
        assert!(
            Instant::now() < deadline,
            "the rotated certificate was not served within 30 s: {e}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        handshake(&safe, &old_ca).is_err(),
        "the old certificate is still served"
    );
    safe.stop();
}
