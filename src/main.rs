//! The `ocimux` command: parses and validates arguments, reads every source
//! before anything is mounted, and reports failures as one line with a
//! distinct exit code.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, CommandFactory, Parser, Subcommand};

use ocimux::Error;
use ocimux::daemon::{self, MountConfig, MountError, MountOptions, Served};
use ocimux::error::printable;
use ocimux::export::{ExportOptions, Format, LinkMode};
use ocimux::index::{self, Composition, IndexOptions};
use ocimux::plan::Plan;
use ocimux::platform::Platform;
use ocimux::source::SourceSpec;
use ocimux::tag::Tag;
use ocimux::{check, fstab, inspect};

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
    ///
    /// Example: ocimux mount /mnt/app linux/arm/v7=deploy/arm-oci deploy/amd64-oci
    ///
    /// With `-- CMD [ARGS...]`, runs CMD with the mount in place ($OCIMUX_MNT),
    /// unmounts afterwards and exits with CMD's status:
    /// ocimux mount --tmp deploy/*-oci -- sh -c 'skopeo copy --all oci:"$OCIMUX_MNT" docker://reg/app'
    ///
    /// mount(8) and fstab use the form `ocimux SOURCE[:SOURCE...] MOUNTPOINT -o OPTIONS`
    /// (see README.md).
    Mount(MountArgs),
    /// Unmount an ocimux mount and wait for its daemon to exit.
    ///
    /// Example: ocimux umount /mnt/app
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
    ///
    /// Example: ocimux inspect --json deploy/arm64-oci deploy/amd64-oci
    Inspect {
        /// The sources. SOURCE is [PLATFORM=]PATH, oci:PATH[:REF] or
        /// oci-archive:PATH[:REF]: PATH an OCI image layout directory or an
        /// uncompressed tar of one, REF the ref name of its index.json entry,
        /// PLATFORM os/arch[/variant] (overrides the image config).
        #[arg(required = true, value_name = "SOURCE")]
        sources: Vec<String>,
        #[command(flatten)]
        index: IndexArgs,
        /// Print exactly the image index bytes the mount would serve.
        #[arg(long, conflicts_with = "json")]
        raw: bool,
        /// Print every file of the virtual layout as JSON: its source, file,
        /// size and media type.
        #[arg(long)]
        json: bool,
    },
    /// Write the layout a mount would serve to OUT, for machines without FUSE.
    ///
    /// Example: ocimux export --format oci-archive app.tar deploy/arm64-oci deploy/amd64-oci
    Export(ExportArgs),
    /// Hash every blob reachable from the sources (or from a mounted layout)
    /// and check it against its digest and descriptor size; exit 1 naming
    /// each bad blob.
    ///
    /// Example: ocimux verify deploy/arm64-oci deploy/amd64-oci
    Verify {
        /// The sources, or one mountpoint (or any OCI image layout). SOURCE is [PLATFORM=]PATH, oci:PATH[:REF] or
        /// oci-archive:PATH[:REF]: PATH an OCI image layout directory or an
        /// uncompressed tar of one, REF the ref name of its index.json entry,
        /// PLATFORM os/arch[/variant] (overrides the image config).
        #[arg(required = true, value_name = "SOURCE|MOUNTPOINT")]
        sources: Vec<String>,
        #[command(flatten)]
        index: IndexArgs,
        /// Hashing threads (default: CPUs).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
        threads: Option<u16>,
        /// Print the result of every blob as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script.
    ///
    /// Example: ocimux completions bash > /etc/bash_completion.d/ocimux
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print a manual page (roff): ocimux(1), or ocimux-COMMAND(1).
    ///
    /// Example: ocimux man mount > /usr/local/share/man/man1/ocimux-mount.1
    Man {
        /// The command whose page to print (default: the top-level page).
        command: Option<String>,
    },
}

/// Options of the generated documents, shared by every command that composes.
#[derive(Args, Debug)]
struct IndexArgs {
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
    /// Keep only this platform, os/arch[/variant] (repeatable; a source's
    /// other platforms are left out).
    #[arg(long = "platform", value_name = "PLATFORM")]
    platforms: Vec<String>,
    /// Also tag each platform manifest in index.json, as
    /// TAG-OS-ARCH[-VARIANT][-OSVERSION] (for umoci); clients must then name
    /// oci:MNT:TAG.
    #[arg(long)]
    platform_tags: bool,
}

