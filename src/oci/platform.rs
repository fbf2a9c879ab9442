//! Platforms (`os/arch[/variant]`) and the normalisation of Yocto/uname names to
//! the Go names that OCI clients match on.

use std::fmt;

use serde::Serialize;

/// An OCI platform, serialised in the image-spec's field order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Platform {
    /// CPU architecture, Go name (`amd64`, `arm64`, `arm` …).
    pub architecture: String,
    /// Operating system, Go name (`linux`).
    pub os: String,
    /// OS version (Windows images).
    #[serde(rename = "os.version", skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    /// OS features (Windows images).
    #[serde(rename = "os.features", skip_serializing_if = "Vec::is_empty")]
    pub os_features: Vec<String>,
    /// CPU variant (`v7` for 32-bit ARM …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// Why a platform value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlatformError {
    /// Not `os/arch` or `os/arch/variant`.
    #[error("expected os/arch or os/arch/variant")]
    Shape,
    /// A component is empty.
    #[error("{0} is empty")]
    Empty(&'static str),
    /// A component is longer than [`MAX_COMPONENT`].
    #[error("{what} is {len} bytes long, more than {MAX_COMPONENT}")]
    TooLong {
        /// `os`, `architecture` or `variant`.
        what: &'static str,
        /// Its length.
        len: usize,
    },
    /// A component has other characters than `[A-Za-z0-9._-]`.
    #[error("{what} {value:?} has characters other than letters, digits, '.', '_', '-'")]
    Characters {
        /// `os`, `architecture` or `variant`.
        what: &'static str,
        /// The value.
        value: String,
    },
    /// `os.version` is empty, too long or has other characters than `[A-Za-z0-9._+-]`.
    #[error("os.version {0:?} is not 1 to {MAX_OS_VERSION} of letters, digits, '.', '_', '+', '-'")]
    OsVersion(String),
    /// `os.features` has more than [`MAX_OS_FEATURES`] entries.
    #[error("os.features lists {0} entries, more than {max}", max = MAX_OS_FEATURES.0)]
    TooManyFeatures(usize),
    /// An `os.features` entry is empty, too long or has other characters.
    #[error(
        "os.features entry {0:?} is not 1 to {max} of letters, digits, '.', '_', '+', '-'",
        max = MAX_OS_FEATURES.1
    )]
    Feature(String),
}

/// A platform after normalisation, with what was changed or is worth a warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    /// The normalised platform.
    pub platform: Platform,
    /// Human-readable notes (renamed architecture, variant taken from it …).
    pub warnings: Vec<String>,
    /// 32-bit ARM came without a variant: clients pick arm images by
    /// variant, so whoever reports it says how to give one (see
    /// [`Normalized::arm_advice`]).
    pub missing_arm_variant: bool,
}

impl Normalized {
    /// The command line's advice for a [`Normalized::missing_arm_variant`].
    pub fn arm_advice(&self) -> Option<String> {
        let os = &self.platform.os;
        self.missing_arm_variant.then(|| {
            format!(
                "{os}/arm has no variant; clients pick arm images by variant: \
                 give it as {os}/arm/v7=PATH (or v6, v5)"
            )
        })
    }
}

impl Platform {
    /// Parses `os/arch[/variant]` as given on the command line, then normalises it.
    pub fn parse(s: &str) -> Result<Normalized, PlatformError> {
        let parts: Vec<&str> = s.split('/').collect();
        let (os, arch, variant) = match parts.as_slice() {
            [os, arch] => (*os, *arch, None),
            [os, arch, variant] => (*os, *arch, Some(*variant)),
            _ => return Err(PlatformError::Shape),
        };
        Self::normalize(os, arch, variant)
    }

    /// Normalises raw names (from a config or the command line) to Go names.
    ///
    /// Refuses empty or odd components; renames Yocto/uname architectures with a
    /// warning; warns when 32-bit ARM comes without a variant.
    pub fn normalize(
        os: &str,
        arch: &str,
        variant: Option<&str>,
    ) -> Result<Normalized, PlatformError> {
        for (what, value) in [
            ("os", Some(os)),
            ("architecture", Some(arch)),
            ("variant", variant),
        ] {
            if let Some(v) = value {
                check_component(what, v)?;
            }
        }
        let mut warnings = Vec::new();
        let os_lc = os.to_ascii_lowercase();
        if os_lc != os {
            warnings.push(format!("os {os:?} normalised to {os_lc:?}"));
        }
        let arch_lc = arch.to_ascii_lowercase();
        let (go_arch, implied_variant) = go_arch(&arch_lc);
        if go_arch != arch {
            warnings.push(format!("architecture {arch:?} normalised to {go_arch:?}"));
        }
        let variant_given = variant;
        let variant = match (variant, implied_variant) {
            (Some(v), _) => normalize_variant(go_arch, &v.to_ascii_lowercase()),
            (None, Some(v)) => {
                warnings.push(format!("variant {v:?} taken from architecture {arch:?}"));
                Some(v.to_owned())
            }
            (None, None) => None,
        };
        if let Some(v) = variant_given.filter(|v| Some(v.to_ascii_lowercase()) != variant) {
            let now = variant
                .as_deref()
                .map_or("none".to_owned(), |n| format!("{n:?}"));
            warnings.push(format!("variant {v:?} of {go_arch} normalised to {now}"));
        }
        let missing_arm_variant = go_arch == "arm" && variant.is_none();
        Ok(Normalized {
            missing_arm_variant,
            platform: Platform {
                architecture: go_arch.to_owned(),
                os: os_lc,
                os_version: None,
                os_features: Vec::new(),
                variant,
            },
            warnings,
        })
    }

