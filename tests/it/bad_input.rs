//! Bad input is refused before anything is mounted: exit code 2, one line
//! naming the source and the file, no panic, nothing mounted, sources untouched.

use std::fs;
use std::path::Path;

use crate::common::*;
use ocimux::oci::digest::Digest;
use ocimux::oci::document::{OCI_INDEX, OCI_MANIFEST};
use ocimux::testing::testutil::LayoutBuilder;
use serde_json::{Value, json};

fn amd64() -> Value {
    json!({"os": "linux", "architecture": "amd64"})
}

/// Writes `bytes` at the path of `descriptor`'s digest: content that does not hash to its name.
fn forge(b: &LayoutBuilder, descriptor: &Value, bytes: &[u8]) {
    fs::write(b.blob_path(descriptor), bytes).unwrap();
}

/// A manifest whose config is `config` (already written), with one layer.
fn manifest_with_config(b: &LayoutBuilder, config: Value) -> Value {
    let layer = b.blob("application/vnd.oci.image.layer.v1.tar", b"layer");
    b.json_blob(OCI_MANIFEST, &json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer]}))
}

struct Case {
    name: &'static str,
    /// Builds the sources under the directory; returns the SOURCE arguments and extra flags.
    build: fn(&Path) -> Vec<String>,
    /// Fragments the one-line error must contain (the source and file among them).
    want: &'static [&'static str],
}

/// Replaces a file with a symbolic link to `target`.
fn replace_with_symlink(path: &Path, target: &Path) {
    fs::remove_file(path).unwrap();
    std::os::unix::fs::symlink(target, path).unwrap();
}

/// An amd64 image with one given layer descriptor, listed in index.json.
fn image_with_layer(b: &LayoutBuilder, layer: Value) {
    let config = b.json_blob("application/vnd.oci.image.config.v1+json", &amd64());
    let m = b.json_blob(
        OCI_MANIFEST,
        &json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer]}),
    );
    b.index(&[(m, None)]);
}

/// A source whose image index lists `count` Windows-like platforms (os.version
/// `10.0.N` from `first` on, 16 long os.features each): about 1.4 KiB per entry.
fn many_platforms(root: &Path, first: usize, count: usize) -> String {
    let b = LayoutBuilder::new(root);
    let config = b.json_blob(
        "application/vnd.oci.image.config.v1+json",
        &json!({"os": "windows", "architecture": "amd64"}),
    );
    let layer = b.blob("application/vnd.oci.image.layer.v1.tar", b"shared");
    let features: Vec<String> = (0..16)
        .map(|i| format!("feature-{i}-{}", "x".repeat(50)))
        .collect();
    let manifests: Vec<Value> = (first..first + count)
        .map(|n| {
            let mut d = b.json_blob(
                OCI_MANIFEST,
                &json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config,
                        "layers": [layer], "annotations": {"n": n.to_string()}}),
            );
            d["platform"] = json!({"os": "windows", "architecture": "amd64",
                                   "os.version": format!("10.0.{n}"), "os.features": features});
            d
        })
        .collect();
    let list = b.json_blob(
        OCI_INDEX,
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}),
    );
    b.index(&[(list, None)]);
    root.display().to_string()
}

fn src(p: &Path, name: &str) -> String {
    p.join(name).display().to_string()
}

