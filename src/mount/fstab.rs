//! The mount(8) form: `mount -t fuse.ocimux SOURCES MNT -o OPTS` (and an
//! fstab line) makes mount.fuse3 run `ocimux SOURCES MNT -o OPTS`. This
//! module turns that form into the `ocimux mount` command line.
//!
//! - `SOURCES` is a `:`-separated list of `[PLATFORM=]PATH` (overlayfs'
//!   lowerdir syntax: `\:` is a colon inside a path, `\\` a backslash);
//! - ocimux's own options go in `-o` as `tag=`, `ref=`, `annotation=K=V`,
//!   `static`, `no_passthrough`, `verify`, `threads=`, `readahead_kb=`,
//!   `log_file=`, `platform=`, `platform_tags`; FUSE options (`allow_other`, `allow_root`,
//!   `default_permissions`, `auto_unmount`, `noexec`, `exec`) pass through;
//! - what mount(8) and fstab add are accepted and ignored: `rw` (the mount
//!   is read-only whatever is asked, like a write-protected device), `ro`,
//!   `suid`/`nosuid`, `dev`/`nodev` (always nosuid, nodev), access-time
//!   words, and fstab-only words (`defaults`, `auto`, `noauto`, `user`,
//!   `users`, `nouser`, `owner`, `group`, `_netdev`, `nofail`, `x-*`,
//!   `comment=`), in case a helper passes them on.
//!
//! Anything else is refused, as `ocimux mount -o` refuses it.

use crate::error::Error;

/// Whether `args` (without the program name) is the mount(8) form: SOURCES
/// (paths, so with a `/`), MNT (absolute as mount(8) passes it, or
/// relative to where a user typed it), then only `-o OPTS` (or `-oOPTS`).
/// A mistyped subcommand (`ocimux mout /mnt`) is not taken for it.
pub fn is_helper_form(args: &[String], subcommands: &[&str]) -> bool {
    let (Some(first), Some(mnt)) = (args.first(), args.get(1)) else {
        return false;
    };
    if first.starts_with('-') || subcommands.contains(&first.as_str()) || !first.contains('/') {
        return false;
    }
    let rest = args.get(2..).unwrap_or_default();
    !mnt.is_empty() && !mnt.starts_with('-') && options_only(rest)
}

fn options_only(rest: &[String]) -> bool {
    let mut i = 0;
    while let Some(a) = rest.get(i) {
        match a.as_str() {
            "-o" if rest.get(i + 1).is_some() => i += 2,
            // mount.fuse3 may pass these through; they are harmless.
            "-n" | "-s" | "-f" | "-v" => i += 1,
            o if o.starts_with("-o") && o.len() > 2 => i += 1,
            _ => return false,
        }
    }
    true
}

/// Splits `SOURCES` at unescaped `:`; `\:` is a colon, `\\` a backslash.
pub fn split_sources(sources: &str) -> Result<Vec<String>, Error> {
    let refuse = |why: &str| Error::Argument {
        what: "sources",
        value: sources.to_owned(),
        why: why.to_owned(),
    };
    let mut out = vec![String::new()];
    let mut chars = sources.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(e @ (':' | '\\')) => out.last_mut().into_iter().for_each(|s| s.push(e)),
                _ => return Err(refuse("a backslash must escape ':' or '\\'")),
            },
            ':' => out.push(String::new()),
            c => out.last_mut().into_iter().for_each(|s| s.push(c)),
        }
    }
    if out.iter().any(String::is_empty) {
        return Err(refuse(
            "an empty source (check for '::' or a ':' at either end)",
        ));
    }
    Ok(out)
}

/// The mount(8) form translated: the `ocimux mount` options (each value
/// attached to its flag, `--tag=V`) and the mountpoint go through the
/// argument parser; the sources never do.
///
/// A source string is data written by whoever wrote the fstab line or the
/// autofs map, and it must not become an option or a command: a piece such as
/// `--`, `--log-file=…` or `-oallow_other` is a source (a path that does not
/// exist), so the caller adds [`HelperArgs::sources`] to the parsed mount's
/// sources itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelperArgs {
    /// `ocimux mount` arguments: options, then the absolute mountpoint.
    pub options: Vec<String>,
    /// The `:`-separated SOURCES, split; never parsed as arguments.
    pub sources: Vec<String>,
    /// The source as the fstab line or mount(8) command wrote it: the
    /// mount's source, so that `mount -a` finds it mounted.
    pub written: String,
}

