//! The `ocimux` command: parses and validates arguments, reads every source
//! before anything is mounted, and reports failures as one line with a
//! distinct exit code.

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use ocimux::Error;
use ocimux::error::printable;
use ocimux::mount::fstab;

mod cli;
mod commands;
mod failure;
mod logging;
mod manpage;
mod status;

use cli::{Cli, Command};

use ocimux::process::lifecycle::exit;

fn main() -> ExitCode {
    // Before any thread starts: every thread inherits the mask, so a lease
    // break (a real-time signal) never ends the process.
    ocimux::files::lease::block_signal();
    let argv: Vec<OsString> = std::env::args_os().collect();
    let cli = match mount_helper_form(&argv) {
        Some(Ok(helper)) => helper_cli(helper),
        Some(Err(e)) => {
            eprintln!("ocimux: {}", printable(&e.to_string()));
            return ExitCode::from(exit::BAD_INPUT);
        }
        None => Cli::parse_from(argv),
    };
    logging::init_logging(cli.verbose, cli.quiet, cli.log_format);
    match commands::run(cli.command) {
        Ok(code) => ExitCode::from(code),
        // Output cut short by a closed pipe (`… | head`): done, quietly, as
        // ripgrep does.
        Err(failure) if failure.is_broken_pipe() => ExitCode::SUCCESS,
        Err(failure) => {
            // One line, whatever a source put in the names it contributed.
            eprintln!("ocimux: {}", printable(&failure.to_string()));
            ExitCode::from(failure.exit_code())
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
        m.written = Some(helper.written);
    }
    cli
}
