//! Logging: `-v`/`-q` (and `OCIMUX_LOG`) to a level, one line per record
//! with control characters escaped, as text or JSON (`--log-format`). The
//! server's access lines (target `access`) are shown at the default level.

use std::io::Write;

use log::Log as _;

use ocimux::error::printable;

use crate::cli::LogFormat;

pub(crate) fn init_logging(verbose: u8, quiet: u8, format: LogFormat) {
    let level = match (i16::from(verbose) - i16::from(quiet)).clamp(-2, 3) {
        -2 => log::LevelFilter::Off,
        -1 => log::LevelFilter::Error,
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        2 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    };
    // fuser logs routine events (and a spurious unmount warning after an
    // external unmount) at info/warn: show them from -vv on.
    let fuser_level = if verbose >= 2 {
        level
    } else {
        level.min(log::LevelFilter::Error)
    };
    // One line per request is what a server's operator expects to see.
    let access_level = match quiet {
        0 => level.max(log::LevelFilter::Info),
        _ => level,
    };
    let logger = env_logger::Builder::new()
        .filter_level(level)
        .filter_module("fuser", fuser_level)
        .filter_module(ocimux::serve::accesslog::TARGET, access_level)
        .parse_env("OCIMUX_LOG")
        .format(move |buf, record| match format {
            LogFormat::Text => {
                let level = record.level().to_string().to_lowercase();
                let msg = record.args().to_string();
                writeln!(buf, "ocimux: {level}: {}", printable(&msg))
            }
            LogFormat::Json => writeln!(buf, "{}", json_line(record)),
        })
        .build();
    let max = logger.filter();
    if log::set_boxed_logger(Box::new(Quiet(logger, format))).is_ok() {
        log::set_max_level(max);
    }
}

/// A record as one JSON object: time (RFC 3339, UTC), level, target,
/// message, and its key-values as fields (numbers as numbers). serde_json
/// escapes every control character.
fn json_line(record: &log::Record<'_>) -> String {
    struct Fields(serde_json::Map<String, serde_json::Value>);
    impl<'kvs> log::kv::VisitSource<'kvs> for Fields {
        fn visit_pair(
            &mut self,
            key: log::kv::Key<'kvs>,
            value: log::kv::Value<'kvs>,
        ) -> Result<(), log::kv::Error> {
            let v = match (value.to_u64(), value.to_f64(), value.to_bool()) {
                (Some(n), _, _) => serde_json::Value::from(n),
                (_, Some(f), _) => serde_json::Value::from(f),
                (_, _, Some(b)) => serde_json::Value::from(b),
                _ => serde_json::Value::from(value.to_string()),
            };
            self.0.insert(key.to_string(), v);
            Ok(())
        }
    }
    let mut fields = Fields(serde_json::Map::new());
    fields.0.insert("time".into(), rfc3339_now().into());
    fields.0.insert(
        "level".into(),
        record.level().to_string().to_lowercase().into(),
    );
    fields.0.insert("target".into(), record.target().into());
    fields
        .0
        .insert("message".into(), record.args().to_string().into());
    let _ = record.key_values().visit(&mut fields);
    serde_json::Value::Object(fields.0).to_string()
}

/// Now, as `2026-12-05T16:13:40.123Z`.
fn rfc3339_now() -> String {
    ocimux::human::rfc3339(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default(),
    )
}

/// The logger, less one expected race logged as an error by fuser: a reply
/// to a request the client interrupted meanwhile (Go clients do) finds the
/// request gone (ENOENT). Shown at debug level only. A detached daemon
/// without a log file sends its records to the system log instead (the
/// level as the priority, the text escaped or the JSON object).
struct Quiet(env_logger::Logger, LogFormat);

impl Quiet {
    fn write(&self, record: &log::Record<'_>) {
        use ocimux::process::syslog;
        if !syslog::diverted() {
            return self.0.log(record);
        }
        if !self.0.matches(record) {
            return;
        }
        let text = match self.1 {
            LogFormat::Text => printable(&record.args().to_string()).into_owned(),
            LogFormat::Json => json_line(record),
        };
        syslog::send(record.level(), &text);
    }
}

impl log::Log for Quiet {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.0.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        let interrupted = record.target().starts_with("fuser")
            && record.level() == log::Level::Error
            && record
                .args()
                .to_string()
                .starts_with("Failed to send FUSE reply: No such file or directory");
        if !interrupted {
            self.write(record);
        } else if log::max_level() >= log::LevelFilter::Debug {
            self.write(
                &log::Record::builder()
                    .args(format_args!("reply to an interrupted request dropped"))
                    .level(log::Level::Debug)
                    .target("ocimux")
                    .build(),
            );
        }
    }

    fn flush(&self) {
        self.0.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_carry_fields_and_escape_everything() {
        let kvs: [(&str, log::kv::Value<'_>); 3] = [
            ("path", log::kv::Value::from("/v2/a\n\u{1b}[31m")),
            ("written", log::kv::Value::from(1000u64)),
            ("complete", log::kv::Value::from(false)),
        ];
        let record = log::Record::builder()
            .args(format_args!("a \"line\"\n"))
            .level(log::Level::Info)
            .target("access")
            .key_values(&kvs)
            .build();
        let line = json_line(&record);
        assert!(!line.contains('\n') && !line.contains('\u{1b}'), "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["level"], "info");
        assert_eq!(v["target"], "access");
        assert_eq!(v["message"], "a \"line\"\n");
        assert_eq!(v["written"], 1000);
        assert_eq!(v["complete"], false);
        assert_eq!(v["path"], "/v2/a\n\u{1b}[31m");
    }
}