/// How the fstab line (or mount(8) command) that led here wrote `sources`:
/// `PROGRAM#SOURCES` for type `fuse`, `SOURCES` for `fuse.ocimux`.
/// mount.fuse3 runs ocimux the same way for both, through `/bin/sh -c
/// "'PROGRAM' 'SOURCES' 'MNT' '-o' 'OPTS'"`; PROGRAM is the path the fstab
/// line wrote before `#` in the first form, and the bare type's name
/// (found in PATH) in the second. So the parent's command says which: a
/// PROGRAM with a `/` is a `#` line. (A `#` line with a bare name is taken
/// for the second form; only `mount -a`'s idempotence suffers.)
fn as_written(sources: &str) -> String {
    let from_parent = || -> Option<String> {
        let parent = parent_of(std::process::id())?;
        let cmdline = std::fs::read(format!("/proc/{parent}/cmdline")).ok()?;
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let [sh, dash_c, command, ..] = args.as_slice() else {
            return None;
        };
        if !sh.ends_with("sh") || dash_c != "-c" {
            return None;
        }
        let rest = command.strip_prefix('\'')?;
        let (program, rest) = rest.split_once('\'')?;
        let quoted = format!(" '{sources}' ");
        match rest.starts_with(&quoted) && program.contains('/') {
            true => Some(format!("{program}#{sources}")),
            false => None,
        }
    };
    from_parent().unwrap_or_else(|| sources.to_owned())
}

/// A process's parent, from `/proc/PID/stat`.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Translates the mount(8) form `SOURCES MNT [-o OPTS]...`.
pub fn mount_args(args: &[String]) -> Result<HelperArgs, Error> {
    let (Some(sources), Some(mountpoint)) = (args.first(), args.get(1)) else {
        return Err(Error::Argument {
            what: "mount(8) arguments",
            value: args.join(" "),
            why: "expected SOURCES MOUNTPOINT [-o OPTIONS]".into(),
        });
    };
    // Relative to where it was typed (mount(8) always passes it absolute).
    let mountpoint = std::path::absolute(mountpoint)
        .map_err(|e| Error::Argument {
            what: "mountpoint",
            value: mountpoint.clone(),
            why: e.to_string(),
        })?
        .to_string_lossy()
        .into_owned();
    let written = as_written(sources);
    let sources = split_sources(sources)?;
    let mut out = Vec::new();
    let mut fuse_options = Vec::new();
    let mut rest = args.get(2..).unwrap_or_default().iter();
    while let Some(a) = rest.next() {
        let opts = match a.as_str() {
            "-o" => rest.next().map(String::as_str).unwrap_or_default(),
            o => match o.strip_prefix("-o") {
                Some(opts) => opts,
                None => continue, // -n, -s, -f, -v: nothing for us
            },
        };
        for opt in opts.split(',').filter(|o| !o.is_empty()) {
            option(opt, &mut out, &mut fuse_options)?;
        }
    }
    if !fuse_options.is_empty() {
        // Attached, so the value is never read as another argument.
        out.push(format!("-o{}", fuse_options.join(",")));
    }
    out.push(mountpoint);
    Ok(HelperArgs {
        options: out,
        sources,
        written,
    })
}

/// Words mount(8) or fstab add that mean nothing to ocimux (besides any
/// `x-…` and `comment=…`).
pub const IGNORED_WORDS: &[&str] = &[
    "rw",
    "ro",
    "suid",
    "nosuid",
    "dev",
    "nodev",
    "atime",
    "noatime",
    "relatime",
    "norelatime",
    "strictatime",
    "nostrictatime",
    "lazytime",
    "nolazytime",
    "diratime",
    "nodiratime",
    "defaults",
    "auto",
    "noauto",
    "user",
    "users",
    "nouser",
    "owner",
    "group",
    "_netdev",
    "nofail",
    "async",
    "sync",
];

