//! The container images, built the daemonless way (`make images-prebuilt`, i.e.
//! `images/build-oci.sh` with umoci) from the real static musl release build of the
//! init-shim, then read back as an OCI image layout: index.json → manifest → config and
//! layer, every blob checked against its digest, the entrypoint and user checked, and the
//! unpacked shim run the way the webhook's init container runs it.
//!
//! Needs: umoci, make, readelf (binutils), and the musl release shim:
//! `make musl COMPONENTS=init-shim` (CI runs it before the tests).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use aegis_e2e::tools::{self, ToolError};
use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

const MUSL_RELEASE: &str = "target/x86_64-unknown-linux-musl/release";
const VERSION: &str = "9.9.9-test";

/// The real static release build of a binary, or an error saying how to make it.
fn musl_binary(name: &str) -> Result<PathBuf> {
    let path = tools::repo_root().join(MUSL_RELEASE).join(name);
    ensure!(
        path.is_file(),
        "{} not found: build the static release binary first with \
         `make musl COMPONENTS=init-shim` (CI does this before the tests)",
        path.display()
    );
    Ok(path)
}

fn make() -> Result<PathBuf> {
    Ok(tools::find_tool(
        "make",
        "apt-get install make",
        tools::process_path().as_deref(),
    )?)
}

/// Runs the Makefile's daemonless image target for `components` from `bin_dir`.
fn build_images(bin_dir: &Path, out: &Path, components: &str, epoch: &str) -> Result<()> {
    tools::umoci()?;
    tools::run(
        Command::new(make()?)
            .current_dir(tools::repo_root())
            .arg("--no-print-directory")
            .arg("images-prebuilt")
            .arg(format!("BIN_DIR={}", bin_dir.display()))
            .arg(format!("OCI_DIR={}", out.display()))
            .arg(format!("COMPONENTS={components}"))
            .arg(format!("VERSION={VERSION}"))
            .arg("REVISION=0123456789abcdef")
            .env("SOURCE_DATE_EPOCH", epoch),
    )?;
    Ok(())
}

/// An OCI image layout read back from disk, with every blob verified against its digest.
struct Layout {
    dir: PathBuf,
    manifest: Value,
    config: Value,
    manifest_digest: String,
}

fn blob(dir: &Path, descriptor: &Value) -> Result<Vec<u8>> {
    let digest = descriptor["digest"]
        .as_str()
        .context("descriptor without digest")?;
    let hex = digest
        .strip_prefix("sha256:")
        .with_context(|| format!("not a sha256 digest: {digest}"))?;
    let bytes = std::fs::read(dir.join("blobs/sha256").join(hex))
        .with_context(|| format!("blob {digest} missing"))?;
    let actual = ring::digest::digest(&ring::digest::SHA256, &bytes);
    let actual: String = actual.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    ensure!(actual == hex, "blob {digest} has content sha256:{actual}");
    ensure!(
        descriptor["size"].as_u64() == Some(bytes.len() as u64),
        "blob {digest}: size {} in descriptor, {} on disk",
        descriptor["size"],
        bytes.len()
    );
    Ok(bytes)
}

fn read_layout(dir: &Path, tag: &str) -> Result<Layout> {
    let oci_layout: Value = serde_json::from_slice(&std::fs::read(dir.join("oci-layout"))?)?;
    ensure!(oci_layout["imageLayoutVersion"] == "1.0.0", "{oci_layout}");
    let index: Value = serde_json::from_slice(&std::fs::read(dir.join("index.json"))?)?;
    ensure!(index["schemaVersion"] == 2, "{index}");
    let manifests = index["manifests"]
        .as_array()
        .context("index without manifests")?;
    let descriptor = manifests
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .with_context(|| format!("no manifest tagged {tag}: {index}"))?;
    ensure!(
        descriptor["mediaType"] == "application/vnd.oci.image.manifest.v1+json",
        "{descriptor}"
    );
    let manifest: Value = serde_json::from_slice(&blob(dir, descriptor)?)?;
    ensure!(
        manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json",
        "{manifest}"
    );
    let config: Value = serde_json::from_slice(&blob(dir, &manifest["config"])?)?;
    for layer in manifest["layers"].as_array().context("no layers")? {
        ensure!(
            layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip",
            "{layer}"
        );
        blob(dir, layer)?;
    }
    Ok(Layout {
        dir: dir.to_path_buf(),
        manifest_digest: descriptor["digest"].as_str().unwrap_or("").to_string(),
        manifest,
        config,
    })
}

