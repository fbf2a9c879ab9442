//! One source argument, `[PLATFORM=]PATH`, parsed and checked before
//! anything is opened.

use std::path::PathBuf;

use crate::error::Error;
use crate::platform::Platform;

/// One `[PLATFORM=]PATH` argument.
#[derive(Debug, Clone)]
pub struct SourceSpec {
    /// The argument as given, used in every message about this source.
    pub name: String,
    /// The path as given, made absolute (symlinks not resolved).
    pub path: PathBuf,
    /// The platform given on the command line, already normalised.
    pub platform: Option<Platform>,
    /// Whether the path may be on an ocimux mount: never for what a mount
    /// serves (a mount served from itself deadlocks), but `ocimux verify`
    /// reads a mount like any layout.
    pub allow_ocimux_mount: bool,
    /// Whether a missing or mis-sized layer is reported in
    /// [`Contribution::broken`](super::Contribution::broken) rather than
    /// failing the read (`ocimux verify`, which names every bad blob).
    pub report_broken_layers: bool,
}

impl SourceSpec {
    /// Parses `[PLATFORM=]PATH`.
    ///
    /// The part before the first `=` is taken as a platform when it looks like
    /// one (`os/arch[/variant]`, starting with a letter); otherwise the whole
    /// argument is a path, so `./dir=x` stays a path.
    pub fn parse(arg: &str) -> Result<Self, Error> {
        let platform_part = arg.split_once('=').filter(|(p, _)| looks_like_platform(p));
        let Some((platform, path)) = platform_part else {
            return Ok(SourceSpec {
                name: arg.to_owned(),
                path: absolute(arg),
                platform: None,
                allow_ocimux_mount: false,
                report_broken_layers: false,
            });
        };
        let normalized = Platform::parse(platform).map_err(|why| Error::Argument {
            what: "platform",
            value: platform.to_owned(),
            why: why.to_string(),
        })?;
        for w in &normalized.warnings {
            log::warn!("source {arg}: {w}");
        }
        if path.is_empty() {
            return Err(Error::Argument {
                what: "source",
                value: arg.to_owned(),
                why: "no PATH after PLATFORM=".into(),
            });
        }
        Ok(SourceSpec {
            name: path.to_owned(),
            path: absolute(path),
            platform: Some(normalized.platform),
            allow_ocimux_mount: false,
            report_broken_layers: false,
        })
    }
}

/// The path made absolute against the current directory, symlinks kept (a
/// re-pointed `…-latest-oci` link must be followed anew on every rebuild,
/// and the daemon runs from `/`).
fn absolute(path: &str) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| PathBuf::from(path))
}

fn looks_like_platform(p: &str) -> bool {
    let parts: Vec<&str> = p.split('/').collect();
    (2..=3).contains(&parts.len())
        && p.starts_with(|c: char| c.is_ascii_alphabetic())
        && parts.iter().all(|s| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_parse_table() {
        // arg, Ok((name, path, platform)) or Err
        let cases: &[(&str, Result<(&str, Option<&str>), &str>)] = &[
            ("deploy/a-oci", Ok(("deploy/a-oci", None))),
            (
                "linux/arm64=deploy/a-oci",
                Ok(("deploy/a-oci", Some("linux/arm64"))),
            ),
            ("linux/arm/v7=/abs/x", Ok(("/abs/x", Some("linux/arm/v7")))),
            ("linux/aarch64=x", Ok(("x", Some("linux/arm64")))),
            ("./dir=x", Ok(("./dir=x", None))),
            ("dir=x", Ok(("dir=x", None))),
            ("linux/arm64=", Err("no PATH")),
        ];
        for (arg, want) in cases {
            match (SourceSpec::parse(arg), want) {
                (Ok(s), Ok((path, platform))) => {
                    assert_eq!(s.path, std::path::absolute(path).unwrap(), "{arg}");
                    assert_eq!(
                        s.platform.map(|p| p.to_string()).as_deref(),
                        *platform,
                        "{arg}"
                    );
                }
                (Err(e), Err(frag)) => assert!(e.to_string().contains(frag), "{arg}: {e}"),
                (got, want) => panic!("{arg}: got {got:?}, want {want:?}"),
            }
        }
    }
}