#[derive(Args, Debug)]
struct MountArgs {
    /// Where to mount (an empty directory), then the sources (with --tmp,
    /// sources only). SOURCE is [PLATFORM=]PATH, oci:PATH[:REF] or
    /// oci-archive:PATH[:REF]: PATH an OCI image layout directory or an
    /// uncompressed tar of one, REF the ref name of its index.json entry,
    /// PLATFORM os/arch[/variant] (overrides the image config).
    #[arg(required = true, value_name = "MOUNTPOINT SOURCE")]
    paths: Vec<String>,
    #[command(flatten)]
    index: IndexArgs,
    /// Mount on a fresh temporary directory (needs a command after --; its
    /// path is in $OCIMUX_MNT), removed afterwards.
    #[arg(long)]
    tmp: bool,
    /// Stay in the foreground (log to stderr).
    #[arg(short, long, conflicts_with = "command")]
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
    /// A command to run with the mount in place, after --; the mount is
    /// unmounted when it exits, and ocimux exits with its status.
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<std::ffi::OsString>,
}

#[derive(Args, Debug)]
struct ExportArgs {
    /// Where to write: a directory (--format dir) or a file (oci-archive);
    /// it must not exist, or be an empty directory, unless --force.
    out: PathBuf,
    /// The sources. SOURCE is [PLATFORM=]PATH, oci:PATH[:REF] or
    /// oci-archive:PATH[:REF]: PATH an OCI image layout directory or an
    /// uncompressed tar of one, REF the ref name of its index.json entry,
    /// PLATFORM os/arch[/variant] (overrides the image config).
    #[arg(required = true, value_name = "SOURCE")]
    sources: Vec<String>,
    #[command(flatten)]
    index: IndexArgs,
    /// An OCI image layout directory, or one uncompressed tar of it (what
    /// `skopeo copy oci-archive:` reads).
    #[arg(long, value_enum, default_value_t = ExportFormat::Dir)]
    format: ExportFormat,
    /// How blobs reach a directory: reflink where the filesystem can, else
    /// hard link, else copy (auto); or only one of them.
    #[arg(long, value_enum, default_value_t = LinkArg::Auto)]
    link: LinkArg,
    /// Replace OUT if it exists.
    #[arg(long)]
    force: bool,
    /// Hash every blob while exporting and fail on a mismatch.
    #[arg(long)]
    verify: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum ExportFormat {
    /// A directory.
    Dir,
    /// One uncompressed tar.
    OciArchive,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum LinkArg {
    /// reflink, else hardlink, else copy, per blob.
    Auto,
    /// Copy-on-write clones only.
    Reflink,
    /// Hard links only.
    Hardlink,
    /// Copies only.
    Copy,
}

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let cli = match mount_helper_form(&argv) {
        Some(Ok(helper)) => helper_cli(helper),
        Some(Err(e)) => {
            eprintln!("ocimux: {}", printable(&e.to_string()));
            return ExitCode::from(exit::BAD_INPUT);
        }
        None => Cli::parse_from(argv),
    };
    init_logging(cli.verbose, cli.quiet);
    match run(cli.command) {
        Ok(code) => ExitCode::from(code),
        // Output cut short by a closed pipe (`… | head`): done, quietly, as
        // ripgrep does.
        Err(err) if broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            // One line, whatever a source put in the names it contributed.
            eprintln!("ocimux: {}", printable(&format!("{err:#}")));
            ExitCode::from(exit_code(&err))
        }
    }
}

/// `ocimux SOURCES MNT -o OPTS`, as mount.fuse3 runs it, translated;
/// `None` for any other command line.
fn mount_helper_form(argv: &[OsString]) -> Option<Result<fstab::HelperArgs, Error>> {
    let args: Vec<String> = argv
        .get(1..)?
        .iter()
        .map(|a| a.to_str().map(str::to_owned))
        .collect::<Option<_>>()?;
    let cli = Cli::command();
    let mut subcommands: Vec<&str> = cli.get_subcommands().map(|c| c.get_name()).collect();
    subcommands.push("help");
    if !fstab::is_helper_form(&args, &subcommands) {
        return None;
    }
    Some(fstab::mount_args(&args))
}

/// The `ocimux mount` of a mount(8) command line: the options and the
/// mountpoint are parsed, the sources are added afterwards as they are, so
/// no piece of SOURCES can be read as an option or a command.
fn helper_cli(helper: fstab::HelperArgs) -> Cli {
    let mut cli = Cli::parse_from(
        ["ocimux", "mount"]
            .into_iter()
            .map(str::to_owned)
            .chain(helper.options),
    );
    if let Command::Mount(m) = &mut cli.command {
        m.paths.extend(helper.sources);
    }
    cli
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

/// Whether `err` comes from writing to a closed pipe.
fn broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        let io = e.downcast_ref::<std::io::Error>().map(std::io::Error::kind);
        let json = e
            .downcast_ref::<serde_json::Error>()
            .and_then(serde_json::Error::io_error_kind);
        io.or(json) == Some(std::io::ErrorKind::BrokenPipe)
    })
}

