//! What to compose: the sources and options from the command line. Composing
//! reads every source afresh, so the same plan serves the first mount and
//! every rebuild after a source changes.

use crate::error::Error;
use crate::snapshot::index::{self, Composition, IndexOptions};
use crate::source::{self, SourceSpec};

/// The index options as given (command line or configuration file),
/// before validation.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexArgs {
    /// `--tag` (default `latest`).
    #[serde(default = "default_tag")]
    pub tag: String,
    /// `--ref`.
    #[serde(default, rename = "ref")]
    pub ref_name: Option<String>,
    /// `--annotation KEY=VALUE`.
    #[serde(default)]
    pub annotations: Vec<String>,
    /// `--platform`.
    #[serde(default)]
    pub platforms: Vec<String>,
    /// `--platform-tags`.
    #[serde(default)]
    pub platform_tags: bool,
}

fn default_tag() -> String {
    "latest".into()
}

impl Default for IndexArgs {
    /// As with no option given: tag `latest`, nothing else.
    fn default() -> Self {
        IndexArgs {
            tag: default_tag(),
            ref_name: None,
            annotations: Vec::new(),
            platforms: Vec::new(),
            platform_tags: false,
        }
    }
}

/// Validated sources and options.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The sources, in command-line order.
    pub specs: Vec<SourceSpec>,
    /// Which `index.json` entry to take from a source that names none
    /// (`oci:PATH:REF` names one).
    pub ref_name: Option<String>,
    /// Tag and annotations of the generated documents.
    pub opts: IndexOptions,
    /// `--platform`: only these platforms are composed (all when empty).
    pub platforms: Vec<crate::oci::platform::Platform>,
}

impl Plan {
    /// Validates sources (every form a SOURCE argument takes) and options
    /// into a plan.
    pub fn from_args(sources: &[String], args: &IndexArgs) -> Result<Plan, Error> {
        let tag = crate::oci::tag::Tag::parse(&args.tag).map_err(|why| Error::Argument {
            what: "tag",
            value: args.tag.clone(),
            why: why.to_string(),
        })?;
        let annotations = args
            .annotations
            .iter()
            .map(|a| index::parse_annotation(a))
            .collect::<Result<_, _>>()?;
        let specs = sources
            .iter()
            .map(|s| SourceSpec::parse(s))
            .collect::<Result<_, _>>()?;
        let platforms = args
            .platforms
            .iter()
            .map(|p| {
                crate::oci::platform::Platform::parse(p)
                    .map(|n| n.platform)
                    .map_err(|why| Error::Argument {
                        what: "--platform",
                        value: p.clone(),
                        why: why.to_string(),
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Plan {
            specs,
            ref_name: args.ref_name.clone(),
            opts: IndexOptions {
                tag,
                annotations,
                platform_tags: args.platform_tags,
            },
            platforms,
        })
    }

    /// Reads every source and composes the image.
    pub fn compose(&self) -> Result<Composition, Error> {
        let contributions = self
            .specs
            .iter()
            .map(|spec| {
                let want_ref = spec.ref_name.as_deref().or(self.ref_name.as_deref());
                source::read(spec, want_ref, &self.platforms)
            })
            .collect::<Result<Vec<_>, _>>()?;
        if !self.platforms.is_empty() && contributions.iter().all(|c| c.images.is_empty()) {
            let wanted: Vec<String> = self.platforms.iter().map(ToString::to_string).collect();
            return Err(Error::NoPlatformMatch(wanted.join(", ")));
        }
        index::compose(&contributions, &self.opts)
    }
}