/// Whether mount(8) or fstab's word `opt` is one ocimux ignores.
fn ignored(opt: &str) -> bool {
    IGNORED_WORDS.contains(&opt) || opt.starts_with("x-") || opt.starts_with("comment=")
}

/// ocimux's own `-o` words, each declared once: the word, the `ocimux mount`
/// long option it stands for, and whether it takes a value (`word=VALUE`).
/// A test checks every long option exists.
pub const OCIMUX_WORDS: &[(&str, &str, bool)] = &[
    ("tag", "tag", true),
    ("ref", "ref", true),
    ("annotation", "annotation", true),
    ("platform", "platform", true),
    ("platform_tags", "platform-tags", false),
    ("static", "static", false),
    ("no_passthrough", "no-passthrough", false),
    ("verify", "verify", false),
    ("threads", "threads", true),
    ("readahead_kb", "readahead-kb", true),
    ("log_file", "log-file", true),
];

/// FUSE's `-o` words, passed on to the mount (`ocimux mount -o` takes them
/// too: see `MountOptions::parse`).
pub const FUSE_WORDS: &[&str] = &[
    "allow_other",
    "allow_root",
    "default_permissions",
    "auto_unmount",
    "noexec",
    "exec",
];

/// Translates one `-o` word.
fn option(opt: &str, out: &mut Vec<String>, fuse: &mut Vec<String>) -> Result<(), Error> {
    if ignored(opt) {
        return Ok(());
    }
    if FUSE_WORDS.contains(&opt) {
        fuse.push(opt.to_owned());
        return Ok(());
    }
    let (key, value) = match opt.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (opt, None),
    };
    match (OCIMUX_WORDS.iter().find(|(w, _, _)| *w == key), value) {
        (Some((_, flag, true)), Some(value)) => out.push(format!("--{flag}={value}")),
        (Some((_, flag, false)), None) => out.push(format!("--{flag}")),
        _ => return Err(unknown(opt)),
    }
    Ok(())
}

