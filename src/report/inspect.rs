//! `ocimux inspect`: what a mount of the sources would serve, as a table for
//! people or as JSON for scripts (every file of the virtual layout with its
//! source, file, size and media type); and the progress bar of the commands
//! that read every blob.

use std::io::{self, Write};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::error::printable;
use crate::oci::document::OCI_INDEX;
use crate::snapshot::index::{Composition, Row};
use crate::snapshot::layout::OCI_LAYOUT;

/// One file of the virtual layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileEntry {
    /// Its path in the layout (`blobs/sha256/<hex>`, `index.json` …).
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// The media type of the descriptor that names it (`null` for
    /// `oci-layout` and `index.json`).
    #[serde(rename = "mediaType")]
    pub media_type: Option<String>,
    /// The source it is served from, as given; `null` for generated files.
    pub source: Option<String>,
    /// Where its bytes are (a file, or an archive and an offset); `null`
    /// for generated files.
    pub file: Option<String>,
    /// A platform manifest's platform (`null`, left out, for other files).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// A platform manifest's image size: itself, its config and its layers
    /// (left out for other files).
    #[serde(rename = "imageSize", skip_serializing_if = "Option::is_none")]
    pub image_size: Option<u64>,
}

/// Every file of the layout a mount of `comp` serves, generated ones first.
pub fn files(comp: &Composition) -> Vec<FileEntry> {
    let generated = |path: String, size: usize, media_type: Option<&str>| FileEntry {
        path,
        size: size as u64,
        media_type: media_type.map(str::to_owned),
        source: None,
        file: None,
        platform: None,
        image_size: None,
    };
    let mut out = vec![
        generated("oci-layout".into(), OCI_LAYOUT.len(), None),
        generated("index.json".into(), comp.index_json.len(), None),
        generated(
            comp.index_digest.blob_path(),
            comp.index.len(),
            Some(OCI_INDEX),
        ),
    ];
    let images: std::collections::HashMap<_, _> = comp
        .rows
        .iter()
        .map(|r| (&r.image.digest, &r.image))
        .collect();
    out.extend(comp.blobs.iter().map(|b| {
        let image = images.get(&b.digest);
        FileEntry {
            path: b.digest.blob_path(),
            size: b.size,
            media_type: Some(b.media_type.to_string()),
            source: Some(b.source.to_string()),
            file: Some(b.describe()),
            platform: image.map(|i| i.platform.to_string()),
            image_size: image.map(|i| i.image_size),
        }
    }));
    out
}

pub use crate::human::bytes as human;

/// How long work shows its progress on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// A bar (stderr is a terminal).
    Bar,
    /// A line at most every [`LINE_EVERY`] (stderr is a file or a pipe:
    /// a CI log).
    Lines,
    /// Nothing (`-q`).
    Quiet,
}

/// How often [`Progress::Lines`] prints.
pub const LINE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

impl Progress {
    /// What suits stderr, unless `quiet`.
    pub fn for_stderr(quiet: bool) -> Progress {
        use std::io::IsTerminal;
        match (quiet, io::stderr().is_terminal()) {
            (true, _) => Progress::Quiet,
            (false, true) => Progress::Bar,
            (false, false) => Progress::Lines,
        }
    }
}

/// Progress over every blob's bytes of `comp`, labelled `what`, on stderr,
/// as `show` says. The lines come from a thread that ends once the bar is
/// finished.
pub(crate) fn progress_bar(show: Progress, comp: &Composition, what: &'static str) -> ProgressBar {
    let total: u64 = comp.blobs.iter().map(|b| b.size).sum();
    match show {
        Progress::Bar => {}
        Progress::Quiet => return ProgressBar::hidden(),
        Progress::Lines => {
            let bar = ProgressBar::hidden();
            bar.set_length(total);
            let watched = bar.clone();
            let lines = std::thread::Builder::new()
                .name("progress".into())
                .spawn(move || print_lines(&watched, what));
            if let Err(e) = lines {
                log::debug!("progress lines: {e}");
            }
            return bar;
        }
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what);
    bar
}

/// Prints `bar`'s position on stderr every [`LINE_EVERY`] until it is
/// finished: `export: 1.5 GiB of 4.0 GiB (37%)`.
fn print_lines(bar: &ProgressBar, what: &str) {
    let step = std::time::Duration::from_millis(100);
    let mut since = std::time::Instant::now();
    while !bar.is_finished() {
        std::thread::sleep(step);
        if since.elapsed() < LINE_EVERY || bar.is_finished() {
            continue;
        }
        since = std::time::Instant::now();
        let (at, total) = (bar.position(), bar.length().unwrap_or(0).max(1));
        eprintln!(
            "ocimux: {what}: {} of {} ({}%)",
            human(at),
            human(total),
            at.saturating_mul(100) / total
        );
    }
}

/// The table `ocimux inspect` prints: one row per platform manifest with
/// its image's size (manifest, config, layers), then what the layout holds.
pub fn table(out: &mut impl Write, comp: &Composition) -> io::Result<()> {
    writeln!(
        out,
        "{:<16} {:<71} {:>8} {:>10}  SOURCE",
        "PLATFORM", "MANIFEST DIGEST", "SIZE", "HUMAN"
    )?;
    for Row { source, image } in &comp.rows {
        writeln!(
            out,
            "{:<16} {:<71} {:>8} {:>10}  {}",
            printable(&image.platform.to_string()),
            image.digest.to_string(),
            image.image_size,
            human(image.image_size),
            printable(source)
        )?;
    }
    let bytes: u64 = comp.blobs.iter().map(|b| b.size).sum();
    writeln!(
        out,
        "index {} ({} bytes); {} blobs, {bytes} bytes ({}) served from sources",
        comp.index_digest,
        comp.index.len(),
        comp.blobs.len(),
        human(bytes)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::testutil::{blob, composed, contribution, image};

    #[test]
    fn every_file_once_with_its_source() {
        let mut c = contribution("src", vec![image("linux/amd64", "manifest")]);
        c.blobs.push(std::sync::Arc::new(blob("layer")));
        let comp = composed(&[c]);
        let files = files(&comp);
        assert_eq!(files.len(), 3 + comp.blobs.len());
        let paths: std::collections::BTreeSet<&str> =
            files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths.len(), files.len(), "each path once");
        let layer = files
            .iter()
            .find(|f| {
                f.path
                    .ends_with(crate::oci::digest::Digest::sha256_of(b"layer").encoded())
            })
            .unwrap();
        assert_eq!(layer.source.as_deref(), Some("src"));
        let want = format!(
            "/{}",
            crate::oci::digest::Digest::sha256_of(b"layer").blob_path()
        );
        assert_eq!(layer.file.as_deref(), Some(want.as_str()));
        let json = serde_json::to_value(&files).unwrap();
        assert_eq!(json[1]["path"], "index.json");
        assert_eq!(json[2]["mediaType"], OCI_INDEX);
        assert!(json[2].get("platform").is_none(), "only manifests have one");
        let manifest = json
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["platform"] == "linux/amd64")
            .expect("the manifest's row names its platform");
        assert_eq!(manifest["imageSize"], 1000 + "manifest".len() as u64);
        let mut out = Vec::new();
        table(&mut out, &comp).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("linux/amd64") && text.contains(" 1008 "),
            "{text}"
        );
    }
}
