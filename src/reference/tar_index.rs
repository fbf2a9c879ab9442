//! [`tar::index`] against the `tar` crate's own reading of the archives it
//! writes.

use super::*;

/// A member for the `tar` crate to write.
#[derive(Debug, Clone)]
struct Entry {
    /// Path components.
    path: Vec<String>,
    kind: u8,
    size: usize,
}

fn entry() -> impl Strategy<Value = Entry> {
    // Components up to 60 characters, up to 4 deep: names past 100 bytes
    // need a ustar prefix, a GNU long name or a pax path.
    let component = "[a-z0-9][a-z0-9._-]{0,59}";
    (
        prop::collection::vec(component, 1..5),
        prop_oneof![6 => Just(b'0'), 1 => Just(b'5'), 1 => Just(b'2')],
        0usize..3000,
    )
        .prop_map(|(path, kind, size)| Entry { path, kind, size })
}

#[derive(Debug, Clone, Copy)]
enum Format {
    Ustar,
    Gnu,
    Pax,
}

fn write_archive(entries: &[Entry], format: Format) -> Option<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for (i, e) in entries.iter().enumerate() {
        let path = e.path.join("/");
        let mut h = match format {
            Format::Gnu => tar::Header::new_gnu(),
            Format::Ustar | Format::Pax => tar::Header::new_ustar(),
        };
        let data = vec![i as u8; if e.kind == b'0' { e.size } else { 0 }];
        h.set_entry_type(tar::EntryType::new(e.kind));
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        if matches!(format, Format::Pax) && path.len() > 100 {
            b.append_pax_extensions([("path", path.as_bytes())]).ok()?;
        }
        let result = match e.kind {
            b'2' => b.append_link(&mut h, &path, "target"),
            _ => b.append_data(&mut h, &path, &data[..]),
        };
        // ustar cannot hold some long names: the crate refuses, so do we.
        result.ok()?;
    }
    b.into_inner().ok()
}

proptest! {
    #![proptest_config(config(CASES_TAR))]

    #[test]
    fn tar_index_agrees_with_the_tar_crate(
        entries in prop::collection::vec(entry(), 1..12),
        format in prop_oneof![Just(Format::Ustar), Just(Format::Gnu), Just(Format::Pax)],
        cut in any::<prop::sample::Index>(),
    ) {
        let Some(bytes) = write_archive(&entries, format) else {
            return Ok(()); // not expressible in this format
        };
        let write = |b: &[u8]| {
            use std::io::Write;
            let mut f = tempfile::tempfile().unwrap();
            f.write_all(b).unwrap();
            f
        };
        // The reference: the tar crate's entries, last one of a name wins.
        let mut want: HashMap<String, (u64, u64, u8)> = HashMap::new();
        let mut names = Vec::new();
        let mut archive = tar::Archive::new(&bytes[..]);
        for e in archive.entries().unwrap() {
            let e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().trim_end_matches('/').to_owned();
            let kind = e.header().entry_type().as_byte();
            let size = if kind == b'0' { e.size() } else { 0 };
            names.push(name.clone());
            want.insert(name, (e.raw_file_position(), size, kind));
        }
        let unique: BTreeSet<&String> = names.iter().collect();
        let got = crate::files::tar::index(&write(&bytes));
        if unique.len() < names.len() {
            prop_assert!(matches!(got, Err(crate::files::tar::TarError::Duplicate(_))), "{:?}", got);
        } else {
            let got = got.map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(got.members.len(), want.len());
            for (name, (offset, size, kind)) in &want {
                let m = got.members.get(name)
                    .ok_or_else(|| TestCaseError::fail(format!("{name} missing")))?;
                let kind = match kind {
                    b'5' => crate::files::tar::MemberKind::Dir,
                    b'2' => crate::files::tar::MemberKind::Link,
                    _ => crate::files::tar::MemberKind::File,
                };
                prop_assert_eq!((m.offset, m.size, m.kind), (*offset, *size, kind), "{}", name);
            }
        }
        // Any truncation is refused, never half-indexed.
        let short = cut.index(bytes.len());
        prop_assert!(crate::files::tar::index(&write(&bytes[..short])).is_err(), "cut at {}", short);
    }
}