/// Unpacks the image's root filesystem with umoci; returns the bundle's rootfs.
fn unpack(layout: &Layout, tag: &str, into: &Path) -> Result<PathBuf> {
    let image = format!("{}:{tag}", layout.dir.display());
    tools::run(Command::new(tools::umoci()?).args(["stat", "--image", &image]))?;
    tools::run(
        Command::new(tools::umoci()?)
            .args(["unpack", "--rootless", "--image", &image])
            .arg(into),
    )?;
    Ok(into.join("rootfs"))
}

/// Regular files and directories under `root` (relative paths, sorted).
fn tree(root: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let rel = entry.path().strip_prefix(root)?.display().to_string();
            if entry.file_type()?.is_dir() {
                stack.push(entry.path());
            }
            out.push(rel);
        }
    }
    out.sort();
    Ok(out)
}

/// Whether an ELF executable asks for a program interpreter (a dynamic loader):
/// a `FROM scratch` image has none, so its binaries must not.
fn has_interpreter(elf: &[u8]) -> Result<bool> {
    ensure!(elf.get(..4) == Some(b"\x7fELF"), "not an ELF file");
    ensure!(
        elf.get(4) == Some(&2) && elf.get(5) == Some(&1),
        "not 64-bit little-endian ELF"
    );
    let u16_at = |o: usize| -> Result<u16> {
        Ok(u16::from_le_bytes(
            elf.get(o..o + 2).context("truncated ELF")?.try_into()?,
        ))
    };
    let u32_at = |o: usize| -> Result<u32> {
        Ok(u32::from_le_bytes(
            elf.get(o..o + 4).context("truncated ELF")?.try_into()?,
        ))
    };
    let u64_at = |o: usize| -> Result<u64> {
        Ok(u64::from_le_bytes(
            elf.get(o..o + 8).context("truncated ELF")?.try_into()?,
        ))
    };
    ensure!(u16_at(18)? == 62, "not x86-64 (e_machine {})", u16_at(18)?);
    let phoff = usize::try_from(u64_at(32)?)?;
    let phentsize = usize::from(u16_at(54)?);
    let phnum = usize::from(u16_at(56)?);
    const PT_INTERP: u32 = 3;
    for i in 0..phnum {
        if u32_at(phoff + i * phentsize)? == PT_INTERP {
            return Ok(true);
        }
    }
    Ok(false)
}

#[test]
fn musl_release_shim_is_static() -> Result<()> {
    let shim = std::fs::read(musl_binary("aegis-init-shim")?)?;
    ensure!(
        !has_interpreter(&shim)?,
        "the musl shim asks for a dynamic loader"
    );
    // The check is not vacuous: a normal Debian binary has an interpreter.
    ensure!(
        has_interpreter(&std::fs::read("/bin/true")?)?,
        "/bin/true looked static"
    );
    Ok(())
}

