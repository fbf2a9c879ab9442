//! A machine's platform, where an image's config cannot say it: umoci
//! cannot set a variant, so a 32-bit ARM machine's images all say `arm`.
//! In order: the configuration file's `[yocto.platforms]` (the user's word,
//! used as `PLATFORM=PATH` is), what the build recorded for that image
//! (`…testdata.json`: `TARGET_ARCH`, `TUNE_FEATURES`, `TUNE_PKGARCH`), the
//! table of common machines below; else a warning naming the machine and
//! the key that fixes it.

use std::collections::BTreeMap;
use std::path::Path;

use crate::oci::platform::Platform;
use crate::source::ArmVariant;

/// Common 32-bit ARM machines and their variant (Poky's and the BSP
/// layers' `DEFAULTTUNE`s). README lists it.
pub const MACHINE_VARIANTS: &[(&str, &str)] = &[
    ("qemuarm", "v7"),
    ("qemuarma15", "v7"),
    ("qemuarmv5", "v5"),
    ("beaglebone", "v7"),
    ("beaglebone-yocto", "v7"),
    ("raspberrypi", "v6"),
    ("raspberrypi0", "v6"),
    ("raspberrypi0-wifi", "v6"),
    ("raspberrypi2", "v7"),
    ("raspberrypi3", "v7"),
    ("raspberrypi4", "v7"),
    ("imx6qdlsabresd", "v7"),
    ("stm32mp1", "v7"),
];

/// Most bytes of a `testdata.json` read (they are tens of KiB).
const MAX_TESTDATA: u64 = 4 << 20;

/// What one machine's sources are told about their platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hint {
    /// `[yocto.platforms]`: the platform, as `PLATFORM=PATH` gives it.
    pub platform: Option<Platform>,
    /// For a config that says `arm` without a variant.
    pub arm_variant: ArmVariant,
}

/// The hint for `machine`'s image whose build recorded `testdata` (if found).
pub fn hint(machine: &str, map: &BTreeMap<String, Platform>, testdata: Option<&Path>) -> Hint {
    if let Some(p) = map.get(machine) {
        return Hint {
            platform: Some(p.clone()),
            arm_variant: ArmVariant::Advise,
        };
    }
    let recorded = testdata.and_then(|path| {
        let vars = variables(path)?;
        let get = |k: &str| vars.get(k).and_then(|v| v.as_str()).unwrap_or_default();
        let v = recorded_variant(
            get("TARGET_ARCH"),
            get("TUNE_FEATURES"),
            get("TUNE_PKGARCH"),
        )?;
        let name = path.file_name()?.to_string_lossy().into_owned();
        Some((v, format!("{name:?} (TUNE_FEATURES)")))
    });
    let table = || {
        MACHINE_VARIANTS
            .iter()
            .find(|(m, _)| *m == machine)
            .map(|(_, v)| {
                (
                    (*v).to_owned(),
                    format!("the table of machines ({machine})"),
                )
            })
    };
    let arm_variant = match recorded.or_else(table) {
        Some((variant, from)) => ArmVariant::Known { variant, from },
        None => ArmVariant::Unknown {
            advice: format!(
                "machine {machine:?} is not in ocimux's table and its build recorded no \
                 TUNE_FEATURES: add {machine:?} = \"linux/arm/v7\" (or v6, v5) under \
                 [yocto.platforms] in the configuration file (--config)"
            ),
        },
    };
    Hint {
        platform: None,
        arm_variant,
    }
}

