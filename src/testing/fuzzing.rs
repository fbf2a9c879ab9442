//! Entry points for the fuzz targets under `fuzz/` (cargo-fuzz), one per
//! parser of untrusted bytes, and for the deterministic replay of their
//! corpora in `cargo test`. Each must never panic on any input, and each
//! asserts what must hold of what it accepts (its oracle): printing then
//! parsing again gives the same value, `rw` is never a mount option, source
//! splitting inverts its escaping. Not part of the supported API.

use crate::oci::document::{self, Document, Kind, RawPlatform};

/// The fuzzed parsers, by target name.
pub const TARGETS: &[(&str, fn(&[u8]))] = &[
    ("document", document_bytes),
    ("digest", digest),
    ("platform", platform),
    ("tar", tar_index),
    ("mountinfo", mountinfo),
    ("mount_options", mount_options),
    ("source_arg", source_arg),
    ("mount_helper", mount_helper),
];

/// A JSON document as a manifest, an index and a config, checked both ways.
pub fn document_bytes(data: &[u8]) {
    if let Ok(doc) = document::parse::<Document>(data) {
        let _ = doc.check(Kind::Manifest, Some(document::OCI_MANIFEST));
        let _ = doc.check(Kind::Index, None);
    }
    if let Ok(p) = document::parse::<RawPlatform>(data) {
        if let (Some(os), Some(arch)) = (&p.os, &p.architecture) {
            let _ = crate::oci::platform::Platform::normalize(os, arch, p.variant.as_deref());
        }
        let _ = crate::oci::platform::check_os_fields(
            p.os_version.as_deref(),
            p.os_features.as_deref().unwrap_or_default(),
        );
    }
}

/// A digest string; one that parses must be safe as a file name.
pub fn digest(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(d) = crate::oci::digest::Digest::parse(s) {
        let path = d.blob_path();
        assert!(
            !path.contains("..") && path.split('/').count() == 3,
            "{path}"
        );
        assert_eq!(d.to_string(), s);
    }
}

/// A platform as given on the command line: one that parses prints as
/// something that parses to itself (normalising is idempotent).
pub fn platform(data: &[u8]) {
    use crate::oci::platform::Platform;
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(n) = Platform::parse(s) {
            let printed = n.platform.to_string();
            let again = Platform::parse(&printed).map(|m| m.platform);
            assert_eq!(
                again.as_ref(),
                Ok(&n.platform),
                "{s:?} printed as {printed:?}"
            );
        }
    }
}

/// Tar headers: the archive index over the bytes, as a file.
pub fn tar_index(data: &[u8]) {
    let Ok(mut file) = memfd() else {
        return;
    };
    if std::io::Write::write_all(&mut file, data).is_ok() {
        if let Ok(index) = crate::files::tar::index(&file) {
            for m in index.members.values() {
                assert!(m.offset.saturating_add(m.size) <= data.len() as u64 || m.size == 0);
            }
        }
    }
}

fn memfd() -> std::io::Result<std::fs::File> {
    let fd = nix::sys::memfd::memfd_create(c"fuzz", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)?;
    Ok(std::fs::File::from(fd))
}

/// `/proc/self/mountinfo` lines: an ocimux pid only from an ocimux type and
/// source, a connection only from a device's minor.
pub fn mountinfo(data: &[u8]) {
    use crate::files::mountinfo::FSTYPES;
    for e in crate::files::mountinfo::parse(data) {
        if let Some(pid) = e.legacy_pid() {
            assert!(FSTYPES.contains(&e.fstype.as_str()), "{e:?}");
            let named = e
                .source
                .strip_prefix("ocimux:")
                .and_then(|p| p.parse::<i32>().ok());
            assert_eq!(named, Some(pid), "{e:?}");
        }
        if e.fuse_connection().is_some() {
            assert!(e.dev.contains(':'), "{e:?}");
        }
    }
}

/// `-o` option strings: `rw` among them is never accepted.
pub fn mount_options(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        let parsed = crate::mount::daemon::MountOptions::parse(s.split('\0'));
        let rw = s.split(['\0', ',']).any(|o| o.trim() == "rw");
        assert!(!(rw && parsed.is_ok()), "{s:?} accepted with rw");
    }
}

/// The mount(8) command line (`SOURCES MNT -o OPTS`, NUL-separated
/// arguments), as `ocimux` translates it.
pub fn mount_helper(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        let args: Vec<String> = s.split('\0').map(str::to_owned).collect();
        if crate::mount::fstab::is_helper_form(&args, &["mount", "inspect"]) {
            let _ = crate::mount::fstab::mount_args(&args);
        }
        // Splitting inverts escaping: the pieces, escaped and joined, are
        // the input.
        if let Ok(pieces) = crate::mount::fstab::split_sources(s) {
            let escaped: Vec<String> = pieces
                .iter()
                .map(|p| p.replace('\\', "\\\\").replace(':', "\\:"))
                .collect();
            assert_eq!(escaped.join(":"), s, "{pieces:?}");
        }
    }
}

/// Source arguments: `[PLATFORM=]PATH`, `oci:PATH[:REF]`, `oci-archive:…`:
/// one accepted names a path, and a platform it gives parses.
pub fn source_arg(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(spec) = crate::source::SourceSpec::parse(s) {
            assert!(!spec.path.as_os_str().is_empty(), "{s:?}");
            if let Some(p) = &spec.platform {
                assert!(
                    crate::oci::platform::Platform::parse(&p.to_string()).is_ok(),
                    "{s:?}"
                );
            }
        }
    }
}
