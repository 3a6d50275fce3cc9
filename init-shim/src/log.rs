//! A minimal structured logger: one logfmt line per event on stderr.
//!
//! The shim logs a handful of events in its whole life, so a subscriber crate would cost
//! more binary than it saves code. Invariant: callers pass only names, counts, codes and
//! reasons as fields, never a secret value or the token, at any level. Each line is
//! written with a single `write` so lines from CMD and the shim do not interleave.

use std::fmt::{self, Display, Write as _};
use std::io::Write as _;
use std::str::FromStr;

/// Severity, most severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// The shim is about to exit without running CMD.
    Error,
    /// Something the operator should fix, e.g. a pod variable shadowing a secret.
    Warn,
    /// One line per successful start.
    Info,
    /// Every retry and its reason.
    Debug,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
        }
    }
}

impl FromStr for Level {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "error" => Ok(Self::Error),
            "warn" | "warning" => Ok(Self::Warn),
            "info" => Ok(Self::Info),
            // `trace` is accepted so a cluster-wide "trace" setting does not stop pods.
            "debug" | "trace" => Ok(Self::Debug),
            other => Err(format!(
                "unknown log level {other:?}: use error, warn, info or debug"
            )),
        }
    }
}

/// Writes events at or above a level to stderr.
#[derive(Debug, Clone, Copy)]
pub struct Logger {
    max: Level,
}

impl Logger {
    /// A logger that prints `max` and everything more severe.
    pub fn new(max: Level) -> Self {
        Self { max }
    }

    /// Whether events at `level` are printed.
    pub fn enabled(&self, level: Level) -> bool {
        level <= self.max
    }

    /// Prints one event. Fields must never hold a secret value.
    pub fn log(&self, level: Level, msg: &str, fields: &[(&str, &dyn Display)]) {
        if self.enabled(level) {
            let line = format_line(level, msg, fields);
            // Nothing useful can be done if stderr is gone; the exit code still tells.
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        }
    }
}

/// `aegis-init-shim level=warn msg="..." key=value\n`, quoting where needed.
pub fn format_line(level: Level, msg: &str, fields: &[(&str, &dyn Display)]) -> String {
    let mut line = String::with_capacity(128);
    line.push_str("aegis-init-shim level=");
    line.push_str(level.as_str());
    line.push_str(" msg=");
    push_value(&mut line, msg);
    for (name, value) in fields {
        line.push(' ');
        line.push_str(name);
        line.push('=');
        push_value(&mut line, &value.to_string());
    }
    line.push('\n');
    line
}

fn push_value(line: &mut String, value: &str) {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '"' && c != '=' && c != '\\');
    if plain {
        line.push_str(value);
        return;
    }
    line.push('"');
    for c in value.chars() {
        match c {
            '"' => line.push_str("\\\""),
            '\\' => line.push_str("\\\\"),
            '\n' => line.push_str("\\n"),
            '\r' => line.push_str("\\r"),
            // Other control characters could forge log lines; show them escaped.
            c if c.is_control() => {
                let _ = write!(line, "\\u{{{:x}}}", c as u32);
            }
            c => line.push(c),
        }
    }
    line.push('"');
}

/// Displays a list of names as `A,B,C` for a log field.
pub struct List<'a, T>(pub &'a [T]);

impl<T: Display> Display for List<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, item) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            item.fmt(f)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_logfmt_with_quoting() {
        let line = format_line(
            Level::Warn,
            "pod variable wins",
            &[("key", &"DB_PASSWORD"), ("n", &3), ("why", &"a \"b\"\nc")],
        );
        assert_eq!(
            line,
            "aegis-init-shim level=warn msg=\"pod variable wins\" key=DB_PASSWORD n=3 why=\"a \\\"b\\\"\\nc\"\n"
        );
    }

    #[test]
    fn escapes_control_characters_and_empty_values() {
        let line = format_line(Level::Error, "x\u{1b}[2J", &[("empty", &"")]);
        assert_eq!(
            line,
            "aegis-init-shim level=error msg=\"x\\u{1b}[2J\" empty=\"\"\n"
        );
    }

    #[test]
    fn levels_parse_and_order() {
        assert_eq!("WARN".parse::<Level>(), Ok(Level::Warn));
        assert_eq!("trace".parse::<Level>(), Ok(Level::Debug));
        assert!("loud".parse::<Level>().is_err());
        let l = Logger::new(Level::Warn);
        assert!(l.enabled(Level::Error) && l.enabled(Level::Warn));
        assert!(!l.enabled(Level::Info) && !l.enabled(Level::Debug));
    }

    #[test]
    fn lists_join_with_commas() {
        assert_eq!(List(&["A", "B"]).to_string(), "A,B");
        assert_eq!(List::<&str>(&[]).to_string(), "");
    }
}
