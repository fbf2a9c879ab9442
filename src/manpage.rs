//! `ocimux man [COMMAND]`: clap's page of the command, then what clap does
//! not know — the exit codes on every page, and on `ocimux` and
//! `ocimux mount` the fstab line and every `-o` word — so that each page
//! is complete on its own.

use clap::CommandFactory;
use ocimux::mount::fstab::{FUSE_WORDS, IGNORED_WORDS, OCIMUX_WORDS};
use ocimux::process::lifecycle::exit::MEANINGS;

use crate::failure::Failure;

/// The roff page of `command` (`None`: ocimux itself).
pub(crate) fn page(command: Option<&str>) -> Result<Vec<u8>, Failure> {
    let mut top = crate::cli::Cli::command();
    // Built, so that clap's own `help` subcommand has its page too.
    top.build();
    let man = match command {
        None => clap_mangen::Man::new(top),
        Some(name) => {
            let sub =
                top.find_subcommand(name)
                    .cloned()
                    .ok_or_else(|| ocimux::Error::Argument {
                        what: "command",
                        value: name.to_owned(),
                        why: "not an ocimux command".into(),
                    })?;
            let title = format!("ocimux-{name}");
            clap_mangen::Man::new(sub.name(title.clone()).bin_name(format!("ocimux {name}")))
                .title(title)
        }
    };
    let mut roff = Vec::new();
    man.render(&mut roff)?;
    if matches!(command, None | Some("mount")) {
        roff.extend(fstab_section().as_bytes());
    }
    roff.extend(exit_section().as_bytes());
    Ok(roff)
}

/// `text` safe as roff: backslashes and dashes escaped, a leading `.` or
/// `'` kept from being read as a request.
fn roff(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    match escaped.starts_with(['.', '\'']) {
        true => format!("\\&{escaped}"),
        false => escaped,
    }
}

/// FSTAB: the line, the helper's command, and every `-o` word.
fn fstab_section() -> String {
    let mut s = String::from(".SH FSTAB\n");
    s += &roff(
        "An /etc/fstab line of type fuse.ocimux (SOURCES separated by ':', '\\:' a colon \
         inside a path; mount(8) runs 'ocimux SOURCES MOUNTPOINT -o OPTIONS'):",
    );
    s += "\n.PP\n.nf\n";
    s += &roff(
        "/deploy/amd64-oci:/deploy/arm64-oci  /srv/app  fuse.ocimux  \
         noauto,x-systemd.automount,allow_other  0 0",
    );
    s += "\n.fi\n.PP\n";
    s += &roff("ocimux's words, each the 'ocimux mount' option named beside it:");
    s += "\n";
    for (word, long, value) in OCIMUX_WORDS {
        let shown = if *value {
            format!("{word}=VALUE")
        } else {
            (*word).to_owned()
        };
        s += &format!(
            ".TP\n\\fB{}\\fR\n{}\n",
            roff(&shown),
            roff(&format!("--{long}"))
        );
    }
    s += ".PP\n";
    s += &roff(&format!(
        "FUSE's words, passed to the mount: {}.",
        FUSE_WORDS.join(", ")
    ));
    s += "\n.PP\n";
    s += &roff(&format!(
        "Accepted and ignored (fstab's and mount(8)'s own; the mount is read-only, \
         nosuid and nodev whatever is asked): {}, x-*, comment=*.",
        IGNORED_WORDS.join(", ")
    ));
    s += "\n";
    s
}

/// EXIT STATUS: every code.
fn exit_section() -> String {
    let mut s = String::from(".SH \"EXIT STATUS\"\n");
    for (code, meaning) in MEANINGS {
        s += &format!(".TP\n\\fB{}\\fR\n{}\n", roff(code), roff(meaning));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roff_escapes() {
        let cases = [
            ("a-b", "a\\-b"),
            ("a\\b", "a\\eb"),
            (".TH x", "\\&.TH x"),
            ("'x", "\\&'x"),
        ];
        for (text, want) in cases {
            assert_eq!(roff(text), want, "{text}");
        }
    }

    #[test]
    fn every_page_has_the_exit_codes_and_mount_the_fstab_words() {
        use ocimux::process::lifecycle::exit;
        for code in [
            exit::OTHER,
            exit::BAD_INPUT,
            exit::MOUNT,
            exit::UMOUNT,
            exit::SERVE,
        ] {
            assert!(
                MEANINGS.iter().any(|(c, _)| *c == code.to_string()),
                "{code}"
            );
        }
        let page = |c| String::from_utf8(page(c).unwrap()).unwrap();
        for command in [None, Some("mount"), Some("serve"), Some("help")] {
            let text = page(command);
            assert!(text.contains(".SH \"EXIT STATUS\""), "{command:?}");
            let fstab = text.contains(".SH FSTAB");
            assert_eq!(
                fstab,
                matches!(command, None | Some("mount")),
                "{command:?}"
            );
        }
        let mount = page(Some("mount"));
        let words = OCIMUX_WORDS.iter().map(|(w, _, _)| *w);
        for word in words
            .chain(FUSE_WORDS.iter().copied())
            .chain(["nofail", "_netdev"])
        {
            assert!(mount.contains(&roff(word)), "{word}");
        }
    }
}