#[test]
fn make_images_builds_a_valid_oci_image_of_the_musl_shim() -> Result<()> {
    let shim = musl_binary("aegis-init-shim")?;
    let work = tempfile::tempdir()?;
    let out = work.path().join("oci");
    build_images(
        shim.parent().context("bin dir")?,
        &out,
        "init-shim",
        "1700000000",
    )?;
    let layout = read_layout(&out.join("aegis-init-shim"), VERSION)?;

    // What the kubelet runs: the entrypoint, as a numeric non-root user, on linux/amd64.
    let config = &layout.config;
    ensure!(
        config["os"] == "linux" && config["architecture"] == "amd64",
        "{config}"
    );
    ensure!(
        config["config"]["Entrypoint"] == serde_json::json!(["/aegis-init-shim"]),
        "{config}"
    );
    ensure!(
        config["config"]["Cmd"].is_null(),
        "the shim image has no CMD: {config}"
    );
    ensure!(config["config"]["User"] == "65532:65532", "{config}");
    let labels: BTreeMap<String, String> =
        serde_json::from_value(config["config"]["Labels"].clone())?;
    for (key, expected) in [
        ("org.opencontainers.image.title", "aegis-init-shim"),
        ("org.opencontainers.image.version", VERSION),
        ("org.opencontainers.image.revision", "0123456789abcdef"),
        ("org.opencontainers.image.created", "2023-11-14T22:13:20Z"),
        ("org.opencontainers.image.licenses", "Apache-2.0"),
        (
            "org.opencontainers.image.source",
            "https://github.com/shieldworks/aegis",
        ),
    ] {
        ensure!(
            labels.get(key).map(String::as_str) == Some(expected),
            "{key}: {labels:?}"
        );
    }
    ensure!(
        layout.manifest["annotations"]["org.opencontainers.image.title"] == "aegis-init-shim",
        "manifest annotations: {}",
        layout.manifest
    );
    ensure!(
        layout.manifest["layers"].as_array().map(Vec::len) == Some(1),
        "one layer: the binary"
    );

    // FROM scratch: the root filesystem is the binary alone, byte for byte, mode 0555.
    let rootfs = unpack(&layout, VERSION, &work.path().join("bundle"))?;
    ensure!(
        tree(&rootfs)? == ["aegis-init-shim"],
        "rootfs: {:?}",
        tree(&rootfs)?
    );
    let inside = rootfs.join("aegis-init-shim");
    ensure!(
        std::fs::read(&inside)? == std::fs::read(&shim)?,
        "binary differs"
    );
    ensure!(
        inside.metadata()?.permissions().mode() & 0o777 == 0o555,
        "mode {:o}",
        inside.metadata()?.permissions().mode()
    );

    // Run it as the webhook's init container does: `aegis-init-shim install /aegis/bin`.
    let bin = work.path().join("aegis-bin");
    std::fs::create_dir(&bin)?;
    tools::run(Command::new(&inside).arg("install").arg(&bin).env_clear())?;
    let installed = bin.join("aegis-init-shim");
    ensure!(
        std::fs::read(&installed)? == std::fs::read(&shim)?,
        "installed copy differs"
    );
    Ok(())
}