const CASES: &[Case] = &[
    Case {
        name: "missing path",
        build: |p| vec![src(p, "nope")],
        want: &["nope", ": .:", "does not exist"],
    },
    Case {
        name: "not a directory",
        build: |p| {
            fs::write(p.join("file"), b"x").unwrap();
            vec![src(p, "file")]
        },
        want: &[
            "file",
            "not an OCI image layout",
            "neither a directory nor a tar archive",
        ],
    },
    Case {
        name: "no oci-layout",
        build: |p| {
            fs::create_dir_all(p.join("s")).unwrap();
            vec![src(p, "s")]
        },
        want: &["/s: oci-layout:", "no oci-layout file"],
    },
    Case {
        name: "wrong layout version",
        build: |p| {
            LayoutBuilder::simple(p.join("s"), "linux", "amd64", "x")
                .write("oci-layout", br#"{"imageLayoutVersion":"2.0.0"}"#);
            vec![src(p, "s")]
        },
        want: &["/s: oci-layout:", "\"2.0.0\""],
    },
    Case {
        name: "no index.json",
        build: |p| {
            LayoutBuilder::new(p.join("s"));
            vec![src(p, "s")]
        },
        want: &["/s: index.json:", "no index.json"],
    },
    Case {
        name: "malformed index.json",
        build: |p| {
            LayoutBuilder::new(p.join("s"))
                .write("index.json", b"{\"schemaVersion\":2,\"manifests\":[");
            vec![src(p, "s")]
        },
        want: &["/s: index.json:", "malformed JSON"],
    },
    Case {
        name: "duplicate key in index.json",
        build: |p| {
            LayoutBuilder::new(p.join("s")).write(
                "index.json",
                br#"{"schemaVersion":2,"manifests":[],"manifests":[]}"#,
            );
            vec![src(p, "s")]
        },
        want: &["/s: index.json:", "duplicate field"],
    },
    Case {
        name: "oversized index.json",
        build: |p| {
            let mut big = br#"{"schemaVersion":2,"manifests":[]}"#.to_vec();
            big.resize(4 * 1024 * 1024 + 1, b' ');
            LayoutBuilder::new(p.join("s")).write("index.json", &big);
            vec![src(p, "s")]
        },
        want: &["/s: index.json:", "larger than the 4194304-byte limit"],
    },
    Case {
        name: "empty manifests",
        build: |p| {
            LayoutBuilder::new(p.join("s")).index(&[]);
            vec![src(p, "s")]
        },
        want: &["/s: index.json:", "lists no manifests"],
    },
    Case {
        name: "several entries, none latest",
        build: |p| {
            let b = LayoutBuilder::new(p.join("s"));
            let m1 = b.image(amd64(), &[b"1"]);
            let m2 = b.image(json!({"os": "linux", "architecture": "arm64"}), &[b"2"]);
            b.index(&[(m1, Some("v1")), (m2, Some("v2"))]);
            vec![src(p, "s")]
        },
        want: &["/s: index.json:", "choose one with --ref", r#""v1", "v2""#],
    },
    Case {
        name: "--ref not found",
        build: |p| {
            LayoutBuilder::simple(p.join("s"), "linux", "amd64", "x");
            vec![src(p, "s"), "--ref".into(), "v9".into()]
        },
        want: &["/s: index.json:", "no entry has ref name \"v9\"", "latest"],
    },
    Case {
        // Two manifests under one ref (one manifest under it twice is one choice).
        name: "--ref matches two entries",
        build: |p| {
            let b = LayoutBuilder::new(p.join("s"));
            let m1 = b.image(amd64(), &[b"1"]);
            let m2 = b.image(amd64(), &[b"2"]);
            b.index(&[(m1, Some("v1")), (m2, Some("v1"))]);
            vec![src(p, "s"), "--ref".into(), "v1".into()]
        },
        want: &["/s: index.json:", "2 entries have ref name \"v1\""],
    },
    Case {
        name: "path traversal digest",
        build: |p| {
            let b = LayoutBuilder::new(p.join("s"));
            b.index(&[(
                json!({"mediaType": OCI_MANIFEST, "digest": "sha256:../../etc/passwd", "size": 10}),
                None,
            )]);
            vec![src(p, "s")]
        },
        want: &[
            "/s: index.json:",
            "invalid digest \"sha256:../../etc/passwd\"",
        ],
    },
    Case {
        name: "upper-case digest",
        build: |p| {
            let b = LayoutBuilder::new(p.join("s"));
            let d = Digest::sha256_of(b"x").encoded().to_uppercase();
            b.index(&[(
                json!({"mediaType": OCI_MANIFEST, "digest": format!("sha256:{d}"), "size": 1}),
                None,
            )]);
            vec![src(p, "s")]
        },
        want: &["/s: index.json:", "not lower-case hex"],
    },
    Case {
        name: "unsupported algorithm",
        build: |p| {
            let b = LayoutBuilder::new(p.join("s"));
            b.index(&[(json!({"mediaType": OCI_MANIFEST, "digest": "md5:d41d8cd98f00b204e9800998ecf8427e", "size": 1}), None)]);
            vec![src(p, "s")]
        },
        want: &["/s: index.json:", "algorithm not supported"],
    },
    Case {
        name: "missing layer blob",
        build: |p| {
            let (b, layer) = LayoutBuilder::one_layer(p.join("s"), b"gone");
            fs::remove_file(b.blob_path(&layer)).unwrap();
            vec![src(p, "s")]
        },
        want: &["/s: blobs/sha256/", "referenced blob is missing"],
    },
    Case {
        name: "layer size differs from descriptor",
        build: |p| {
            let (b, layer) = LayoutBuilder::one_layer(p.join("s"), b"short");
            forge(&b, &layer, b"longer than it was");
            vec![src(p, "s")]
        },
        want: &[
            "/s: blobs/sha256/",
            "size 18 differs from descriptor size 5",
        ],
    },
    Case {
        name: "manifest does not hash to its digest",
        build: |p| {
            let b = LayoutBuilder::new(p.join("s"));
            let m = b.image(amd64(), &[b"1"]);
            let mut bytes = fs::read(b.blob_path(&m)).unwrap();
            bytes.extend_from_slice(b" ");
            forge(&b, &m, &bytes);
            let mut d = m.clone();
            d["size"] = json!(bytes.len());
            b.index(&[(d, None)]);
            vec![src(p, "s")]
        },
        want: &["/s: blobs/sha256/", "content hashes to sha256:"],
    },
    Case {
        name: "config does not hash to its digest",
        build: |p| {
            let b = LayoutBuilder::new(p.join("s"));
            let config = b.json_blob("application/vnd.oci.image.config.v1+json", &amd64());
            forge(&b, &config, br#"{"os":"linux","architecture":"arm64"}"#);
            let mut c = config.clone();
            c["size"] = json!(br#"{"os":"linux","architecture":"arm64"}"#.len());
            let m = manifest_with_config(&b, c);
            b.index(&[(m, None)]);
            vec![src(p, "s")]
        },
        want: &["/s: blobs/sha256/", "content hashes to sha256:"],
    },
    Case {
        name: "oversized manifest",
        build: |p| {
            let b = LayoutBuilder::new(p.join("s"));
            let mut big = br#"{"schemaVersion":2}"#.to_vec();
            big.resize(5 * 1024 * 1024, b' ');
            let m = b.blob(OCI_MANIFEST, &big);
            b.index(&[(m, None)]);
            vec![src(p, "s")]
        },
        want: &["/s: blobs/sha256/", "larger than the 4194304-byte limit"],
    },
    Case {
        name: "huge size field is not allocated",
        build: |p| {
            let b = LayoutBuilder::new(p.join("s"));
            let mut m = b.image(amd64(), &[b"1"]);
            m["size"] = json!(1u64 << 62);
            b.index(&[(m, None)]);
            vec![src(p, "s")]
        },
        want: &[
            "/s: blobs/sha256/",
            "differs from descriptor size 4611686018427387904",
        ],
    },
    Case {
        name: "config without architecture",
        build: |p| {
            let b = LayoutBuilder::new(p.join("s"));
            let m = b.image(json!({"os": "linux"}), &[b"1"]);
            b.index(&[(m, None)]);
            vec![src(p, "s")]
        },
        want: &[
            "/s: blobs/sha256/",
            "config has no architecture",
            "PLATFORM=PATH",
        ],
    },
    Case {
        name: "duplicate platforms",
        build: |p| {
            LayoutBuilder::simple(p.join("a"), "linux", "amd64", "a");
            LayoutBuilder::simple(p.join("b"), "linux", "x86_64", "b");
            vec![src(p, "a"), src(p, "b")]
        },
        want: &["/a and ", "/b both provide platform linux/amd64"],
    },
    Case {
        name: "document with both manifests and layers",
        build: |p| {
            let b = LayoutBuilder::new(p.join("s"));
            let config = b.json_blob("application/vnd.oci.image.config.v1+json", &amd64());
            let m = b.json_blob(
                OCI_MANIFEST,
                &json!({"schemaVersion": 2, "config": config, "layers": [], "manifests": []}),
            );
            b.index(&[(m, None)]);
            vec![src(p, "s")]
        },
        want: &[
            "/s: blobs/sha256/",
            "ambiguous document",
            "both manifests and layers",
        ],
    },
    Case {
        name: "mediaType disagrees with descriptor",
        build: |p| {
            let b = LayoutBuilder::new(p.join("s"));
            let config = b.json_blob("application/vnd.oci.image.config.v1+json", &amd64());
            let m = b.json_blob(OCI_MANIFEST, &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "config": config, "layers": []}));
            b.index(&[(m, None)]);
            vec![src(p, "s")]
        },
        want: &["/s: blobs/sha256/", "disagrees with its descriptor"],
    },
    Case {
        name: "index inside an index",
        build: |p| {
            let b = LayoutBuilder::new(p.join("s"));
            let inner = b.json_blob(OCI_INDEX, &json!({"schemaVersion": 2, "manifests": []}));
            let outer = b.json_blob(
                OCI_INDEX,
                &json!({"schemaVersion": 2, "manifests": [inner]}),
            );
            b.index(&[(outer, None)]);
            vec![src(p, "s")]
        },
        want: &["/s: blobs/sha256/", "image index inside an image index"],
    },
    Case {
        name: "blob is a directory",
        build: |p| {
            let (b, layer) = LayoutBuilder::one_layer(p.join("s"), b"dir");
            fs::remove_file(b.blob_path(&layer)).unwrap();
            fs::create_dir(b.blob_path(&layer)).unwrap();
            vec![src(p, "s")]
        },
        want: &["/s: blobs/sha256/", "not a regular file"],
    },
    Case {
        name: "unsupported media type in index.json",
        build: |p| {
            let b = LayoutBuilder::new(p.join("s"));
            let d = b.blob("application/vnd.oci.image.layer.v1.tar", b"x");
            b.index(&[(d, None)]);
            vec![src(p, "s")]
        },
        want: &["/s: index.json:", "unsupported media type"],
    },
    // Issue 8: nothing outside a source is served, nothing blocks, nothing
    // unchecked reaches the index or the terminal.
    Case {
        name: "layer symlinked to /etc/shadow",
        build: |p| {
            let shadow = fs::read("/etc/shadow").unwrap();
            let b = LayoutBuilder::new(p.join("s"));
            let layer = b.blob("application/vnd.oci.image.layer.v1.tar", &shadow);
            replace_with_symlink(&b.blob_path(&layer), Path::new("/etc/shadow"));
            image_with_layer(&b, layer);
            vec![src(p, "s")]
        },
        want: &[
            "/s: blobs/sha256/",
            "a symbolic link leads outside the source",
        ],
    },
    Case {
        name: "config symlinked out of the layout",
        build: |p| {
            let b = LayoutBuilder::new(p.join("s"));
            let config = b.json_blob("application/vnd.oci.image.config.v1+json", &amd64());
            let outside = p.join("config.json");
            fs::rename(b.blob_path(&config), &outside).unwrap();
            std::os::unix::fs::symlink("../../../config.json", b.blob_path(&config)).unwrap();
            let m = manifest_with_config(&b, config);
            b.index(&[(m, None)]);
            vec![src(p, "s")]
        },
        want: &["/s: blobs/sha256/", "outside the source"],
    },
    Case {
        name: "layer symlinked to a device",
        build: |p| {
            let b = LayoutBuilder::new(p.join("s"));
            let layer = b.blob("application/vnd.oci.image.layer.v1.tar", b"");
            replace_with_symlink(&b.blob_path(&layer), Path::new("/dev/zero"));
            image_with_layer(&b, layer);
            vec![src(p, "s")]
        },
        want: &["/s: blobs/sha256/", "outside the source"],
    },
    Case {
        name: "layer is a device node",
        build: |p| {
            let b = LayoutBuilder::new(p.join("s"));
            let layer = b.blob("application/vnd.oci.image.layer.v1.tar", b"");
            let path = b.blob_path(&layer);
            fs::remove_file(&path).unwrap();
            let dev = nix::sys::stat::makedev(1, 5); // /dev/zero's numbers
            nix::sys::stat::mknod(
                &path,
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::from_bits_truncate(0o644),
                dev,
            )
            .unwrap();
            image_with_layer(&b, layer);
            vec![src(p, "s")]
        },
        want: &[
            "/s: blobs/sha256/",
            "is a character device, not a regular file",
        ],
    },
    Case {
        name: "layer is a FIFO",
        build: |p| {
            let b = LayoutBuilder::new(p.join("s"));
            let layer = b.blob("application/vnd.oci.image.layer.v1.tar", b"");
            let path = b.blob_path(&layer);
            fs::remove_file(&path).unwrap();
            nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
            image_with_layer(&b, layer);
            vec![src(p, "s")]
        },
        want: &["/s: blobs/sha256/", "is a FIFO, not a regular file"],
    },
    Case {
        name: "index.json is a FIFO",
        build: |p| {
            let b = LayoutBuilder::simple(p.join("s"), "linux", "amd64", "x");
            fs::remove_file(b.root.join("index.json")).unwrap();
            nix::unistd::mkfifo(
                &b.root.join("index.json"),
                nix::sys::stat::Mode::from_bits_truncate(0o644),
            )
            .unwrap();
            vec![src(p, "s")]
        },
        want: &["/s: index.json:", "is a FIFO"],
    },
    Case {
        name: "source is a FIFO",
        build: |p| {
            nix::unistd::mkfifo(
                &p.join("fifo"),
                nix::sys::stat::Mode::from_bits_truncate(0o644),
            )
            .unwrap();
            vec![src(p, "fifo")]
        },
        want: &["/fifo: .:", "is a FIFO, not a regular file"],
    },
    Case {
        name: "os.version with an escape sequence",
        build: |p| {
            let b = LayoutBuilder::new(p.join("s"));
            let m = b.image(
                json!({"os": "windows", "architecture": "amd64", "os.version": "10.0\u{1b}[2J\u{1b}]0;pwned\u{7}"}),
                &[b"l"],
            );
            b.index(&[(m, None)]);
            vec![src(p, "s")]
        },
        want: &["/s: blobs/sha256/", "os.version \"10.0\\u{1b}[2J"],
    },
    Case {
        name: "os.features too long",
        build: |p| {
            let b = LayoutBuilder::new(p.join("s"));
            let m = b.image(
                json!({"os": "windows", "architecture": "amd64", "os.features": ["f".repeat(100_000)]}),
                &[b"l"],
            );
            b.index(&[(m, None)]);
            vec![src(p, "s")]
        },
        want: &["/s: blobs/sha256/", "os.features entry"],
    },
    Case {
        name: "ref names with escape sequences",
        build: |p| {
            let b = LayoutBuilder::new(p.join("s"));
            let m1 = b.image(amd64(), &[b"a"]);
            let m2 = b.image(amd64(), &[b"b"]);
            b.index(&[(m1, Some("\u{1b}[31mred")), (m2, Some("v2"))]);
            vec![src(p, "s")]
        },
        want: &["/s: index.json:", r#""\u{1b}[31mred", "v2""#],
    },
    Case {
        name: "generated index over 4 MiB",
        build: |p| {
            (0..3)
                .map(|i| many_platforms(&p.join(format!("s{i}")), i * 1200, 1200))
                .collect()
        },
        want: &[
            "generated image index would be",
            "3600 manifests",
            "4194304-byte limit",
            "/s0, ",
            "/s2",
        ],
    },
    Case {
        name: "annotation with a control character",
        build: |p| {
            LayoutBuilder::simple(p.join("s"), "linux", "amd64", "x");
            vec![src(p, "s"), "--annotation".into(), "k=a\u{1b}b".into()]
        },
        want: &["invalid annotation", "without control characters"],
    },
    Case {
        name: "bad annotation",
        build: |p| {
            LayoutBuilder::simple(p.join("s"), "linux", "amd64", "x");
            vec![src(p, "s"), "--annotation".into(), "novalue".into()]
        },
        want: &["invalid annotation \"novalue\""],
    },
];

#[test]
fn bad_input_is_refused_by_name_with_exit_code_2() {
    for case in CASES {
        let tmp = tempfile::tempdir().unwrap();
        let mnt = tmp.path().join("mnt");
        fs::create_dir(&mnt).unwrap();
        let args = (case.build)(tmp.path());
        let before = tree_state(tmp.path());
        for cmd in ["mount", "inspect"] {
            let mut argv: Vec<String> = vec![cmd.into()];
            if cmd == "mount" {
                argv.push(mnt.display().to_string());
            }
            argv.extend(args.iter().cloned());
            // Bounded: a refusal that blocks (on a FIFO, say) shows as exit 124.
            let started = std::time::Instant::now();
            let out = std::process::Command::new("timeout")
                .arg("20")
                .arg(bin())
                .args(&argv)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{}: {cmd}: {stderr}", case.name);
            assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "{}: {cmd} took {:?}",
                case.name,
                started.elapsed()
            );
            assert!(
                !stderr.chars().any(|c| c.is_control() && c != '\n'),
                "{}: {cmd}: control characters reach the terminal: {stderr:?}",
                case.name
            );
            let errors: Vec<&str> = stderr
                .lines()
                .filter(|l| !l.starts_with("ocimux: warn: "))
                .collect();
            assert_eq!(
                errors.len(),
                1,
                "{}: one error line expected:\n{stderr}",
                case.name
            );
            for frag in case.want {
                assert!(
                    stderr.contains(frag),
                    "{}: {cmd}: missing {frag:?} in: {stderr}",
                    case.name
                );
            }
            assert!(!stderr.contains("panicked"), "{}: {stderr}", case.name);
        }
        assert!(!is_mounted(&mnt), "{}: left mounted", case.name);
        assert_eq!(fs::read_dir(&mnt).unwrap().count(), 0, "{}", case.name);
        assert_eq!(
            before,
            tree_state(tmp.path()),
            "{}: a source changed",
            case.name
        );
    }
}

#[test]
fn mountpoint_must_be_an_empty_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let s = LayoutBuilder::simple(tmp.path().join("s"), "linux", "amd64", "x");
    let s = s.root.display().to_string();
    fs::write(tmp.path().join("file"), b"x").unwrap();
    let full = tmp.path().join("full");
    fs::create_dir(&full).unwrap();
    fs::write(full.join("keep"), b"x").unwrap();
    for (mnt, frag) in [
        ("full", "not empty"),
        ("file", "not a directory"),
        ("absent", "No such file"),
    ] {
        let mnt = tmp.path().join(mnt);
        let out = ocimux(&["mount", mnt.to_str().unwrap(), &s]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{stderr}");
        assert!(
            stderr.contains(frag) && stderr.contains(mnt.to_str().unwrap()),
            "{stderr}"
        );
        assert!(!is_mounted(&mnt));
    }
    assert!(full.join("keep").exists());
}

#[test]
fn bad_mount_options_are_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let s = LayoutBuilder::simple(tmp.path().join("s"), "linux", "amd64", "x");
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let unwritable = tmp.path().join("no-such-dir/log");
    let cases: &[&[&str]] = &[
        &["-o", "rw"],
        &["-o", "bogus"],
        &["-o", "auto_unmount"],
        // Issue 9, case 5 and 10: bounds and refused values.
        &["--threads", "100000"],
        &["--threads", "0"],
        &["--readahead-kb", "4294967295"],
        &["--readahead-kb", "65537"],
        &["--tag", "../../etc"],
        &["--tag", "a//b"],
        &["--tag", "$(id)"],
        &["--log-file", unwritable.to_str().unwrap()],
    ];
    for extra in cases {
        let mut args = vec!["mount", mnt.to_str().unwrap(), s.root.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = ocimux(&args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{extra:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!is_mounted(&mnt), "{extra:?}");
    }
}

#[test]
fn yocto_names_are_normalised_with_warnings() {
    let tmp = tempfile::tempdir().unwrap();
    let a = LayoutBuilder::simple(tmp.path().join("a"), "linux", "aarch64", "a");
    let b = LayoutBuilder::simple(tmp.path().join("b"), "linux", "arm", "b");
    let out = ocimux(&[
        "inspect",
        a.root.to_str().unwrap(),
        b.root.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("architecture \"aarch64\" normalised to \"arm64\""),
        "{stderr}"
    );
    assert!(stderr.contains("give it as linux/arm/v7=PATH"), "{stderr}");
    assert!(
        stdout.contains("linux/arm64 ") && stdout.contains("linux/arm "),
        "{stdout}"
    );
    // -q silences warnings.
    let out = ocimux(&["inspect", "-q", a.root.to_str().unwrap()]);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Replays every fuzz corpus input (fuzz/corpus/TARGET/*, kept in the repo)
/// through the same entry points the fuzz targets use: a crash found by
/// `cargo fuzz` stays fixed. Counts what it replayed, so an empty corpus fails.
#[test]
fn fuzz_corpora_replay_without_panics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for (target, run) in ocimux::testing::fuzzing::TARGETS {
        let dir = root.join(target);
        let mut inputs: Vec<_> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        inputs.sort();
        assert!(
            inputs.len() >= 5,
            "{target}: only {} corpus inputs",
            inputs.len()
        );
        for input in inputs {
            run(&fs::read(&input).unwrap());
        }
    }
}
