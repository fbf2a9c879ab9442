//! The `ocimux` command: parses and validates arguments, reads every source
//! before anything is mounted, and reports failures as one line with a
//! distinct exit code.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use ocimux::Error;
use ocimux::daemon::{self, MountConfig, MountError, MountOptions, Served};
use ocimux::error::printable;
use ocimux::index::{self, Composition, IndexOptions, Row};
use ocimux::plan::Plan;
use ocimux::source::SourceSpec;
use ocimux::tag::Tag;

/// Exit codes (documented in README.md).
mod exit {
    /// Anything not covered below.
    pub const OTHER: u8 = 1;
    /// Bad input: a source, an argument, a mount option.
    pub const BAD_INPUT: u8 = 2;
    /// The mountpoint was refused or the mount failed.
    pub const MOUNT: u8 = 3;
    /// `umount` of a path that is not an ocimux mount, or that would not unmount.
    pub const UMOUNT: u8 = 4;
}

#[derive(Parser, Debug)]
#[command(
    name = "ocimux",
    version,
    about = "Per-arch OCI image layouts as one virtual multi-arch layout, without copying"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// More log output (-v info, -vv debug, -vvv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Less log output (-q errors only, -qq nothing).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    quiet: u8,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Mount the sources as one multi-arch OCI image layout at MOUNTPOINT.
    Mount(MountArgs),
    /// Unmount an ocimux mount and wait for its daemon to exit.
    Umount {
        /// The mountpoint.
        mountpoint: PathBuf,
        /// Detach now, clean up when no longer busy (umount -l).
        #[arg(short, long)]
        lazy: bool,
        /// Seconds to wait for the daemon to exit before aborting its FUSE
        /// connection (an error).
        #[arg(long, value_name = "SECS", default_value_t = 30)]
        timeout: u64,
    },
    /// Show what a mount of the sources would serve, without mounting.
    Inspect {
        #[command(flatten)]
        compose: ComposeArgs,
        /// Print exactly the image index bytes the mount would serve.
        #[arg(long)]
        raw: bool,
    },
}

#[derive(Args, Debug)]
struct ComposeArgs {
    /// Sources: [PLATFORM=]PATH, PATH an OCI image layout directory, PLATFORM
    /// os/arch[/variant] (overrides the image config).
    #[arg(required = true, value_name = "SOURCE")]
    sources: Vec<String>,
    /// The ref name (tag) of the single index.json entry.
    #[arg(long, default_value = "latest")]
    tag: String,
    /// Which entry of a source's index.json to take, by ref name (default: the
    /// only entry, else "latest").
    #[arg(long = "ref", value_name = "NAME")]
    ref_name: Option<String>,
    /// An annotation on the generated image index (repeatable).
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    annotations: Vec<String>,
}

#[derive(Args, Debug)]
struct MountArgs {
    /// Where to mount: an empty directory.
    mountpoint: PathBuf,
    #[command(flatten)]
    compose: ComposeArgs,
    /// Stay in the foreground (log to stderr).
    #[arg(short, long)]
    foreground: bool,
    /// Mount options, comma separated (allow_other, allow_root,
    /// default_permissions, auto_unmount, noexec).
    #[arg(short = 'o', value_name = "OPT[,OPT...]")]
    options: Vec<String>,
    /// Where the detached daemon writes its log.
    #[arg(long, value_name = "PATH")]
    log_file: Option<PathBuf>,
    /// FUSE request threads, 1 to 64 (default: CPUs, at most 8).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    threads: Option<u16>,
    /// Do not follow source changes (by default a rebuilt source shows up in the mount).
    #[arg(long = "static")]
    static_sources: bool,
    /// Serve every read from the daemon, even where the kernel offers passthrough.
    #[arg(long)]
    no_passthrough: bool,
    /// Hash each blob the first time it is opened (once per file version) and
    /// fail the open if the bytes do not match the blob's digest.
    #[arg(long)]
    verify: bool,
    /// Readahead of the mount, in KiB, 0 to 65536 (0 leaves the kernel's default).
    #[arg(long, value_name = "KIB", default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(0..=65536))]
    readahead_kb: u32,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.quiet);
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line, whatever a source put in the names it contributed.
            eprintln!("ocimux: {}", printable(&format!("{err:#}")));
            ExitCode::from(exit_code(&err))
        }
    }
}