#[test]
fn image_build_is_reproducible() -> Result<()> {
    let shim = musl_binary("aegis-init-shim")?;
    let work = tempfile::tempdir()?;
    let mut digests = Vec::new();
    for run in ["a", "b"] {
        let out = work.path().join(run);
        build_images(
            shim.parent().context("bin dir")?,
            &out,
            "init-shim",
            "1700000000",
        )?;
        digests.push(read_layout(&out.join("aegis-init-shim"), VERSION)?.manifest_digest);
        // Different wall-clock seconds between the two builds must not matter.
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    ensure!(digests[0] == digests[1], "digests differ: {digests:?}");
    Ok(())
}

#[test]
fn each_component_image_has_the_dockerfiles_entrypoint_command_and_user() -> Result<()> {
    // The static shim stands in for every component's binary here: this checks the image
    // configuration the script gives each component against the Dockerfile's targets.
    let shim = musl_binary("aegis-init-shim")?;
    let work = tempfile::tempdir()?;
    let bins = work.path().join("bin");
    std::fs::create_dir(&bins)?;
    for name in ["aegis-safe", "aegis-webhook", "aegis-init-shim", "aegis"] {
        std::fs::copy(&shim, bins.join(name))?;
    }
    let out = work.path().join("oci");
    build_images(&bins, &out, "safe webhook init-shim cli", "1700000000")?;
    let dockerfile = dockerfile_targets(&std::fs::read_to_string(
        tools::repo_root().join("Dockerfile"),
    )?)?;
    for (target, image) in [
        ("safe", "aegis-safe"),
        ("webhook", "aegis-webhook"),
        ("init-shim", "aegis-init-shim"),
        ("cli", "aegis"),
    ] {
        let layout = read_layout(&out.join(image), VERSION)?;
        let config = &layout.config["config"];
        let docker = dockerfile
            .get(target)
            .with_context(|| format!("Dockerfile has no target {target}"))?;
        ensure!(
            config["Entrypoint"] == docker.entrypoint,
            "{target}: {config} vs {docker:?}"
        );
        let cmd = if config["Cmd"].is_null() {
            Value::Null
        } else {
            config["Cmd"].clone()
        };
        ensure!(cmd == docker.cmd, "{target}: CMD {cmd} vs {:?}", docker.cmd);
        ensure!(
            config["User"] == docker.user.as_str(),
            "{target}: user {}",
            config["User"]
        );
        ensure!(
            config["Labels"]["org.opencontainers.image.title"] == docker.title.as_str(),
            "{target}: title"
        );
    }
    Ok(())
}

/// What a Dockerfile target sets, inheriting from its `FROM <stage>`.
#[derive(Debug, Clone, Default)]
struct Target {
    entrypoint: Value,
    cmd: Value,
    user: String,
    title: String,
}

fn dockerfile_targets(text: &str) -> Result<BTreeMap<String, Target>> {
    let mut stages: BTreeMap<String, Target> = BTreeMap::new();
    let mut current: Option<(String, Target)> = None;
    // Join continuation lines first.
    let joined = text.replace("\\\n", " ");
    for line in joined.lines().map(str::trim) {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (instr, rest) = line.split_once(' ').unwrap_or((line, ""));
        match instr {
            "FROM" => {
                if let Some((name, t)) = current.take() {
                    stages.insert(name, t);
                }
                let parts: Vec<&str> = rest.split_whitespace().collect();
                let Some(name) = parts
                    .iter()
                    .position(|p| p.eq_ignore_ascii_case("AS"))
                    .and_then(|i| parts.get(i + 1))
                else {
                    bail!("unnamed stage: {line}");
                };
                let base = stages.get(parts[0]).cloned().unwrap_or_default();
                current = Some((name.to_string(), base));
            }
            "ENTRYPOINT" | "CMD" | "USER" | "LABEL" => {
                let Some((_, t)) = current.as_mut() else {
                    bail!("{instr} before FROM")
                };
                match instr {
                    "ENTRYPOINT" => t.entrypoint = serde_json::from_str(rest)?,
                    "CMD" => t.cmd = serde_json::from_str(rest)?,
                    "USER" => t.user = rest.to_string(),
                    _ => {
                        if let Some(v) = rest.split("org.opencontainers.image.title=\"").nth(1) {
                            t.title = v.split('"').next().unwrap_or("").to_string();
                        }
                    }
                }
            }
            _ => {}
        }
    }
    if let Some((name, t)) = current {
        stages.insert(name, t);
    }
    Ok(stages)
}

#[test]
fn image_build_refuses_a_dynamically_linked_binary() -> Result<()> {
    let work = tempfile::tempdir()?;
    let bins = work.path().join("bin");
    std::fs::create_dir(&bins)?;
    // /bin/true needs glibc's loader, which a FROM scratch image does not have.
    std::fs::copy("/bin/true", bins.join("aegis-init-shim"))?;
    match build_images(&bins, &work.path().join("oci"), "init-shim", "0") {
        Err(e) => match e.downcast_ref::<ToolError>() {
            Some(ToolError::Failed { stderr, .. }) => {
                ensure!(stderr.contains("dynamically linked"), "{stderr}");
                Ok(())
            }
            _ => Err(e),
        },
        Ok(()) => bail!("a dynamically linked binary was packaged"),
    }
}
