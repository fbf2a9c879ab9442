//! One source argument, `[PLATFORM=]PATH`, `[PLATFORM=]oci:PATH[:REF]` or
//! `[PLATFORM=]oci-archive:PATH[:REF]`, parsed and checked before anything
//! is opened. The transports are split as skopeo splits them: at the first
//! `:` after the transport name (so such a PATH cannot hold a `:`; a plain
//! PATH can).

use std::path::PathBuf;

use crate::error::Error;
use crate::oci::platform::Platform;
use crate::oci::tag::Tag;

/// How a source was named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// A plain PATH: a layout directory or a tar archive of one.
    #[default]
    Any,
    /// `oci:PATH`: a layout directory.
    Layout,
    /// `oci-archive:PATH`: a tar archive of a layout.
    Archive,
}

/// One source argument.
#[derive(Debug, Clone)]
pub struct SourceSpec {
    /// The argument as given, used in every message about this source.
    pub name: String,
    /// The path as given, made absolute (symlinks not resolved).
    pub path: PathBuf,
    /// The platform given on the command line, already normalised.
    pub platform: Option<Platform>,
    /// How it was named (`oci:`, `oci-archive:` or a plain path).
    pub transport: Transport,
    /// The `index.json` entry it names (`oci:PATH:REF`); `--ref` otherwise.
    pub ref_name: Option<String>,
    /// Whether the path may be on an ocimux mount: never for what a mount
    /// serves (a mount served from itself deadlocks), but `ocimux verify`
    /// reads a mount like any layout.
    pub allow_ocimux_mount: bool,
    /// Whether a missing or mis-sized layer is reported in
    /// [`Contribution::broken`](super::Contribution::broken) rather than
    /// failing the read (`ocimux verify`, which names every bad blob).
    pub report_broken_layers: bool,
    /// Whether manifests of the source's `index.json` whose `subject` is a
    /// served manifest (signatures, SBOMs, attestations as referrers) are
    /// served too, with their blobs (`ocimux serve`'s referrers API).
    pub with_referrers: bool,
    /// Whether the documents read are kept in memory
    /// ([`Contribution::documents`](super::Contribution::documents)), so
    /// that a tag's documents outlive their files (`ocimux serve`).
    pub keep_documents: bool,
    /// What a config that names 32-bit ARM without a variant comes to.
    pub arm_variant: ArmVariant,
}

/// What to do with a config that says `arm` and no variant (umoci cannot
/// set one, so every Yocto image of a 32-bit ARM machine says only `arm`).
/// Only ever fills in a missing variant: a config's own never changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ArmVariant {
    /// Warn, with the command line's advice (`linux/arm/v7=PATH`).
    #[default]
    Advise,
    /// Take `variant` (`v7`), found where `from` says (logged once per read).
    Known {
        /// The variant, normalised (`v5`, `v6`, `v7`, `v8`).
        variant: String,
        /// Where it was found, for the log (`qemuarm's …testdata.json`).
        from: String,
    },
    /// Warn with this advice instead (the Yocto mode names the machine and
    /// the configuration key that fixes it).
    Unknown {
        /// What to do about it.
        advice: String,
    },
}

impl SourceSpec {
    /// Parses one source argument.
    ///
    /// The part before the first `=` is taken as a platform when it looks like
    /// one (`os/arch[/variant]`, starting with a letter); otherwise the whole
    /// argument is the source, so `./dir=x` stays a path.
    pub fn parse(arg: &str) -> Result<Self, Error> {
        let (platform, source) = split_platform(arg)?;
        if source.is_empty() {
            return Err(refuse(arg, "no PATH after PLATFORM="));
        }
        let (transport, path, ref_name) = split_transport(arg, source)?;
        Ok(SourceSpec {
            name: source.to_owned(),
            path: absolute(path),
            platform,
            transport,
            ref_name,
            allow_ocimux_mount: false,
            report_broken_layers: false,
            with_referrers: false,
            keep_documents: false,
            arm_variant: ArmVariant::Advise,
        })
    }
}

fn refuse(arg: &str, why: &str) -> Error {
    Error::Argument {
        what: "source",
        value: arg.to_owned(),
        why: why.to_owned(),
    }
}

