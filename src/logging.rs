//! Logging: `-v`/`-q` (and `OCIMUX_LOG`) to a level, one line per record
//! with control characters escaped.

use std::io::Write;

use ocimux::error::printable;

pub(crate) fn init_logging(verbose: u8, quiet: u8) {
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
    let logger = env_logger::Builder::new()
        .filter_level(level)
        .filter_module("fuser", fuser_level)
        .parse_env("OCIMUX_LOG")
        .format(|buf, record| {
            let level = record.level().to_string().to_lowercase();
            let msg = record.args().to_string();
            writeln!(buf, "ocimux: {level}: {}", printable(&msg))
        })
        .build();
    let max = logger.filter();
    if log::set_boxed_logger(Box::new(Quiet(logger))).is_ok() {
        log::set_max_level(max);
    }
}

/// The logger, less one expected race logged as an error by fuser: a reply
/// to a request the client interrupted meanwhile (Go clients do) finds the
/// request gone (ENOENT). Shown at debug level only.
struct Quiet(env_logger::Logger);

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
            self.0.log(record);
        } else if log::max_level() >= log::LevelFilter::Debug {
            self.0.log(
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
