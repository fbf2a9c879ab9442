//! What a name in a Yocto deploy directory is, as meta-virtualization's
//! `image-oci-umoci.inc` writes them for image `IMAGE` on machine `MACHINE`
//! (see README's Yocto mode):
//!
//! - `IMAGE-MACHINE-DATETIME.rootfs-oci` (the layout), `….rootfs-oci.tar`
//!   (its files, members `./…`) and `….rootfs-oci-dir.tar` (the layout under
//!   its own top directory): one dated build each;
//! - `IMAGE-TAG-oci`, `…-oci.tar`, `…-oci-dir.tar`: links to the newest build
//!   (`TAG` is `OCI_IMAGE_TAG`, `latest` by default); `IMAGE-MACHINE-latest-oci`
//!   and `IMAGE-oci`, which `oci-multiarch.bbclass` also looks for;
//! - `PN-multiarch-oci`: the class's own merged copy, not a machine's image.
//!
//! Pure: the caller says whether a name is a link and where it points.

/// How an output holds its layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Form {
    /// A layout directory (`…-oci`).
    Dir,
    /// A tar of the layout's files (`…-oci.tar`).
    Tar,
    /// A tar of the layout under one top directory (`…-oci-dir.tar`).
    DirTar,
}

/// Which build an output is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Build {
    /// One dated build (`DATETIME`, 14 digits).
    Dated(String),
    /// A link that names the builds of a tag (`OCI_IMAGE_TAG`).
    Tagged(String),
    /// An undated name (`IMAGE-oci`): a build of unknown date.
    Undated,
}

/// One output of an image in a machine's deploy directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// The image (`IMAGE_BASENAME`).
    pub image: String,
    /// Which build.
    pub build: Build,
    /// How it holds its layout.
    pub form: Form,
}

/// What a deploy name is not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotOutput {
    /// Not an OCI output at all (kernels, rootfs tars, test data …).
    Other,
    /// `oci-multiarch.bbclass`'s merged copy of several machines' images.
    Multiarch,
}

/// Length of Yocto's `DATETIME` (`%Y%m%d%H%M%S`); shorter all-digit
/// versions down to a date (`%Y%m%d`) are taken too, and order the same way.
const DATETIME_LEN: usize = 14;
/// See [`DATETIME_LEN`].
const DATE_LEN: usize = 8;

/// Whether `s` is a build's date and time (or date).
fn is_stamp(s: &str) -> bool {
    (DATE_LEN..=DATETIME_LEN).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

/// Splits the form suffix off a name: (stem, form).
fn split_form(name: &str) -> Option<(&str, Form)> {
    if let Some(s) = name.strip_suffix("-oci-dir.tar") {
        Some((s, Form::DirTar))
    } else if let Some(s) = name.strip_suffix("-oci.tar") {
        Some((s, Form::Tar))
    } else {
        name.strip_suffix("-oci").map(|s| (s, Form::Dir))
    }
}

/// `IMAGE-MACHINE-DATETIME[.rootfs]` → (IMAGE, DATETIME).
fn dated<'a>(stem: &'a str, machine: &str) -> Option<(&'a str, &'a str)> {
    let stem = stem.strip_suffix(".rootfs").unwrap_or(stem);
    let (rest, stamp) = stem.rsplit_once('-')?;
    let image = rest.strip_suffix(machine)?.strip_suffix('-')?;
    (is_stamp(stamp) && !image.is_empty()).then_some((image, stamp))
}

/// Whether a stem ends in `-DATETIME[.rootfs]`, whatever the machine.
fn looks_dated(stem: &str) -> bool {
    let stem = stem.strip_suffix(".rootfs").unwrap_or(stem);
    stem.rsplit_once('-').is_some_and(|(_, s)| is_stamp(s))
}