fn exit_code(err: &anyhow::Error) -> u8 {
    if err.downcast_ref::<ocimux::Error>().is_some() {
        return exit::BAD_INPUT;
    }
    if let Some(
        ocimux::export::ExportError::Exists(_) | ocimux::export::ExportError::Overlaps { .. },
    ) = err.downcast_ref()
    {
        return exit::BAD_INPUT;
    }
    match err.downcast_ref::<MountError>() {
        Some(MountError::Option(_) | MountError::LogFile { .. }) => exit::BAD_INPUT,
        Some(MountError::NotOurs(_) | MountError::Unmount { .. }) => exit::UMOUNT,
        Some(_) => exit::MOUNT,
        None => exit::OTHER,
    }
}

fn run(command: Command) -> anyhow::Result<u8> {
    match command {
        Command::Mount(args) => mount(args),
        Command::Umount {
            mountpoint,
            lazy,
            timeout,
        } => {
            ocimux::mountpoint::umount(&mountpoint, lazy, Duration::from_secs(timeout))?;
            Ok(0)
        }
        Command::Inspect {
            sources,
            index,
            raw,
            json,
        } => {
            let comp = plan(&sources, &index)?.compose()?;
            let mut out = std::io::stdout().lock();
            if raw {
                out.write_all(&comp.index)?;
            } else if json {
                serde_json::to_writer_pretty(&mut out, &inspect::files(&comp))?;
                writeln!(out)?;
            } else {
                inspect::table(&mut out, &comp)?;
            }
            out.flush()?;
            Ok(0)
        }
        Command::Export(args) => export(args),
        Command::Verify {
            sources,
            index,
            threads,
            json,
        } => verify(&sources, &index, threads, json),
        Command::Completions { shell } => {
            // Generated whole, then written: a closed pipe is an error to
            // report (quietly), not a panic inside the generator.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "ocimux", &mut script);
            std::io::stdout().write_all(&script)?;
            Ok(0)
        }
        Command::Man { command } => {
            let top = Cli::command();
            let page = match command.as_deref() {
                None => clap_mangen::Man::new(top),
                Some(name) => {
                    let sub =
                        top.find_subcommand(name)
                            .cloned()
                            .ok_or_else(|| Error::Argument {
                                what: "command",
                                value: name.to_owned(),
                                why: "not an ocimux command".into(),
                            })?;
                    let title = format!("ocimux-{name}");
                    clap_mangen::Man::new(
                        sub.name(title.clone()).bin_name(format!("ocimux {name}")),
                    )
                    .title(title)
                }
            };
            let mut roff = Vec::new();
            page.render(&mut roff)?;
            std::io::stdout().write_all(&roff)?;
            Ok(0)
        }
    }
}

/// Validates the arguments into a plan.
fn plan(sources: &[String], args: &IndexArgs) -> anyhow::Result<Plan> {
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
    let specs: Vec<SourceSpec> = sources
        .iter()
        .map(|s| SourceSpec::parse(s))
        .collect::<Result<_, _>>()?;
    let platforms = args
        .platforms
        .iter()
        .map(|p| {
            Platform::parse(p)
                .map(|n| n.platform)
                .map_err(|why| Error::Argument {
                    what: "--platform",
                    value: p.clone(),
                    why: why.to_string(),
                })
        })
        .collect::<Result<_, _>>()?;
    Ok(Plan {
        specs,
        ref_name: args.ref_name.clone(),
        opts: IndexOptions {
            tag,
            annotations,
            platform_tags: args.platform_tags,
        },
        platforms,
    })
}

fn export(args: ExportArgs) -> anyhow::Result<u8> {
    let comp = plan(&args.sources, &args.index)?.compose()?;
    let opts = ExportOptions {
        format: match args.format {
            ExportFormat::Dir => Format::Dir,
            ExportFormat::OciArchive => Format::OciArchive,
        },
        link: match args.link {
            LinkArg::Auto => LinkMode::Auto,
            LinkArg::Reflink => LinkMode::Reflink,
            LinkArg::Hardlink => LinkMode::Hardlink,
            LinkArg::Copy => LinkMode::Copy,
        },
        force: args.force,
        verify: args.verify,
        progress: std::io::stderr().is_terminal(),
    };
    let report = ocimux::export::export(&comp, &args.out, &opts)?;
    log::info!("{report}");
    Ok(0)
}