fn init_logging(verbose: u8, quiet: u8) {
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

fn exit_code(err: &anyhow::Error) -> u8 {
    if err.downcast_ref::<ocimux::Error>().is_some() {
        return exit::BAD_INPUT;
    }
    match err.downcast_ref::<MountError>() {
        Some(MountError::Option(_) | MountError::LogFile { .. }) => exit::BAD_INPUT,
        Some(MountError::NotOurs(_) | MountError::Unmount { .. }) => exit::UMOUNT,
        Some(_) => exit::MOUNT,
        None => exit::OTHER,
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Mount(args) => mount(args),
        Command::Umount {
            mountpoint,
            lazy,
            timeout,
        } => Ok(ocimux::mountpoint::umount(
            &mountpoint,
            lazy,
            Duration::from_secs(timeout),
        )?),
        Command::Inspect { compose: args, raw } => {
            let comp = plan(&args)?.compose()?;
            let mut out = std::io::stdout().lock();
            if raw {
                out.write_all(&comp.index)?;
            } else {
                print_table(&mut out, &comp)?;
            }
            Ok(out.flush()?)
        }
    }
}

/// Validates the arguments into a plan.
fn plan(args: &ComposeArgs) -> anyhow::Result<Plan> {
    let tag = Tag::parse(&args.tag).map_err(|why| Error::Argument {
        what: "tag",
        value: args.tag.clone(),
        why: why.to_string(),
    })?;
    let annotations: BTreeMap<String, String> = args
        .annotations
        .iter()
        .map(|a| index::parse_annotation(a))
        .collect::<Result<_, _>>()?;
    let specs: Vec<SourceSpec> = args
        .sources
        .iter()
        .map(|s| SourceSpec::parse(s))
        .collect::<Result<_, _>>()?;
    Ok(Plan {
        specs,
        ref_name: args.ref_name.clone(),
        opts: IndexOptions { tag, annotations },
    })
}

fn print_table(out: &mut impl Write, comp: &Composition) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<16} {:<71} {:>8}  SOURCE",
        "PLATFORM", "MANIFEST DIGEST", "SIZE"
    )?;
    for Row { source, image } in &comp.rows {
        writeln!(
            out,
            "{:<16} {:<71} {:>8}  {}",
            printable(&image.platform.to_string()),
            image.digest.to_string(),
            image.size,
            printable(source)
        )?;
    }
    let bytes: u64 = comp.blobs.iter().map(|b| b.size).sum();
    writeln!(
        out,
        "index {} ({} bytes); {} blobs, {bytes} bytes served from sources",
        comp.index_digest,
        comp.index.len(),
        comp.blobs.len()
    )
}

fn mount(args: MountArgs) -> anyhow::Result<()> {
    let options = MountOptions::parse(args.options.iter().map(String::as_str))?;
    let claimed = ocimux::mountpoint::claim(&args.mountpoint)?;
    let plan = plan(&args.compose)?;
    let comp = plan.compose()?;
    let log_file = match &args.log_file {
        // The daemon moves to `/`: make the path absolute first.
        Some(p) => {
            Some(std::path::absolute(p).with_context(|| format!("log file {}", p.display()))?)
        }
        None => None,
    };
    let threads = args.threads.map_or_else(
        || std::thread::available_parallelism().map_or(2, |n| n.get().min(8)),
        usize::from,
    );
    log::info!(
        "serving {} blobs, index {}",
        comp.blobs.len() + 1,
        comp.index_digest
    );
    let cfg = MountConfig {
        mountpoint: claimed.path.clone(),
        foreground: args.foreground,
        log_file,
        options,
        threads,
        passthrough: !args.no_passthrough,
        readahead_kb: args.readahead_kb,
        live: !args.static_sources,
        verify: args.verify,
    };
    Ok(daemon::mount(Served { plan, first: comp }, &cfg, claimed)?)
}
