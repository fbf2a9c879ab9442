//! What to compose: the sources and options from the command line. Composing
//! reads every source afresh, so the same plan serves the first mount and
//! every rebuild after a source changes.

use crate::error::Error;
use crate::index::{self, Composition, IndexOptions};
use crate::source::{self, SourceSpec};

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
    pub platforms: Vec<crate::platform::Platform>,
}

impl Plan {
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