    /// Whether `other` is a platform this one (a `--platform` filter)
    /// selects: same os and architecture, and the variant and os.version
    /// when this one names them.
    pub fn matches(&self, other: &Platform) -> bool {
        let same =
            |mine: &Option<String>, theirs: &Option<String>| mine.is_none() || mine == theirs;
        self.os == other.os
            && self.architecture == other.architecture
            && same(&self.variant, &other.variant)
            && same(&self.os_version, &other.os_version)
    }

    /// What a client tells platforms apart by: two platforms with the same
    /// key are indistinguishable to it.
    pub fn key(&self) -> (&str, &str, Option<&str>, Option<&str>) {
        (
            &self.os,
            &self.architecture,
            self.variant.as_deref(),
            self.os_version.as_deref(),
        )
    }
}

/// Longest `os`, `architecture` or `variant` accepted (Go's longest is 11).
pub const MAX_COMPONENT: usize = 32;
/// Longest `os.version` accepted (Windows' are like `10.0.20348.2340`).
pub const MAX_OS_VERSION: usize = 64;
/// Most `os.features` entries accepted, and the longest one.
pub const MAX_OS_FEATURES: (usize, usize) = (16, 64);

fn check_component(what: &'static str, v: &str) -> Result<(), PlatformError> {
    if v.is_empty() {
        return Err(PlatformError::Empty(what));
    }
    if v.len() > MAX_COMPONENT {
        return Err(PlatformError::TooLong { what, len: v.len() });
    }
    if !v
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        let value = v.to_owned();
        return Err(PlatformError::Characters { what, value });
    }
    Ok(())
}

/// Checks `os.version` and `os.features` taken from a source: they reach
/// the generated index and terminals, so each is short and made of
/// `[A-Za-z0-9._+-]` only (no spaces, no control characters).
pub fn check_os_fields(version: Option<&str>, features: &[String]) -> Result<(), PlatformError> {
    let plain = |v: &str, max: usize| {
        !v.is_empty()
            && v.len() <= max
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+'))
    };
    if let Some(v) = version.filter(|v| !plain(v, MAX_OS_VERSION)) {
        return Err(PlatformError::OsVersion(v.to_owned()));
    }
    let (most, longest) = MAX_OS_FEATURES;
    if features.len() > most {
        return Err(PlatformError::TooManyFeatures(features.len()));
    }
    if let Some(f) = features.iter().find(|f| !plain(f, longest)) {
        return Err(PlatformError::Feature(f.clone()));
    }
    Ok(())
}

/// A variant as containerd normalises it: arm's `7` is `v7`; arm64's `v8`
/// (and `8`, `v8.0`) is no variant; amd64's `v1` is none.
fn normalize_variant(go_arch: &str, v: &str) -> Option<String> {
    match (go_arch, v) {
        ("arm64", "8" | "v8" | "v8.0") | ("amd64", "v1") => None,
        ("arm64", "9" | "9.0" | "v9.0") => Some("v9".into()),
        ("arm", "5" | "6" | "7" | "8") => Some(format!("v{v}")),
        (_, v) => Some(v.to_owned()),
    }
}

