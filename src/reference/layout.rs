//! [`Layout`] against a map from name to size: lookups, readdir from every
//! offset, unique and stable inode numbers, sizes and totals.

use super::*;

/// The reference: every file by directory and name, with its size.
fn expected_files(comp: &Composition) -> BTreeMap<(u64, String), u64> {
    let mut files = BTreeMap::new();
    files.insert((ino::ROOT, "oci-layout".into()), OCI_LAYOUT.len() as u64);
    files.insert(
        (ino::ROOT, "index.json".into()),
        comp.index_json.len() as u64,
    );
    let dir = |d: &Digest| ino::dir_of(d.algorithm());
    for b in &comp.blobs {
        files.insert((dir(&b.digest), b.digest.encoded().into()), b.size);
    }
    let index = &comp.index_digest;
    files.insert(
        (dir(index), index.encoded().into()),
        comp.index.len() as u64,
    );
    files
}

/// `.`, `..` and the sorted children of `dir`, as the reference lists them.
fn expected_listing(
    files: &BTreeMap<(u64, String), u64>,
    dir: u64,
    subdirs: &[&str],
) -> Vec<String> {
    let mut names: Vec<String> = files
        .keys()
        .filter(|(d, _)| *d == dir)
        .map(|(_, n)| n.clone())
        .chain(subdirs.iter().map(|s| s.to_string()))
        .collect();
    names.sort();
    [".".to_owned(), "..".to_owned()]
        .into_iter()
        .chain(names)
        .collect()
}

fn check_layout(l: &Layout, comp: &Composition, inodes: &mut Inodes) -> Result<(), TestCaseError> {
    let files = expected_files(comp);
    let has512 = files.keys().any(|(d, _)| *d == ino::SHA512);
    // Every name resolves, with its size; numbers are unique and are the table's.
    let mut seen = HashMap::new();
    for ((dir, name), size) in &files {
        let a = l
            .lookup(*dir, OsStr::new(name))
            .map_err(|e| TestCaseError::fail(format!("{dir}/{name}: {e}")))?;
        prop_assert_eq!((a.kind, a.size), (Kind::File, *size), "{}/{}", dir, name);
        if let Some(other) = seen.insert(a.ino, name.clone()) {
            prop_assert!(false, "inode {} names {} and {}", a.ino, other, name);
        }
        if *dir != ino::ROOT {
            let digest = Digest::parse(&format!(
                "{}:{name}",
                if *dir == ino::SHA256 {
                    "sha256"
                } else {
                    "sha512"
                }
            ))
            .unwrap();
            prop_assert_eq!(a.ino, inodes.of(&digest));
            prop_assert!(a.ino >= ino::FIRST_BLOB);
        }
    }
    // Directories list exactly the reference, from every offset.
    let mut dirs = vec![
        (ino::ROOT, ino::ROOT, vec!["blobs"]),
        (ino::SHA256, ino::BLOBS, vec![]),
    ];
    dirs.push((
        ino::BLOBS,
        ino::ROOT,
        if has512 {
            vec!["sha256", "sha512"]
        } else {
            vec!["sha256"]
        },
    ));
    if has512 {
        dirs.push((ino::SHA512, ino::BLOBS, vec![]));
    } else {
        prop_assert!(matches!(
            l.lookup(ino::BLOBS, OsStr::new("sha512")),
            Err(FsError::NotFound)
        ));
    }
    for (dir, parent, subdirs) in dirs {
        let want = expected_listing(&files, dir, &subdirs);
        for start in 0..=want.len() {
            let got: Vec<String> = l
                .read_dir(dir, start as u64)
                .unwrap()
                .map(|e| e.name.to_owned())
                .collect();
            prop_assert_eq!(&got[..], &want[start..], "dir {} from {}", dir, start);
        }
        // One entry per call, resuming at each entry's next offset.
        let mut offset = 0;
        let mut got = Vec::new();
        while let Some(e) = l.read_dir(dir, offset).unwrap().next() {
            got.push(e.name.to_owned());
            offset = e.next_offset;
        }
        prop_assert_eq!(got, want);
        prop_assert_eq!(l.lookup(dir, OsStr::new("..")).unwrap().ino, parent);
    }
    // Names that are not there are not found.
    let absent = Digest::sha256_of(b"absent");
    prop_assert!(matches!(
        l.lookup(ino::SHA256, OsStr::new(absent.encoded())),
        Err(FsError::NotFound)
    ));
    prop_assert_eq!(l.file_count(), files.len());
    prop_assert_eq!(l.total_bytes(), files.values().sum::<u64>());
    Ok(())
}

proptest! {
    #![proptest_config(config(CASES_LAYOUT))]

    #[test]
    fn layout_matches_the_reference(spec in sources()) {
        let contribs = contributions(&spec);
        let comp = composed(&contribs);
        let mut inodes = Inodes::default();
        let l = Layout::new(&comp, &mut inodes);
        check_layout(&l, &comp, &mut inodes)?;
        // Rebuilt from the sources in the other order (another index, so
        // other bytes for index.json): every blob keeps its number.
        let before: HashMap<Digest, u64> =
            comp.blobs.iter().map(|b| (b.digest.clone(), inodes.of(&b.digest))).collect();
        let mut reversed = contribs.clone();
        reversed.reverse();
        let comp2 = composed(&reversed);
        let l2 = Layout::new(&comp2, &mut inodes);
        check_layout(&l2, &comp2, &mut inodes)?;
        for (digest, n) in before {
            prop_assert_eq!(inodes.of(&digest), n);
        }
    }
}
