//! An image's platform, as a source states it: its config's fields, the
//! index entry's where the config lacks them (and never contradicting
//! them), normalized, and an arm variant settled as `--arm-variant` says.

use super::spec::ArmVariant;
use crate::error::Problem;
use crate::oci::document::RawPlatform;
use crate::oci::platform::{Normalized, Platform};

/// A field a document gives, not empty.
fn given(s: Option<&String>) -> Option<&String> {
    s.filter(|s| !s.is_empty())
}

/// The platform of source `source`'s image from its config, falling back
/// to the index descriptor's.
pub(super) fn platform_from(
    source: &str,
    arm: &ArmVariant,
    config: &RawPlatform,
    from_index: Option<&RawPlatform>,
) -> Result<Platform, Problem> {
    let pick = |f: fn(&RawPlatform) -> Option<&String>| {
        given(f(config)).or_else(|| from_index.and_then(|p| given(f(p))))
    };
    let arch = pick(|p| p.architecture.as_ref()).ok_or(Problem::NoPlatform("architecture"))?;
    let os = pick(|p| p.os.as_ref()).ok_or(Problem::NoPlatform("os"))?;
    let variant = pick(|p| p.variant.as_ref());
    let normalized =
        Platform::normalize(os, arch, variant.map(String::as_str)).map_err(Problem::BadPlatform)?;
    for w in &normalized.warnings {
        log::warn!("source {source}: {w}");
    }
    let mut platform = settle_arm_variant(source, arm, &normalized);
    platform.os_version = pick(|p| p.os_version.as_ref()).cloned();
    platform.os_features = config
        .os_features
        .clone()
        .or_else(|| from_index.and_then(|p| p.os_features.clone()))
        .unwrap_or_default();
    crate::oci::platform::check_os_fields(platform.os_version.as_deref(), &platform.os_features)
        .map_err(Problem::BadPlatform)?;
    agrees_with_entry(&platform, from_index)?;
    Ok(platform)
}

/// The normalized platform, with the variant an arm platform without one
/// is given (`--arm-variant`, or the build's machine), or advice logged.
fn settle_arm_variant(source: &str, arm: &ArmVariant, normalized: &Normalized) -> Platform {
    let mut platform = normalized.platform.clone();
    if !normalized.missing_arm_variant {
        return platform;
    }
    match arm {
        ArmVariant::Advise => {
            if let Some(w) = normalized.arm_advice() {
                log::warn!("source {source}: {w}");
            }
        }
        ArmVariant::Known { variant, from } => {
            log::info!("source {source}: variant {variant} from {from}");
            platform.variant = Some(variant.clone());
        }
        ArmVariant::Unknown { advice } => {
            log::warn!(
                "source {source}: {}/arm has no variant; {advice}",
                platform.os
            );
        }
    }
    platform
}

/// The index entry's platform (sloci-image writes the arm variant only
/// there) fills what the config lacks, and may not contradict it.
fn agrees_with_entry(platform: &Platform, from_index: Option<&RawPlatform>) -> Result<(), Problem> {
    let entry = from_index.and_then(|p| {
        let (os, arch) = (given(p.os.as_ref())?, given(p.architecture.as_ref())?);
        Some(Platform::normalize(
            os,
            arch,
            given(p.variant.as_ref()).map(String::as_str),
        ))
    });
    let Some(entry) = entry else {
        return Ok(());
    };
    let entry = entry.map_err(Problem::BadPlatform)?.platform;
    let differs = entry.os != platform.os
        || entry.architecture != platform.architecture
        || matches!((&entry.variant, &platform.variant), (Some(a), Some(b)) if a != b);
    match differs {
        true => Err(Problem::PlatformConflict {
            config: platform.to_string(),
            index: entry.to_string(),
        }),
        false => Ok(()),
    }
}