/// A build's variables as its `testdata.json` recorded them (at most
/// [`MAX_TESTDATA`] bytes read, a regular file inside the machine's
/// directory — a link out of it is not followed — never blocking).
fn variables(path: &Path) -> Option<BTreeMap<String, serde_json::Value>> {
    let name = path.file_name()?.to_str()?;
    let bytes = crate::files::confine::read_beside(path.parent()?, name, MAX_TESTDATA).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The string variable `name` the build that wrote `testdata` recorded.
pub fn recorded(testdata: &Path, name: &str) -> Option<String> {
    let vars = variables(testdata)?;
    vars.get(name)?.as_str().map(str::to_owned)
}

/// The ARM variant a build's tune says, for a 32-bit ARM target only.
fn recorded_variant(target_arch: &str, features: &str, pkgarch: &str) -> Option<String> {
    if target_arch != "arm" && !target_arch.starts_with("armv") {
        return None;
    }
    let from_feature = |f: &str| match f {
        "armv8a" | "armv8-2a" => Some("v8"),
        "armv7a" | "armv7ve" | "armv7r" | "armv7m" => Some("v7"),
        "armv6" | "armv6k" | "armv6t2" | "armv6m" => Some("v6"),
        "armv5" | "armv5e" | "armv5te" | "armv5tej" => Some("v5"),
        _ => None,
    };
    let from_pkgarch = || {
        let p = pkgarch;
        if p.starts_with("armv7") || p.starts_with("cortexa") || p.starts_with("cortexr") {
            Some("v7")
        } else if p.starts_with("armv6") || p.starts_with("arm1176") || p.starts_with("arm1136") {
            Some("v6")
        } else if p.starts_with("armv5") || p.starts_with("arm926") {
            Some("v5")
        } else {
            None
        }
    };
    // The newest architecture the tune names decides (a tune lists its
    // ancestors' features too).
    let best = features.split_whitespace().filter_map(from_feature).max();
    best.or_else(from_pkgarch).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_variables_stay_inside_the_machine_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, outside) = (tmp.path().join("qemuarm"), tmp.path().join("secret.json"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(&outside, r#"{"PV": "leaked"}"#).unwrap();
        let dated = dir.join("app-qemuarm-20261205120000.testdata.json");
        std::fs::write(&dated, r#"{"PV": "1.2"}"#).unwrap();
        let link = |name: &str, to: &Path| {
            std::os::unix::fs::symlink(to, dir.join(name)).unwrap();
            dir.join(name)
        };
        let fifo = dir.join("fifo.testdata.json");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let cases = [
            (dated.clone(), Some("1.2")),
            // OE-core's link name, to the dated file beside it.
            (
                link(
                    "app-qemuarm.testdata.json",
                    Path::new("app-qemuarm-20261205120000.testdata.json"),
                ),
                Some("1.2"),
            ),
            (link("out.testdata.json", &outside), None),
            (link("up.testdata.json", Path::new("../secret.json")), None),
            (fifo, None),
            (dir.join("missing.testdata.json"), None),
        ];
        for (path, want) in cases {
            assert_eq!(recorded(&path, "PV").as_deref(), want, "{}", path.display());
        }
    }

    #[test]
    fn tunes() {
        // TARGET_ARCH, TUNE_FEATURES, TUNE_PKGARCH, variant
        let cases = [
            (
                "arm",
                "arm vfp thumb neon callconvention-hard armv7ve cortexa15",
                "cortexa15t2hf-neon",
                Some("v7"),
            ),
            (
                "arm",
                "arm armv5 thumb dsp armv5te arm926ejs",
                "arm926ejste",
                Some("v5"),
            ),
            (
                "arm",
                "arm vfp armv6 arm1176jzfs",
                "arm1176jzfshf",
                Some("v6"),
            ),
            ("arm", "", "armv7vet2hf-neon", Some("v7")),
            ("arm", "", "cortexa7t2hf-neon-vfpv4", Some("v7")),
            ("arm", "arm armv4 armv4t", "armv4t", None),
            ("aarch64", "aarch64 armv8a crc", "cortexa57", None),
            ("x86_64", "m64 core2", "core2-64", None),
        ];
        for (arch, features, pkgarch, want) in cases {
            assert_eq!(
                recorded_variant(arch, features, pkgarch).as_deref(),
                want,
                "{features}"
            );
        }
    }

    #[test]
    fn order_of_sources() {
        let tmp = tempfile::tempdir().unwrap();
        let testdata = tmp.path().join("app-qemuarm-20261205120000.testdata.json");
        std::fs::write(
            &testdata,
            r#"{"TARGET_ARCH": "arm", "TUNE_FEATURES": "arm armv6", "TUNE_PKGARCH": "armv6"}"#,
        )
        .unwrap();
        let known = |h: Hint| match h.arm_variant {
            ArmVariant::Known { variant, .. } => Some(variant),
            _ => None,
        };
        let none = BTreeMap::new();
        // The build's record before the table; the table without a record.
        assert_eq!(
            known(hint("qemuarm", &none, Some(&testdata))).as_deref(),
            Some("v6")
        );
        assert_eq!(known(hint("qemuarm", &none, None)).as_deref(), Some("v7"));
        assert_eq!(known(hint("qemuarmv5", &none, None)).as_deref(), Some("v5"));
        // A broken or missing record falls back to the table.
        let broken = tmp.path().join("broken.testdata.json");
        std::fs::write(&broken, "{").unwrap();
        assert_eq!(
            known(hint("qemuarm", &none, Some(&broken))).as_deref(),
            Some("v7")
        );
        // Neither: advice naming the machine and the key.
        match hint("myboard", &none, None).arm_variant {
            ArmVariant::Unknown { advice } => {
                assert!(
                    advice.contains("\"myboard\" = \"linux/arm/v7\""),
                    "{advice}"
                );
                assert!(advice.contains("[yocto.platforms]"), "{advice}");
                assert!(!advice.contains("=PATH"), "{advice}");
            }
            other => panic!("{other:?}"),
        }
        // The configuration's word first, as PLATFORM=PATH.
        let p = Platform::parse("linux/arm/v6").unwrap().platform;
        let map = BTreeMap::from([("qemuarm".to_owned(), p.clone())]);
        assert_eq!(hint("qemuarm", &map, Some(&testdata)).platform, Some(p));
    }
}