/// Maps an architecture name to Go's, with the ARM variant it implies.
fn go_arch(arch: &str) -> (&str, Option<&'static str>) {
    match arch {
        "aarch64" | "arm64" | "armv8" | "armv8l" => ("arm64", None),
        "x86_64" | "x86-64" | "amd64" | "x64" => ("amd64", None),
        "i386" | "i486" | "i586" | "i686" | "x86" | "386" => ("386", None),
        "armv7l" | "armv7" | "armv7a" | "armv7hf" | "armhf" => ("arm", Some("v7")),
        "armv6l" | "armv6" => ("arm", Some("v6")),
        "armv5l" | "armv5" | "armv5te" | "armv5tel" => ("arm", Some("v5")),
        // containerd's choice for Debian's armel.
        "armel" => ("arm", Some("v6")),
        "powerpc64le" | "ppc64el" | "ppc64le" => ("ppc64le", None),
        "powerpc64" | "ppc64" => ("ppc64", None),
        "powerpc" | "ppc" => ("ppc", None),
        "mips64el" | "mips64le" => ("mips64le", None),
        "mipsel" | "mipsle" => ("mipsle", None),
        "loongarch64" | "loong64" => ("loong64", None),
        other => (other, None),
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        if let Some(v) = &self.os_version {
            write!(f, " ({v})")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_normalise_table() {
        // input, Ok(display, warnings) or Err(error)
        let cases: &[(&str, Result<(&str, usize), PlatformError>)] = &[
            ("linux/amd64", Ok(("linux/amd64", 0))),
            ("linux/arm64", Ok(("linux/arm64", 0))),
            ("linux/arm/v7", Ok(("linux/arm/v7", 0))),
            ("linux/aarch64", Ok(("linux/arm64", 1))),
            ("linux/x86_64", Ok(("linux/amd64", 1))),
            ("linux/i686", Ok(("linux/386", 1))),
            ("linux/i586", Ok(("linux/386", 1))),
            ("linux/armv7l", Ok(("linux/arm/v7", 2))),
            ("linux/powerpc64le", Ok(("linux/ppc64le", 1))),
            ("linux/riscv64", Ok(("linux/riscv64", 0))),
            ("linux/mips64el", Ok(("linux/mips64le", 1))),
            ("Linux/AMD64", Ok(("linux/amd64", 2))),
            ("linux/arm", Ok(("linux/arm", 0))),
            // containerd's normalisation.
            ("linux/arm64/v8", Ok(("linux/arm64", 1))),
            ("linux/aarch64/v8", Ok(("linux/arm64", 2))),
            ("linux/arm/7", Ok(("linux/arm/v7", 1))),
            ("linux/armel", Ok(("linux/arm/v6", 2))),
            ("linux/armhf", Ok(("linux/arm/v7", 2))),
            ("linux/amd64/v1", Ok(("linux/amd64", 1))),
            ("linux/amd64/v3", Ok(("linux/amd64/v3", 0))),
            ("linux", Err(PlatformError::Shape)),
            ("linux/arm/v7/x", Err(PlatformError::Shape)),
            ("linux/", Err(PlatformError::Empty("architecture"))),
            ("/amd64", Err(PlatformError::Empty("os"))),
            (
                "linux/am d64",
                Err(PlatformError::Characters {
                    what: "architecture",
                    value: "am d64".into(),
                }),
            ),
            ("linux/arm/", Err(PlatformError::Empty("variant"))),
        ];
        for (input, want) in cases {
            match (Platform::parse(input), want) {
                (Ok(n), Ok((display, warnings))) => {
                    assert_eq!(n.platform.to_string(), *display, "{input}");
                    assert_eq!(n.warnings.len(), *warnings, "{input}: {:?}", n.warnings);
                    assert_eq!(n.missing_arm_variant, *display == "linux/arm", "{input}");
                }
                (Err(e), Err(want)) => assert_eq!(&e, want, "{input}"),
                (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn os_fields_table() {
        let long = "x".repeat(65);
        let many: Vec<String> = (0..17).map(|i| format!("f{i}")).collect();
        // version, features, ok
        let cases: &[(Option<&str>, &[String], bool)] = &[
            (None, &[], true),
            (Some("10.0.17763.1234"), &["win32k".to_owned()], true),
            (Some(""), &[], false),
            (Some("10.0\u{1b}[2J"), &[], false),
            (Some("10 0"), &[], false),
            (Some(&long), &[], false),
            (None, &["".to_owned()], false),
            (None, &["a\nb".to_owned()], false),
            (None, std::slice::from_ref(&long), false),
            (None, &many, false),
            (None, &many[..16], true),
        ];
        for (version, features, ok) in cases {
            assert_eq!(
                check_os_fields(*version, features).is_ok(),
                *ok,
                "{version:?} {features:?}"
            );
        }
        assert_eq!(
            Platform::parse(&format!("linux/{}", "a".repeat(33))),
            Err(PlatformError::TooLong {
                what: "architecture",
                len: 33
            })
        );
        assert!(Platform::parse(&format!("linux/{}", "a".repeat(32))).is_ok());
    }

    #[test]
    fn filter_matching_table() {
        let p = |s: &str| Platform::parse(s).unwrap().platform;
        let cases = [
            ("linux/arm64", "linux/arm64", true),
            ("linux/arm", "linux/arm/v7", true),
            ("linux/arm/v7", "linux/arm/v6", false),
            ("linux/arm/v7", "linux/arm", false),
            ("linux/amd64", "linux/arm64", false),
            ("windows/amd64", "linux/amd64", false),
        ];
        for (filter, platform, want) in cases {
            assert_eq!(p(filter).matches(&p(platform)), want, "{filter} {platform}");
        }
    }

    #[test]
    fn arm_without_variant_suggests_override() {
        let n = Platform::normalize("linux", "arm", None).unwrap();
        let advice = n.arm_advice().unwrap_or_default();
        assert!(advice.contains("linux/arm/v7=PATH"), "{advice:?}");
        let n = Platform::normalize("linux", "arm", Some("v7")).unwrap();
        assert_eq!(n.arm_advice(), None);
    }

    #[test]
    fn serialises_in_spec_order() {
        let mut p = Platform::parse("linux/arm/v7").unwrap().platform;
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"architecture":"arm","os":"linux","variant":"v7"}"#
        );
        p.os_version = Some("10.0".into());
        p.os_features = vec!["win32k".into()];
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"architecture":"arm","os":"linux","os.version":"10.0","os.features":["win32k"],"variant":"v7"}"#
        );
    }
}