fn unknown(opt: &str) -> Error {
    let ours: Vec<String> = OCIMUX_WORDS
        .iter()
        .map(|(w, _, value)| match value {
            true => format!("{w}="),
            false => (*w).to_owned(),
        })
        .collect();
    Error::Argument {
        what: "mount option",
        value: opt.to_owned(),
        why: format!(
            "not an ocimux option ({}) nor a FUSE one ({})",
            ours.join(", "),
            FUSE_WORDS.join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn helper_form_table() {
        let subs = ["mount", "inspect"];
        let cases: &[(&[&str], bool)] = &[
            (&["/d/a:/d/b", "/mnt", "-o", "rw,noexec"], true),
            (&["/d/a", "/mnt"], true),
            (&["./a", "/mnt", "-orw"], true),
            (&["linux/arm/v7=/d/a", "/mnt", "-n", "-o", "ro"], true),
            (&["mout", "/mnt"], false),
            (&["/d/a", "mnt"], true),
            (&["/d/a", "-o", "x"], false),
            (&["mount", "/mnt", "a"], false),
            (&["inspect", "a"], false),
            (&["--help"], false),
            (&["a"], false),
            (&["a", "/mnt", "b"], false),
            (&["a", "/mnt", "-o"], false),
            (&[], false),
        ];
        for (args, want) in cases {
            assert_eq!(is_helper_form(&strings(args), &subs), *want, "{args:?}");
        }
    }

    #[test]
    fn sources_table() {
        let cases: &[(&str, Result<&[&str], &str>)] = &[
            ("a", Ok(&["a"])),
            ("a:b", Ok(&["a", "b"])),
            (
                "linux/arm64=/d/arm:/d/amd",
                Ok(&["linux/arm64=/d/arm", "/d/amd"]),
            ),
            (r"a\:b:c", Ok(&["a:b", "c"])),
            (r"a\\:b", Ok(&[r"a\", "b"])),
            ("a::b", Err("empty source")),
            (":a", Err("empty source")),
            ("a:", Err("empty source")),
            (r"a\b", Err("backslash")),
            ("", Err("empty source")),
        ];
        for (input, want) in cases {
            match (split_sources(input), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, strings(want), "{input}"),
                (Err(e), Err(frag)) => assert!(e.to_string().contains(frag), "{input}: {e}"),
                (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn mount_args_table() {
        type Want<'a> = Result<(&'a [&'a str], &'a [&'a str]), &'a str>;
        // input, (options then mountpoint, sources)
        let cases: &[(&[&str], Want)] = &[
            (&["a:b", "/m"], Ok((&["/m"], &["a", "b"]))),
            (
                // What mount(8) and mount.fuse3 pass for an fstab line.
                &[
                    "a",
                    "/m",
                    "-o",
                    "rw,noexec,nosuid,nodev,tag=v1,annotation=k=v=w,allow_other",
                ],
                Ok((
                    &[
                        "--tag=v1",
                        "--annotation=k=v=w",
                        "-onoexec,allow_other",
                        "/m",
                    ],
                    &["a"],
                )),
            ),
            (
                &[
                    "a",
                    "/m",
                    "-o",
                    "defaults,noauto,user,_netdev,x-systemd.automount,nofail",
                ],
                Ok((&["/m"], &["a"])),
            ),
            (
                &[
                    "a",
                    "/m",
                    "-ostatic,no_passthrough,verify",
                    "-o",
                    "threads=4,ref=v2",
                ],
                Ok((
                    &[
                        "--static",
                        "--no-passthrough",
                        "--verify",
                        "--threads=4",
                        "--ref=v2",
                        "/m",
                    ],
                    &["a"],
                )),
            ),
            (
                &[
                    "a",
                    "/m",
                    "-o",
                    "readahead_kb=0,log_file=/var/log/o.log,comment=x",
                ],
                Ok((
                    &["--readahead-kb=0", "--log-file=/var/log/o.log", "/m"],
                    &["a"],
                )),
            ),
            // Issue 16: pieces of SOURCES are sources, whatever they start
            // with; they never reach the argument parser.
            (
                &["/s:--:/bin/sh:-c:id > /tmp/F", "/m"],
                Ok((&["/m"], &["/s", "--", "/bin/sh", "-c", "id > /tmp/F"])),
            ),
            (
                &["/s:--log-file=/etc/x:-oallow_other", "/m"],
                Ok((&["/m"], &["/s", "--log-file=/etc/x", "-oallow_other"])),
            ),
            // An option value is attached to its flag, so it stays a value.
            (
                &["/s", "/m", "-o", "tag=--,ref=-oallow_other"],
                Ok((&["--tag=--", "--ref=-oallow_other", "/m"], &["/s"])),
            ),
            (&["a", "/m", "-o", "bogus"], Err("not an ocimux option")),
            (&["a", "/m", "-o", "size=3"], Err("not an ocimux option")),
            (&["a", "/m", "-o", "--"], Err("not an ocimux option")),
            (&["a::b", "/m"], Err("empty source")),
        ];
        // A relative mountpoint is where it was typed.
        let here = std::env::current_dir().unwrap().join("m");
        let got = mount_args(&strings(&["/s", "m"])).unwrap();
        assert_eq!(got.options, [here.to_string_lossy().into_owned()]);
        assert_eq!(got.written, "/s", "not under mount.fuse3: as given");
        for (input, want) in cases {
            match (mount_args(&strings(input)), want) {
                (Ok(got), Ok((options, sources))) => {
                    assert_eq!(got.options, strings(options), "{input:?}");
                    assert_eq!(got.sources, strings(sources), "{input:?}");
                }
                (Err(e), Err(frag)) => assert!(e.to_string().contains(frag), "{input:?}: {e}"),
                (got, want) => panic!("{input:?}: got {got:?}, want {want:?}"),
            }
        }
    }
}