/// `PLATFORM=` (normalised, warnings logged) and the rest.
fn split_platform(arg: &str) -> Result<(Option<Platform>, &str), Error> {
    let Some((platform, source)) = arg.split_once('=').filter(|(p, _)| looks_like_platform(p))
    else {
        return Ok((None, arg));
    };
    let normalized = Platform::parse(platform).map_err(|why| Error::Argument {
        what: "platform",
        value: platform.to_owned(),
        why: why.to_string(),
    })?;
    for w in normalized.warnings.iter().chain(&normalized.arm_advice()) {
        log::warn!("source {arg}: {w}");
    }
    Ok((Some(normalized.platform), source))
}

/// The transport, the path and the ref of `source` (`arg` for messages).
fn split_transport<'a>(
    arg: &str,
    source: &'a str,
) -> Result<(Transport, &'a str, Option<String>), Error> {
    let (transport, rest) = if let Some(rest) = source.strip_prefix("oci:") {
        (Transport::Layout, rest)
    } else if let Some(rest) = source.strip_prefix("oci-archive:") {
        (Transport::Archive, rest)
    } else {
        return Ok((Transport::Any, source, None));
    };
    let (path, r) = match rest.split_once(':') {
        Some((path, r)) => (path, Some(r)),
        None => (rest, None),
    };
    if path.is_empty() {
        return Err(refuse(arg, "no PATH after the transport"));
    }
    let ref_name = match r {
        None => None,
        Some("") => return Err(refuse(arg, "an empty REF after PATH:")),
        Some(r) => {
            Tag::parse(r).map_err(|why| Error::Argument {
                what: "ref name",
                value: r.to_owned(),
                why: why.to_string(),
            })?;
            Some(r.to_owned())
        }
    };
    Ok((transport, path, ref_name))
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
        use Transport::*;
        // arg, Ok((path, platform, transport, ref)) or Err
        type Want<'a> = (&'a str, Option<&'a str>, Transport, Option<&'a str>);
        let cases: &[(&str, Result<Want, &str>)] = &[
            ("deploy/a-oci", Ok(("deploy/a-oci", None, Any, None))),
            (
                "linux/arm64=deploy/a-oci",
                Ok(("deploy/a-oci", Some("linux/arm64"), Any, None)),
            ),
            (
                "linux/arm/v7=/abs/x",
                Ok(("/abs/x", Some("linux/arm/v7"), Any, None)),
            ),
            ("linux/aarch64=x", Ok(("x", Some("linux/arm64"), Any, None))),
            ("./dir=x", Ok(("./dir=x", None, Any, None))),
            ("dir=x", Ok(("dir=x", None, Any, None))),
            ("a:b", Ok(("a:b", None, Any, None))),
            ("oci:/d/a", Ok(("/d/a", None, Layout, None))),
            (
                "oci:/d/a:release",
                Ok(("/d/a", None, Layout, Some("release"))),
            ),
            // Split at the first ':', as skopeo does; ':' may be in a ref.
            (
                "oci:/d/a:v1.2:3",
                Ok(("/d/a", None, Layout, Some("v1.2:3"))),
            ),
            (
                "linux/arm/v7=oci-archive:x.tar:debug",
                Ok(("x.tar", Some("linux/arm/v7"), Archive, Some("debug"))),
            ),
            ("oci-archive:x.tar", Ok(("x.tar", None, Archive, None))),
            ("oci:", Err("no PATH after the transport")),
            ("oci::ref", Err("no PATH after the transport")),
            ("oci:/d/a:", Err("an empty REF")),
            ("oci:/d/a:bad ref", Err("not an OCI ref name")),
            ("linux/arm64=", Err("no PATH")),
        ];
        for (arg, want) in cases {
            match (SourceSpec::parse(arg), want) {
                (Ok(s), Ok((path, platform, transport, ref_name))) => {
                    assert_eq!(s.path, std::path::absolute(path).unwrap(), "{arg}");
                    assert_eq!(
                        s.platform.map(|p| p.to_string()).as_deref(),
                        *platform,
                        "{arg}"
                    );
                    assert_eq!(
                        (s.transport, s.ref_name.as_deref()),
                        (*transport, *ref_name),
                        "{arg}"
                    );
                }
                (Err(e), Err(frag)) => assert!(e.to_string().contains(frag), "{arg}: {e}"),
                (got, want) => panic!("{arg}: got {got:?}, want {want:?}"),
            }
        }
    }
}