/// What `name`, an entry of machine `machine`'s deploy directory, is.
/// `target`: where it points, when it is a symbolic link (its last
/// component is what tells a tag link's image from its tag).
pub fn classify(name: &str, machine: &str, target: Option<&str>) -> Result<Output, NotOutput> {
    let (stem, form) = split_form(name).ok_or(NotOutput::Other)?;
    if stem.ends_with("-multiarch") {
        return Err(NotOutput::Multiarch);
    }
    if let Some((image, stamp)) = dated(stem, machine) {
        let build = Build::Dated(stamp.to_owned());
        return Ok(Output {
            image: image.to_owned(),
            build,
            form,
        });
    }
    if looks_dated(stem) {
        // Dated, but not for this machine (copied from another directory).
        return Err(NotOutput::Other);
    }
    // A link to a dated build of image I is named I-TAG (or I-MACHINE-TAG).
    let linked = target
        .and_then(|t| t.rsplit('/').next())
        .and_then(|t| split_form(t))
        .and_then(|(t, _)| dated(t, machine))
        .and_then(|(image, _)| {
            let tag = stem.strip_prefix(image)?.strip_prefix('-')?;
            let tag = tag
                .strip_prefix(machine)
                .and_then(|t| t.strip_prefix('-'))
                .unwrap_or(tag);
            Some((image, tag))
        });
    let (image, build) = match linked {
        Some((image, tag)) => (image, Build::Tagged(tag.to_owned())),
        // oci-multiarch.bbclass's names: IMAGE[-MACHINE]-latest-oci, IMAGE-oci.
        None => match stem.strip_suffix("-latest") {
            Some(image) => (image, Build::Tagged("latest".into())),
            // IMAGE-MACHINE-VERSION.rootfs with a VERSION of its own.
            None => match stem.strip_suffix(".rootfs") {
                Some(named) => match named.split_once(&format!("-{machine}-")) {
                    Some((image, _)) => (image, Build::Undated),
                    None => (named, Build::Undated),
                },
                None => (stem, Build::Undated),
            },
        },
    };
    let image = image
        .strip_suffix(machine)
        .and_then(|i| i.strip_suffix('-'))
        .unwrap_or(image);
    if image.is_empty() || matches!(&build, Build::Tagged(t) if t.is_empty()) {
        return Err(NotOutput::Other);
    }
    Ok(Output {
        image: image.to_owned(),
        build,
        form,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deploy_names() {
        let m = "qemux86-64";
        let d = |s: &str| Build::Dated(s.into());
        let t = |s: &str| Build::Tagged(s.into());
        let dated = "app-container-qemux86-64-20261205120000.rootfs-oci";
        // name, link target, Ok((image, build, form)) or Err
        let cases: Vec<(&str, Option<&str>, Result<(&str, Build, Form), NotOutput>)> = vec![
            (
                dated,
                None,
                Ok(("app-container", d("20261205120000"), Form::Dir)),
            ),
            (
                "app-container-qemux86-64-20261205120000.rootfs-oci.tar",
                None,
                Ok(("app-container", d("20261205120000"), Form::Tar)),
            ),
            (
                "app-container-qemux86-64-20261205120000.rootfs-oci-dir.tar",
                None,
                Ok(("app-container", d("20261205120000"), Form::DirTar)),
            ),
            // Without the .rootfs suffix (IMAGE_NAME_SUFFIX emptied).
            (
                "app-qemux86-64-20261205120000-oci",
                None,
                Ok(("app", d("20261205120000"), Form::Dir)),
            ),
            // The tag links, told apart from the image by their target.
            (
                "app-container-latest-oci",
                Some(dated),
                Ok(("app-container", t("latest"), Form::Dir)),
            ),
            (
                "app-container-latest-oci.tar",
                Some("app-container-qemux86-64-20261205120000.rootfs-oci.tar"),
                Ok(("app-container", t("latest"), Form::Tar)),
            ),
            (
                "app-container-latest-oci-dir.tar",
                Some("./app-container-qemux86-64-20261205120000.rootfs-oci-dir.tar"),
                Ok(("app-container", t("latest"), Form::DirTar)),
            ),
            // OCI_IMAGE_TAG = "v1.2_rc" (a ':' made '_'): only the target tells.
            (
                "app-container-v1.2_rc-oci",
                Some(dated),
                Ok(("app-container", t("v1.2_rc"), Form::Dir)),
            ),
            // oci-multiarch.bbclass's other names.
            (
                "app-container-qemux86-64-latest-oci",
                None,
                Ok(("app-container", t("latest"), Form::Dir)),
            ),
            (
                "app-container-latest-oci",
                None,
                Ok(("app-container", t("latest"), Form::Dir)),
            ),
            (
                "app-container-oci",
                None,
                Ok(("app-container", Build::Undated, Form::Dir)),
            ),
            // A date alone; a version of another shape (IMAGE_VERSION_SUFFIX).
            (
                "app-qemux86-64-20261129.rootfs-oci",
                None,
                Ok(("app", d("20261129"), Form::Dir)),
            ),
            (
                "app-qemux86-64-v1.2.rootfs-oci",
                None,
                Ok(("app", Build::Undated, Form::Dir)),
            ),
            (
                "app-qemux86-64-1234567.rootfs-oci",
                None,
                Ok(("app", Build::Undated, Form::Dir)),
            ),
            // A link elsewhere: read by its own name.
            (
                "app-container-latest-oci",
                Some("/srv/other"),
                Ok(("app-container", t("latest"), Form::Dir)),
            ),
            // Another machine's stamp is not this machine's build.
            (
                "app-qemuarm-20261205120000.rootfs-oci",
                None,
                Err(NotOutput::Other),
            ),
            (
                "app-container-multiarch-oci",
                None,
                Err(NotOutput::Multiarch),
            ),
            (
                "app-container-multiarch-oci.tar",
                None,
                Err(NotOutput::Multiarch),
            ),
            (
                "app-container-qemux86-64.rootfs.tar.bz2",
                None,
                Err(NotOutput::Other),
            ),
            (
                "app-container-qemux86-64.testdata.json",
                None,
                Err(NotOutput::Other),
            ),
            ("-latest-oci", None, Err(NotOutput::Other)),
            ("-oci", None, Err(NotOutput::Other)),
            ("bzImage", None, Err(NotOutput::Other)),
        ];
        for (name, target, want) in cases {
            let got = classify(name, m, target);
            let want = want.map(|(image, build, form)| Output {
                image: image.into(),
                build,
                form,
            });
            assert_eq!(got, want, "{name} -> {target:?}");
        }
    }
}
