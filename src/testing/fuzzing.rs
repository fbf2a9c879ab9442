//! Entry points for the fuzz targets under `fuzz/` (cargo-fuzz), one per
//! parser of untrusted bytes, and for the deterministic replay of their
//! corpora in `cargo test`. Each must never panic, whatever the input; what
//! they return is ignored. Not part of the supported API.

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

/// A platform as given on the command line.
pub fn platform(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(n) = crate::oci::platform::Platform::parse(s) {
            let _ = n.platform.to_string();
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

/// `/proc/self/mountinfo` lines.
pub fn mountinfo(data: &[u8]) {
    for e in crate::files::mountinfo::parse(data) {
        let _ = (e.ocimux_pid(), e.fuse_connection());
    }
}

/// `-o` option strings.
pub fn mount_options(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = crate::mount::daemon::MountOptions::parse(s.split('\0'));
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
        let _ = crate::mount::fstab::split_sources(s);
    }
}

/// Source arguments: `[PLATFORM=]PATH`, `oci:PATH[:REF]`, `oci-archive:…`.
pub fn source_arg(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = crate::source::SourceSpec::parse(s);
    }
}
