//! The one error the CLI returns: every way a command can fail, each with
//! the exit code its own error type gives (`ExitStatus`), so `main` decides
//! the code with a match. It lives in the binary: it names every front end,
//! and nothing in the library needs to.

use ocimux::process::lifecycle::{ExitStatus, exit};

/// Every way a command can fail, each with its exit code: the one error
/// type the CLI returns, so the code is a match, not a search.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// A source, an argument or an index option is wrong.
    #[error(transparent)]
    Input(#[from] ocimux::Error),
    /// Mounting, serving a mount or unmounting failed.
    #[error(transparent)]
    Mount(#[from] ocimux::mount::daemon::MountError),
    /// An export failed.
    #[error(transparent)]
    Export(#[from] ocimux::export::ExportError),
    /// A server did not start.
    #[error(transparent)]
    Serve(#[from] ocimux::serve::ServeError),
    /// Writing a command's output (standard output) failed.
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
    /// A failure, with what the user probably meant.
    #[error("{failure}; hint: {hint}")]
    Hinted {
        /// The failure.
        failure: Box<Failure>,
        /// What to try.
        hint: &'static str,
    },
    /// Preparing something the command needs (a temporary directory …).
    #[error("{what}: {err}")]
    Setup {
        /// What was being prepared.
        what: String,
        /// Why it failed.
        #[source]
        err: std::io::Error,
    },
}

impl From<ocimux::mount::mountpoint::MountpointError> for Failure {
    fn from(e: ocimux::mount::mountpoint::MountpointError) -> Self {
        Failure::Mount(e.into())
    }
}

impl From<ocimux::mount::options::OptionProblem> for Failure {
    fn from(e: ocimux::mount::options::OptionProblem) -> Self {
        Failure::Mount(e.into())
    }
}

impl From<serde_json::Error> for Failure {
    /// JSON is only ever written to the output here.
    fn from(e: serde_json::Error) -> Self {
        Failure::Output(e.into())
    }
}

impl Failure {
    /// The exit code, from the failure's own type.
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Input(e) => e.exit_code(),
            Failure::Mount(e) => e.exit_code(),
            Failure::Export(e) => e.exit_code(),
            Failure::Serve(e) => e.exit_code(),
            Failure::Hinted { failure, .. } => failure.exit_code(),
            Failure::Output(_) | Failure::Setup { .. } => exit::OTHER,
        }
    }

    /// Output cut short by a closed pipe (`… | head`): not a failure to report.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Failure::Output(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_has_its_code() {
        use ocimux::mount::daemon::MountError;
        use std::io::{Error as IoError, ErrorKind};
        let cases: Vec<(Failure, u8, bool)> = vec![
            (
                Failure::Input(ocimux::Error::NoSources),
                exit::BAD_INPUT,
                false,
            ),
            (
                Failure::Hinted {
                    failure: Box::new(Failure::Input(ocimux::Error::NoSources)),
                    hint: "h",
                },
                exit::BAD_INPUT,
                false,
            ),
            (
                Failure::Mount(MountError::Mountpoint(
                    ocimux::mount::mountpoint::MountpointError::NotOurs("/x".into()),
                )),
                exit::UMOUNT,
                false,
            ),
            (
                Failure::Output(IoError::from(ErrorKind::BrokenPipe)),
                exit::OTHER,
                true,
            ),
            (
                serde_json::to_writer(BrokenPipe, &1)
                    .map_err(Failure::from)
                    .unwrap_err(),
                exit::OTHER,
                true,
            ),
            (
                Failure::Output(IoError::from(ErrorKind::StorageFull)),
                exit::OTHER,
                false,
            ),
        ];
        for (failure, code, quiet) in cases {
            assert_eq!(failure.exit_code(), code, "{failure}");
            assert_eq!(failure.is_broken_pipe(), quiet, "{failure}");
        }
    }

    struct BrokenPipe;
    impl std::io::Write for BrokenPipe {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
