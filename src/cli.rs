//! The command line: every subcommand, argument and option, with its help
//! text (clap derives parsing, help, completions and man pages from these).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "ocimux",
    version,
    about = "Per-arch OCI image layouts as one virtual multi-arch layout, without copying"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
    /// More log output (-v info, -vv debug, -vvv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub(crate) verbose: u8,
    /// Less output (-q: errors only, no progress, no access log; -qq: nothing).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub(crate) quiet: u8,
    /// Log lines as text, or as one JSON object each (time, level, target,
    /// message, and an access line's fields).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub(crate) log_format: LogFormat,
}

/// How log lines are written.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LogFormat {
    /// `ocimux: LEVEL: MESSAGE`.
    Text,
    /// `{"time":…,"level":…,"target":…,"message":…,…}`.
    Json,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
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
    /// Serve the sources over the OCI distribution API (read-only, pull side).
    ///
    /// Example: ocimux serve yocto/app linux/arm64=deploy/arm64-oci deploy/amd64-oci
    ///
    /// The first line on stdout is the base URL once the server answers.
    /// `--config FILE` serves any number of repositories, `--yocto BUILDDIR`
    /// every image of a Yocto build (as NAMESPACE/IMAGE, new ones added as
    /// they appear). With `-- CMD [ARGS...]`, runs CMD with $OCIMUX_REGISTRY
    /// (HOST:PORT) set, stops afterwards and exits with CMD's status.
    Serve(ServeArgs),
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
    /// Show every ocimux mount and server you may see: sources, the index
    /// served and when it was built, whether newer sources fail to compose.
    ///
    /// Example: ocimux status /mnt/app
    ///
    /// Read from the state file each daemon keeps (/run/ocimux for root,
    /// $XDG_RUNTIME_DIR/ocimux otherwise); root sees every user's. Exit 1
    /// when a MOUNTPOINT or URL is given and nothing runs there.
    Status {
        /// One JSON object per daemon (a JSON array).
        #[arg(long)]
        json: bool,
        /// Only the mount at this path, or the server at this URL.
        target: Option<String>,
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
pub(crate) struct IndexArgs {
    /// The ref name (tag) of the single index.json entry.
    #[arg(long, default_value = "latest")]
    pub(crate) tag: String,
    /// Which entry of a source's index.json to take, by ref name (default: the
    /// only entry, else "latest").
    #[arg(long = "ref", value_name = "NAME")]
    pub(crate) ref_name: Option<String>,
    /// An annotation on the generated image index (repeatable).
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    pub(crate) annotations: Vec<String>,
    /// Keep only this platform, os/arch[/variant] (repeatable; a source's
    /// other platforms are left out).
    #[arg(long = "platform", value_name = "PLATFORM")]
    pub(crate) platforms: Vec<String>,
    /// Also tag each platform manifest in index.json, as
    /// TAG-OS-ARCH[-VARIANT][-OSVERSION] (for umoci); clients must then name
    /// oci:MNT:TAG.
    #[arg(long)]
    pub(crate) platform_tags: bool,
}

#[derive(Args, Debug)]
pub(crate) struct ServeArgs {
    /// REPOSITORY (a distribution-spec name: `yocto/app`) then its SOURCEs;
    /// none with --config or --yocto alone. SOURCE is [PLATFORM=]PATH,
    /// oci:PATH[:REF] or oci-archive:PATH[:REF], as `mount` takes them.
    #[arg(value_name = "REPOSITORY SOURCE")]
    pub(crate) args: Vec<String>,
    /// Where to listen (default 127.0.0.1:5000, or the configuration's):
    /// ADDRESS:PORT, [IPv6]:PORT, :PORT (every IPv4 interface) or a name
    /// that resolves to loopback only (localhost:5000: each of its
    /// addresses); port 0 picks a free one.
    #[arg(long, value_name = "ADDR:PORT")]
    pub(crate) listen: Option<ocimux::serve::listen::Listen>,
    /// Answer Prometheus metrics at http://ADDR:PORT/metrics (off unless
    /// given; the forms --listen takes). No TLS, no password: keep it on
    /// loopback or a network you trust.
    #[arg(long, value_name = "ADDR:PORT")]
    pub(crate) metrics: Option<ocimux::serve::listen::Listen>,
    /// A TOML file of repositories and options (see README.md).
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// A Yocto build whose images are all served (repeatable): its TOPDIR,
    /// a TMPDIR, a deploy/images directory or one machine's.
    #[arg(long, value_name = "BUILDDIR")]
    pub(crate) yocto: Vec<PathBuf>,
    /// The namespace of the Yocto mode's repositories.
    #[arg(long, value_name = "NAME", default_value = "yocto")]
    pub(crate) namespace: String,
    /// Dated builds served as tags of their own per image, newest first
    /// (Yocto mode; default 5, at most 32, 0 for none).
    #[arg(long, value_name = "N")]
    pub(crate) history: Option<usize>,
    #[command(flatten)]
    pub(crate) index: IndexArgs,
    /// Hash every blob version before it is served.
    #[arg(long)]
    pub(crate) verify: bool,
    /// Serve the sources as they are at start; do not follow rebuilds.
    #[arg(long = "static")]
    pub(crate) static_sources: bool,
    /// HTTP basic authentication from an htpasswd file (bcrypt: htpasswd -B).
    #[arg(long, value_name = "FILE")]
    pub(crate) htpasswd: Option<PathBuf>,
    /// TLS certificate chain (PEM); reloaded on SIGHUP.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    /// Most connections at once (more wait to be accepted).
    #[arg(long, value_name = "N", default_value_t = 512)]
    pub(crate) max_connections: usize,
    /// Seconds a client may take to send a request's head, stay idle between
    /// requests, or leave a body unread, before its connection is closed.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub(crate) client_timeout: u64,
    /// Seconds in-flight requests get to finish after SIGTERM.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub(crate) drain: u64,
    /// Run CMD with the server up, then stop.
    #[arg(last = true, value_name = "CMD")]
    pub(crate) command: Vec<std::ffi::OsString>,
}

impl IndexArgs {
    /// The library's form of these options.
    pub(crate) fn to_lib(&self) -> ocimux::snapshot::plan::IndexArgs {
        ocimux::snapshot::plan::IndexArgs {
            tag: self.tag.clone(),
            ref_name: self.ref_name.clone(),
            annotations: self.annotations.clone(),
            platforms: self.platforms.clone(),
            platform_tags: self.platform_tags,
        }
    }
}

#[derive(Args, Debug)]
pub(crate) struct MountArgs {
    /// Where to mount (an empty directory), then the sources (with --tmp,
    /// sources only). SOURCE is [PLATFORM=]PATH, oci:PATH[:REF] or
    /// oci-archive:PATH[:REF]: PATH an OCI image layout directory or an
    /// uncompressed tar of one, REF the ref name of its index.json entry,
    /// PLATFORM os/arch[/variant] (overrides the image config).
    #[arg(required = true, value_name = "MOUNTPOINT SOURCE")]
    pub(crate) paths: Vec<String>,
    /// The mount's source as mount(8) wrote it (the helper form only).
    #[arg(skip)]
    pub(crate) written: Option<String>,
    #[command(flatten)]
    pub(crate) index: IndexArgs,
    /// Mount on a fresh temporary directory (needs a command after --; its
    /// path is in $OCIMUX_MNT), removed afterwards.
    #[arg(long)]
    pub(crate) tmp: bool,
    /// Stay in the foreground (log to stderr).
    #[arg(short, long, conflicts_with = "command")]
    pub(crate) foreground: bool,
    /// Mount options, comma separated (allow_other, allow_root,
    /// default_permissions, auto_unmount, noexec).
    #[arg(short = 'o', value_name = "OPT[,OPT...]")]
    pub(crate) options: Vec<String>,
    /// Where the detached daemon writes its log.
    #[arg(long, value_name = "PATH")]
    pub(crate) log_file: Option<PathBuf>,
    /// FUSE request threads, 1 to 64 (default: CPUs, at most 8).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub(crate) threads: Option<u16>,
    /// Do not follow source changes (by default a rebuilt source shows up in the mount).
    #[arg(long = "static")]
    pub(crate) static_sources: bool,
    /// Serve every read from the daemon, even where the kernel offers passthrough.
    #[arg(long)]
    pub(crate) no_passthrough: bool,
    /// Hash each blob the first time it is opened (once per file version) and
    /// fail the open if the bytes do not match the blob's digest.
    #[arg(long)]
    pub(crate) verify: bool,
    /// Readahead of the mount, in KiB, 0 to 65536 (0 leaves the kernel's default).
    #[arg(long, value_name = "KIB", default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(0..=65536))]
    pub(crate) readahead_kb: u32,
    /// A command to run with the mount in place, after --; the mount is
    /// unmounted when it exits, and ocimux exits with its status.
    #[arg(last = true, value_name = "COMMAND")]
    pub(crate) command: Vec<std::ffi::OsString>,
}

#[derive(Args, Debug)]
pub(crate) struct ExportArgs {
    /// Where to write: a directory (--format dir) or a file (oci-archive);
    /// it must not exist, or be an empty directory, unless --force.
    pub(crate) out: PathBuf,
    /// The sources. SOURCE is [PLATFORM=]PATH, oci:PATH[:REF] or
    /// oci-archive:PATH[:REF]: PATH an OCI image layout directory or an
    /// uncompressed tar of one, REF the ref name of its index.json entry,
    /// PLATFORM os/arch[/variant] (overrides the image config).
    #[arg(required = true, value_name = "SOURCE")]
    pub(crate) sources: Vec<String>,
    #[command(flatten)]
    pub(crate) index: IndexArgs,
    /// An OCI image layout directory, or one uncompressed tar of it (what
    /// `skopeo copy oci-archive:` reads).
    #[arg(long, value_enum, default_value_t = ExportFormat::Dir)]
    pub(crate) format: ExportFormat,
    /// How blobs reach a directory: reflink where the filesystem can, else
    /// hard link, else copy (auto); or only one of them.
    #[arg(long, value_enum, default_value_t = LinkArg::Auto)]
    pub(crate) link: LinkArg,
    /// Replace OUT if it exists.
    #[arg(long)]
    pub(crate) force: bool,
    /// Hash every blob while exporting and fail on a mismatch.
    #[arg(long)]
    pub(crate) verify: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub(crate) enum ExportFormat {
    /// A directory.
    Dir,
    /// One uncompressed tar.
    OciArchive,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub(crate) enum LinkArg {
    /// reflink, else hardlink, else copy, per blob.
    Auto,
    /// Copy-on-write clones only.
    Reflink,
    /// Hard links only.
    Hardlink,
    /// Copies only.
    Copy,
}
