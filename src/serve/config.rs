//! `ocimux serve --config FILE`: any number of repositories, the Yocto
//! mode and the server's options in one TOML file. Unknown keys are errors.
//!
//! ```toml
//! listen = "127.0.0.1:5000"
//! [[repository]]
//! name = "yocto/app"
//! sources = ["linux/arm64=deploy/arm64-oci", "deploy/amd64-oci"]
//! tag = "latest"
//! [yocto]
//! build_dirs = ["/srv/build"]
//! namespace = "yocto"
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::snapshot::plan::IndexArgs;

/// Why a configuration file is refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// It cannot be read.
    #[error("configuration file {path}: {err}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        err: std::io::Error,
    },
    /// It is not valid TOML of this shape.
    #[error("configuration file {path}: {why}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What toml said (one line).
        why: String,
    },
}

/// The file's contents.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `--listen`, in the forms it takes.
    #[serde(default, deserialize_with = "super::listen::deserialize")]
    pub listen: Option<super::listen::Listen>,
    /// `--metrics`, in the same forms.
    #[serde(default, deserialize_with = "super::listen::deserialize")]
    pub metrics: Option<super::listen::Listen>,
    /// `--verify`.
    #[serde(default)]
    pub verify: bool,
    /// `--htpasswd`.
    pub htpasswd: Option<PathBuf>,
    /// `--tls-cert`.
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key`.
    pub tls_key: Option<PathBuf>,
    /// Repositories.
    #[serde(default, rename = "repository")]
    pub repositories: Vec<RepoConfig>,
    /// The Yocto mode.
    pub yocto: Option<YoctoConfig>,
}

/// One `[[repository]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    /// Its name.
    pub name: String,
    /// Its sources, as on the command line.
    pub sources: Vec<String>,
    /// Index options.
    #[serde(flatten)]
    pub index: IndexArgs,
}

/// `[yocto]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct YoctoConfig {
    /// Build directories.
    pub build_dirs: Vec<PathBuf>,
    /// Namespace (default `yocto`).
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Dated builds served as tags per image (default 5).
    #[serde(default)]
    pub history: Option<usize>,
    /// Machine → platform (`qemuarm = "linux/arm/v7"`), as `PLATFORM=PATH`.
    #[serde(default)]
    pub platforms: std::collections::BTreeMap<String, String>,
    /// Index options for every image.
    #[serde(flatten)]
    pub index: IndexArgs,
}

fn default_namespace() -> String {
    "yocto".into()
}

/// Most bytes of a file `serve` reads its settings from (configuration,
/// htpasswd, certificate, key).
pub const MAX_SETTINGS_FILE: u64 = 1 << 20;

/// Reads a settings file: opened without blocking (a FIFO is refused at
/// once, never waited on), only a regular file, at most
/// [`MAX_SETTINGS_FILE`] bytes.
///
/// And, as sshd's `StrictModes`, only a file no one but root and the
/// server's user could have written or chosen: owned by one of them, not
/// writable by anyone else (mode or ACL), every directory on the way and
/// every symlink followed theirs too (or sticky). Resolved once, through
/// held fds, and read through the fd that was checked.
pub(crate) fn read_settings(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind};
    let abs = std::path::absolute(path)?;
    let walked =
        crate::files::chain::walk(crate::files::chain::Start::Root, &abs).map_err(|e| match e {
            crate::files::confine::OpenError::Missing => Error::from(ErrorKind::NotFound),
            e => Error::other(e.to_string()),
        })?;
    let st = &walked.st;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(Error::other("not a regular file"));
    }
    let refuse = |why: String| {
        Err(Error::other(format!(
            "{why}; refused, as sshd's StrictModes"
        )))
    };
    if !crate::files::chain::trusted_owner(st.st_uid) {
        return refuse(format!(
            "owned by uid {}, not root or the server's user",
            st.st_uid
        ));
    }
    let acl = crate::files::acl::read(std::os::fd::AsFd::as_fd(&walked.fd))
        .ok()
        .flatten();
    if crate::files::acl::others_may_write(st.st_mode, acl.as_deref()) {
        return refuse("others may write it (chmod go-w)".into());
    }
    if walked.chain.iter().any(|d| d.shared) {
        return refuse("a directory above it is another user's or writable by others".into());
    }
    if let Some(uid) = walked
        .link_owners
        .iter()
        .find(|u| !crate::files::chain::trusted_owner(**u))
    {
        return refuse(format!("a symbolic link to it is uid {uid}'s"));
    }
    let file = crate::files::confine::reopen(std::os::fd::AsFd::as_fd(&walked.fd))
        .map_err(|e| Error::other(e.to_string()))?;
    read_open(&file, MAX_SETTINGS_FILE)
}

/// [`read_settings`] with another cap (a build's `testdata.json`).
pub(crate) fn read_settings_capped(path: &Path, cap: u64) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    read_open(&file, cap)
}

/// Reads an open regular file of at most `cap` bytes.
fn read_open(file: &std::fs::File, cap: u64) -> std::io::Result<Vec<u8>> {
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    if meta.len() > cap {
        return Err(std::io::Error::other(format!("larger than {cap} bytes")));
    }
    crate::files::readat::read_up_to(file, 0, cap, meta.len())
}

impl Config {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = read_settings(path)
            .and_then(|b| String::from_utf8(b).map_err(std::io::Error::other))
            .map_err(|err| ConfigError::Read {
                path: path.to_owned(),
                err,
            })?;
        Self::parse(&text).map_err(|why| ConfigError::Parse {
            path: path.to_owned(),
            why,
        })
    }

    /// Where and what is wrong, never the file's own text (a settings file
    /// may be a secret another user pointed us at).
    fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| {
            let at = e.span().map(|s| {
                let before = text.get(..s.start).unwrap_or_default();
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!("line {line}, column {column}: ")
            });
            let message = e.message().replace('\n', " ");
            format!("{}{}", at.unwrap_or_default(), message.trim())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files() {
        let good = r#"
listen = "127.0.0.1:0"
metrics = ":9100"
[[repository]]
name = "yocto/app"
sources = ["linux/arm64=a", "b"]
platform_tags = true
[[repository]]
name = "other"
sources = ["c"]
tag = "v1"
annotations = ["k=v"]
[yocto]
build_dirs = ["/build"]
"#;
        let c = Config::parse(good).unwrap();
        assert_eq!(c.repositories.len(), 2);
        let metrics = c.metrics.as_ref().unwrap().addrs();
        assert_eq!(metrics, [std::net::SocketAddr::from(([0, 0, 0, 0], 9100))]);
        assert_eq!(c.repositories[0].index.tag, "latest");
        assert!(c.repositories[0].index.platform_tags);
        assert_eq!(c.repositories[1].index.tag, "v1");
        assert_eq!(c.yocto.unwrap().namespace, "yocto");
        for bad in [
            "lisen = \"127.0.0.1:1\"",
            "[[repository]]\nname = \"a\"",
            "[[repository]]\nname = \"a\"\nsources = []\nfoo = 1",
            "listen = \"nowhere\"",
            "listen = \"5000\"",
            "[yocto]\nbuild_dirs = [\"/b\"]\nextra = true",
        ] {
            let e = Config::parse(bad).unwrap_err();
            assert!(!e.contains('\n'), "{e}");
        }
    }
}