fn verify(
    sources: &[String],
    index: &IndexArgs,
    threads: Option<u16>,
    json: bool,
) -> anyhow::Result<u8> {
    let mut plan = plan(sources, index)?;
    // A mountpoint is read like any layout (this process does not serve it).
    // Every bad layer is named, not just the first.
    for spec in &mut plan.specs {
        spec.allow_ocimux_mount = true;
        spec.report_broken_layers = true;
    }
    let comp = plan.compose()?;
    let threads = threads.map_or_else(
        || std::thread::available_parallelism().map_or(2, |n| n.get()),
        usize::from,
    );
    let results = check::verify(&comp, threads, std::io::stderr().is_terminal());
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &results)?;
        writeln!(out)?;
    }
    let bad: Vec<&check::BlobResult> = results.iter().filter(|r| r.error.is_some()).collect();
    for r in &bad {
        eprintln!(
            "ocimux: bad blob {} from source {} ({}): {}",
            r.digest,
            printable(&r.source),
            printable(&r.file),
            printable(r.error.as_deref().unwrap_or_default())
        );
    }
    let bytes: u64 = results.iter().map(|r| r.size).sum();
    if !json {
        writeln!(
            out,
            "{} blobs, {} checked: {} bad",
            results.len(),
            inspect::human(bytes),
            bad.len()
        )?;
    }
    Ok(if bad.is_empty() { 0 } else { exit::OTHER })
}

fn mount(args: MountArgs) -> anyhow::Result<u8> {
    let options = MountOptions::parse(args.options.iter().map(String::as_str))?;
    if args.tmp && args.command.is_empty() {
        return Err(Error::Argument {
            what: "--tmp",
            value: String::new(),
            why: "a temporary mountpoint needs a command after -- to use it".into(),
        }
        .into());
    }
    let (mountpoint, sources) = match (args.tmp, args.paths.split_first()) {
        (true, _) => (None, args.paths.as_slice()),
        (false, Some((mnt, sources))) if !sources.is_empty() => (Some(mnt), sources),
        (false, _) => {
            return Err(Error::Argument {
                what: "mount arguments",
                value: args.paths.join(" "),
                why: "expected MOUNTPOINT SOURCE... (or --tmp SOURCE... -- COMMAND)".into(),
            }
            .into());
        }
    };
    let plan = plan(sources, &args.index)?;
    let comp = plan.compose()?;
    // With --tmp, a fresh directory, removed after the unmount.
    let (mountpoint, tmp) = match mountpoint {
        Some(given) => (PathBuf::from(given), false),
        None => {
            let dir = tempfile::Builder::new()
                .prefix("ocimux-")
                .tempdir()
                .context("creating a temporary mountpoint")?;
            (dir.keep(), true)
        }
    };
    if !args.command.is_empty() {
        ocimux::scoped::block_stop_signals();
    }
    let mounted = mount_at(&mountpoint, &args, options, plan, comp);
    let result = match mounted {
        Ok(()) if args.command.is_empty() => Ok(0),
        Ok(()) => {
            let outcome = ocimux::scoped::run(&args.command, &mountpoint);
            unmount_after(&mountpoint).map(|()| outcome.code)
        }
        Err(e) => Err(e),
    };
    if tmp {
        if let Err(e) = std::fs::remove_dir(&mountpoint) {
            log::warn!("removing {}: {e}", mountpoint.display());
        }
    }
    result
}

/// Unmounts a scoped mount; a busy one (CMD left something running in it)
/// is detached lazily.
fn unmount_after(mountpoint: &std::path::Path) -> anyhow::Result<()> {
    let timeout = Duration::from_secs(30);
    ocimux::mountpoint::umount(mountpoint, false, timeout)
        .or_else(|e| {
            log::warn!("{e}; detaching lazily");
            ocimux::mountpoint::umount(mountpoint, true, timeout)
        })
        .map_err(Into::into)
}

fn mount_at(
    mountpoint: &std::path::Path,
    args: &MountArgs,
    options: MountOptions,
    plan: Plan,
    comp: Composition,
) -> anyhow::Result<()> {
    let claimed = ocimux::mountpoint::claim(mountpoint)?;
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
        with_parent: !args.command.is_empty(),
        remove_mountpoint: args.tmp,
    };
    Ok(daemon::mount(Served { plan, first: comp }, &cfg, claimed)?)
}
