//! Each subcommand: arguments validated into a plan, then run.

use ocimux::serve::config::Config;
use ocimux::serve::yocto::{Finder, Settings};
use ocimux::serve::{RepoPlan, ServeConfig, ServeError};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::CommandFactory;

use crate::cli::{Command, ExportArgs, ExportFormat, IndexArgs, LinkArg, MountArgs, ServeArgs};
use crate::failure::Failure;
use ocimux::Error;
use ocimux::error::printable;
use ocimux::export::{ExportOptions, Format, LinkMode};
use ocimux::mount::daemon::{self, MountConfig, MountOptions, Run, Served};
use ocimux::report::inspect::Progress;
use ocimux::report::{check, inspect};
use ocimux::snapshot::index::Composition;
use ocimux::snapshot::plan::Plan;

pub(crate) fn run(command: Command) -> Result<u8, Failure> {
    match command {
        Command::Mount(args) => mount(args),
        Command::Serve(args) => serve(args),
        Command::Umount {
            mountpoint,
            lazy,
            timeout,
        } => {
            ocimux::mount::mountpoint::umount(&mountpoint, lazy, Duration::from_secs(timeout))?;
            Ok(0)
        }
        Command::Inspect {
            sources,
            index,
            raw,
            json,
        } => inspect(&sources, &index, raw, json),
        Command::Export(args) => export(args),
        Command::Verify {
            sources,
            index,
            threads,
            json,
        } => verify(&sources, &index, threads, json),
        Command::Status { json, target } => crate::status::show(json, target.as_deref()),
        Command::Completions { shell } => completions(shell),
        Command::Man { command } => man(command.as_deref()),
    }
}

/// `ocimux inspect`: the composed index (`--raw`), every file as JSON, or
/// a table.
fn inspect(sources: &[String], index: &IndexArgs, raw: bool, json: bool) -> Result<u8, Failure> {
    let comp = plan(sources, index)?.compose()?;
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

/// `ocimux completions SHELL`: generated whole, then written: a closed pipe
/// is an error to report (quietly), not a panic inside the generator.
fn completions(shell: clap_complete::Shell) -> Result<u8, Failure> {
    let mut script = Vec::new();
    clap_complete::generate(
        shell,
        &mut crate::cli::Cli::command(),
        "ocimux",
        &mut script,
    );
    std::io::stdout().write_all(&script)?;
    Ok(0)
}

/// `ocimux man [COMMAND]`: the roff page of ocimux or of one subcommand.
fn man(command: Option<&str>) -> Result<u8, Failure> {
    let roff = crate::manpage::page(command)?;
    std::io::stdout().write_all(&roff)?;
    Ok(0)
}

fn serve(args: ServeArgs) -> Result<u8, Failure> {
    let file = match &args.config {
        Some(p) => Config::load(p).map_err(ServeError::from)?,
        None => Config::default(),
    };
    let repos = serve_repos(&args, &file)?;
    let finder = yocto_settings(&args, &file)
        .map(Finder::new)
        .transpose()
        .map_err(ServeError::from)?;
    let cfg = serve_config(args, file)?;
    Ok(ocimux::serve::run::run(cfg, repos, finder)?)
}

/// The repositories to serve: the command line's `REPOSITORY SOURCE...`,
/// then the file's `[[repository]]` entries.
fn serve_repos(args: &ServeArgs, file: &Config) -> Result<Vec<RepoPlan>, Failure> {
    let mut repos = Vec::new();
    if let Some((name, sources)) = args.args.split_first() {
        if sources.is_empty() {
            return Err(Error::Argument {
                what: "serve arguments",
                value: name.clone(),
                why: "expected REPOSITORY SOURCE... (or --config FILE, --yocto BUILDDIR)".into(),
            }
            .into());
        }
        repos.push(RepoPlan {
            name: name.clone(),
            plan: plan(sources, &args.index)?,
        });
    }
    for r in &file.repositories {
        repos.push(RepoPlan {
            name: r.name.clone(),
            plan: Plan::from_args(&r.sources, &r.index)?,
        });
    }
    Ok(repos)
}

/// The Yocto mode's settings: the file's `[yocto]` with the command line's
/// build paths added; the file's own settings win, except `--history`.
fn yocto_settings(args: &ServeArgs, file: &Config) -> Option<Settings> {
    let mut yocto = file.yocto.clone().map(|y| Settings {
        paths: y.build_dirs,
        namespace: y.namespace,
        index: y.index,
        history: y.history,
        platforms: y.platforms,
    });
    if !args.yocto.is_empty() {
        let y = yocto.get_or_insert_with(|| Settings {
            namespace: args.namespace.clone(),
            index: args.index.to_lib(),
            ..Settings::default()
        });
        y.paths.extend(args.yocto.iter().cloned());
    }
    if let Some(y) = yocto.as_mut() {
        y.history = args.history.or(y.history);
    }
    yocto
}

/// The server's settings, by one rule: a value given on the command line
/// wins over the file's, and the file's over the default.
fn serve_config(args: ServeArgs, file: Config) -> Result<ServeConfig, Failure> {
    let tls = match (
        args.tls_cert.or(file.tls_cert),
        args.tls_key.or(file.tls_key),
    ) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => {
            return Err(Error::Argument {
                what: "TLS",
                value: String::new(),
                why: "a certificate needs a key and a key a certificate".into(),
            }
            .into());
        }
    };
    let client_timeout = Duration::from_secs(args.client_timeout.max(1));
    Ok(ServeConfig {
        listen: args.listen.or(file.listen).unwrap_or_default(),
        metrics: args.metrics.or(file.metrics),
        limits: ocimux::serve::Limits {
            connections: args.max_connections.max(1),
            header_timeout: client_timeout,
            send_timeout: client_timeout,
            ..Default::default()
        },
        verify: args.verify || file.verify,
        live: !args.static_sources,
        htpasswd: args.htpasswd.or(file.htpasswd),
        tls,
        command: args.command,
        drain: Duration::from_secs(args.drain),
        blocking_threads: 32,
    })
}

