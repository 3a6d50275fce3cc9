//! `aegis secret put|list|delete`: read the value safely, call the Safe, print the result.

use crate::args::{OutputFormat, SecretArgs, SecretCommand};
use crate::client::SafeClient;
use crate::CliError;
use aegis_core::{Limits, SecretValue, Workload, WorkloadList};
use std::io::{IsTerminal, Read};
use std::process::ExitCode;

/// Runs a `secret` subcommand.
pub async fn run(args: SecretArgs) -> Result<ExitCode, CliError> {
    match args.action {
        SecretCommand::Put {
            workload,
            key,
            from_file,
            value,
        } => {
            let workload = parse_workload(&workload)?;
            Limits::default()
                .check_key(&key)
                .map_err(|e| CliError::Usage(e.to_string()))?;
            let source = match (from_file, value) {
                (Some(path), _) => ValueSource::File(path),
                (None, Some(v)) => {
                    eprintln!("warning: --value leaks the secret into shell history and process listings; prefer stdin or --from-file");
                    ValueSource::Flag(v)
                }
                (None, None) if std::io::stdin().is_terminal() => ValueSource::Prompt,
                (None, None) => ValueSource::Stdin,
            };
            let value = read_value(source, &workload, &key)?;
            Limits::default()
                .check_value(value.expose())
                .map_err(|e| CliError::Usage(e.to_string()))?;
            let client = SafeClient::connect(&args.connection)?;
            let out = client.put(&workload, &key, value).await?;
            println!(
                "{} {workload} {} (version {}, {})",
                if out.created { "created" } else { "updated" },
                out.response.key,
                out.response.version,
                out.response.fingerprint
            );
            Ok(ExitCode::SUCCESS)
        }
        SecretCommand::List { workload, output } => {
            let filter = workload.as_deref().map(parse_workload).transpose()?;
            let client = SafeClient::connect(&args.connection)?;
            let mut list = client.list().await?;
            if let Some(w) = &filter {
                list.workloads.retain(|e| &e.workload == w);
            }
            match output {
                OutputFormat::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&list)
                        .map_err(|e| CliError::Usage(format!("encoding JSON: {e}")))?
                ),
                OutputFormat::Table => print!("{}", render_table(&list)),
            }
            Ok(ExitCode::SUCCESS)
        }
        SecretCommand::Delete { workload, key } => {
            let workload = parse_workload(&workload)?;
            Limits::default()
                .check_key(&key)
                .map_err(|e| CliError::Usage(e.to_string()))?;
            let client = SafeClient::connect(&args.connection)?;
            client.delete(&workload, &key).await?;
            println!("deleted {workload} {key}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn parse_workload(s: &str) -> Result<Workload, CliError> {
    s.parse()
        .map_err(|e: aegis_core::WorkloadError| CliError::Usage(e.to_string()))
}

/// Where a value comes from.
#[derive(Debug)]
pub enum ValueSource {
    /// `--from-file`: bytes as they are.
    File(std::path::PathBuf),
    /// `--value`: as given.
    Flag(String),
    /// A terminal prompt without echo: one trailing newline removed.
    Prompt,
    /// Piped stdin: one trailing newline removed (so `echo` works as people expect).
    Stdin,
}

/// Reads the value from its source. Stdin and prompt lose one trailing `\n` or `\r\n`;
/// files are taken byte for byte.
pub fn read_value(
    source: ValueSource,
    workload: &Workload,
    key: &str,
) -> Result<SecretValue, CliError> {
    let raw = match source {
        ValueSource::File(path) => {
            let bytes = std::fs::read(&path)
                .map_err(|e| CliError::io(format!("reading {}", path.display()), e))?;
            return utf8(bytes, &format!("{}", path.display()));
        }
        ValueSource::Flag(v) => return Ok(SecretValue::new(v)),
        ValueSource::Prompt => rpassword::prompt_password(format!("Value for {workload} {key}: "))
            .map_err(|e| CliError::io("reading the value from the terminal", e))?,
        ValueSource::Stdin => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| CliError::io("reading the value from stdin", e))?;
            let s = utf8(buf, "stdin")?;
            s.expose().to_string()
        }
    };
    Ok(SecretValue::new(strip_one_newline(raw)))
}

fn utf8(bytes: Vec<u8>, what: &str) -> Result<SecretValue, CliError> {
    String::from_utf8(bytes)
        .map(SecretValue::new)
        .map_err(|e| {
            let mut b = e.into_bytes();
            zeroize::Zeroize::zeroize(&mut b);
            CliError::Usage(format!("the value from {what} is not UTF-8 text; Aegis stores environment variables, which must be text"))
        })
}

/// Removes one trailing `\n` or `\r\n`.
pub fn strip_one_newline(mut s: String) -> String {
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
    s
}

/// Renders `aegis secret list` as a table.
pub fn render_table(list: &WorkloadList) -> String {
    let mut rows = vec![[
        "WORKLOAD".to_string(),
        "KEY".to_string(),
        "VERSION".to_string(),
        "FINGERPRINT".to_string(),
        "UPDATED".to_string(),
    ]];
    for w in &list.workloads {
        for k in &w.secrets {
            // 16 hex digits identify a value in practice; `-o json` has all 64.
            let fp: String = k.fingerprint.chars().take("sha256:".len() + 16).collect();
            rows.push([
                w.workload.to_string(),
                k.key.clone(),
                k.version.to_string(),
                fp,
                k.updated_at.clone(),
            ]);
        }
    }
    if rows.len() == 1 {
        return "no secrets stored\n".to_string();
    }
    let mut widths = [0usize; 5];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use aegis_core::{KeyMeta, WorkloadEntry};

    #[test]
    fn strips_exactly_one_trailing_newline() {
        assert_eq!(strip_one_newline("a\n".into()), "a");
        assert_eq!(strip_one_newline("a\r\n".into()), "a");
        assert_eq!(strip_one_newline("a\n\n".into()), "a\n");
        assert_eq!(strip_one_newline("a".into()), "a");
    }

    #[test]
    fn table_lists_every_key_with_a_short_fingerprint() {
        let list = WorkloadList {
            workloads: vec![WorkloadEntry {
                workload: "demo/app".parse().unwrap(),
                revision: 2,
                secrets: vec![KeyMeta {
                    key: "DB_PASSWORD".into(),
                    version: 2,
                    fingerprint: format!("sha256:{}", "ab".repeat(32)),
                    created_at: "2026-01-01T00:00:00Z".into(),
                    updated_at: "2026-01-02T00:00:00Z".into(),
                }],
            }],
        };
        let t = render_table(&list);
        assert!(t.starts_with("WORKLOAD"));
        assert!(t.contains("demo/app  DB_PASSWORD  2"));
        assert!(t.contains(&format!("sha256:{}", "ab".repeat(8))));
        assert!(!t.contains(&"ab".repeat(9)));
        assert_eq!(
            render_table(&WorkloadList { workloads: vec![] }),
            "no secrets stored\n"
        );
    }
}