/// Whether `-q` asked for errors only (the log level it set).
fn quiet() -> bool {
    log::max_level() < log::LevelFilter::Warn
}

/// Validates the arguments into a plan.
fn plan(sources: &[String], args: &IndexArgs) -> Result<Plan, Error> {
    Plan::from_args(sources, &args.to_lib())
}

fn export(args: ExportArgs) -> Result<u8, Failure> {
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
        progress: Progress::for_stderr(quiet()),
    };
    let report = ocimux::export::export(&comp, &args.out, &opts)?;
    // Its result, as skopeo says what it wrote: on stdout, unless -q.
    if !quiet() {
        println!("{report}");
    }
    Ok(0)
}

fn verify(
    sources: &[String],
    index: &IndexArgs,
    threads: Option<u16>,
    json: bool,
) -> Result<u8, Failure> {
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
    let results = check::verify(&comp, threads, Progress::for_stderr(quiet()));
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
    if !json && !quiet() {
        writeln!(
            out,
            "{} blobs, {} checked: {} bad",
            results.len(),
            inspect::human(bytes),
            bad.len()
        )?;
    }
    Ok(if bad.is_empty() {
        0
    } else {
        crate::exit::OTHER
    })
}

fn mount(args: MountArgs) -> Result<u8, Failure> {
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
    let composed = plan(sources, &args.index).and_then(|p| p.compose().map(|c| (p, c)));
    let (plan, comp) = composed.map_err(|e| swapped(e.into(), mountpoint))?;
    // With --tmp, a fresh directory, removed after the unmount.
    let (mountpoint, tmp) = match mountpoint {
        Some(given) => (PathBuf::from(given), false),
        None => {
            let dir = tempfile::Builder::new()
                .prefix("ocimux-")
                .tempdir()
                .map_err(|err| Failure::Setup {
                    what: "creating a temporary mountpoint".into(),
                    err,
                })?;
            (dir.keep(), true)
        }
    };
    if !args.command.is_empty() {
        ocimux::process::scoped::block_stop_signals();
    }
    let mounted = mount_at(&mountpoint, &args, options, plan, comp);
    let result = match mounted {
        Ok(()) if args.command.is_empty() => Ok(0),
        Ok(()) => {
            let outcome = ocimux::process::scoped::run(&args.command, &mountpoint);
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

/// A source that is not a layout while the "mountpoint" is one: the two
/// were given in mount(8)'s order (`ocimux mount SOURCE MOUNTPOINT`).
fn swapped(failure: Failure, mountpoint: Option<&String>) -> Failure {
    let path = mountpoint.map(std::path::Path::new);
    let is_layout = path.is_some_and(|p| {
        p.join("oci-layout").is_file()
            || p.join("index.json").is_file()
            || (p.extension().is_some_and(|e| e == "tar") && p.is_file())
    });
    match is_layout {
        true => Failure::Hinted {
            failure: Box::new(failure),
            hint: "the mountpoint comes first: ocimux mount MOUNTPOINT SOURCE... \
                   (mount(8)'s order is the form ocimux SOURCES MOUNTPOINT -o OPTIONS)",
        },
        false => failure,
    }
}

/// Unmounts a scoped mount; a busy one (CMD left something running in it)
/// is detached lazily.
fn unmount_after(mountpoint: &std::path::Path) -> Result<(), Failure> {
    let timeout = Duration::from_secs(30);
    ocimux::mount::mountpoint::umount(mountpoint, false, timeout)
        .or_else(|e| {
            log::warn!("{e}; detaching lazily");
            ocimux::mount::mountpoint::umount(mountpoint, true, timeout)
        })
        .map_err(Failure::from)
}

fn mount_at(
    mountpoint: &std::path::Path,
    args: &MountArgs,
    options: MountOptions,
    plan: Plan,
    comp: Composition,
) -> Result<(), Failure> {
    let claimed = ocimux::mount::mountpoint::claim(mountpoint)?;
    let log_file = match &args.log_file {
        // The daemon moves to `/`: make the path absolute first.
        Some(p) => Some(std::path::absolute(p).map_err(|err| Failure::Setup {
            what: format!("log file {}", p.display()),
            err,
        })?),
        None => None,
    };
    let threads = args.threads.map_or_else(
        || std::thread::available_parallelism().map_or(2, |n| n.get().min(8)),
        usize::from,
    );
    log::info!(
        "serving index {}: {} blobs, {} bytes",
        comp.index_digest,
        comp.blobs.len() + 1,
        comp.blobs.iter().map(|b| b.size).sum::<u64>() + comp.index.len() as u64
    );
    let cfg = MountConfig {
        mountpoint: claimed.path.clone(),
        run: match (args.foreground, args.command.is_empty()) {
            (true, _) => Run::Foreground,
            (false, true) => Run::Detached,
            (false, false) => Run::Scoped { tmp: args.tmp },
        },
        log_file,
        options,
        threads,
        passthrough: !args.no_passthrough,
        readahead_kb: args.readahead_kb,
        live: !args.static_sources,
        verify: args.verify,
        source: args.written.clone().unwrap_or_else(|| {
            let names: Vec<String> = plan.specs.iter().map(|s| s.name.clone()).collect();
            ocimux::mount::daemon::source_name(&names)
        }),
    };
    Ok(daemon::mount(Served { plan, first: comp }, &cfg, claimed)?)
}
