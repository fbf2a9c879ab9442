//! The FUSE adapter: translates kernel requests into questions to the
//! snapshots ([`Generations`]) and their answers into replies. No OCI logic
//! lives here.
//!
//! Each handler is one `match` on the model's result; a failure is logged once,
//! here, with the operation, the inode and the errno.
//!
//! Read paths for source blobs: passthrough (Linux ≥ 6.9 offers
//! `FUSE_PASSTHROUGH`): `open` registers the source file with the kernel,
//! which then serves read, splice and mmap itself; else daemon reads. The
//! first failed registration switches passthrough off for good (logged once).
//! What open files hold, and the checks that keep a name from serving bytes
//! that are not its own, are in `crate::mount::handles`.
//!
//! Caching: blobs are content-addressed, so their entries, attributes and
//! pages are cached long; when a swap changes what a blob's bytes come from,
//! the watcher invalidates that inode (never from a handler). What a new
//! snapshot may change (`index.json`, directories) is marked volatile by the
//! model: attributes with TTL 0, and `index.json` opened with direct I/O, so
//! the kernel never serves it stale. An open handle holds the bytes or file it
//! opened, so it reads the same content whatever is swapped meanwhile.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, BackingId, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenAccMode, OpenFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow,
};

use crate::blob::hashpool::HashPool;
use crate::blob::verify::Verifier;
use crate::blob::{FileRange, Opened, Proof};
use crate::error::printable;
use crate::mount::handles::{Handle, Handles, ReadFrom, Stats};
use crate::snapshot::generations::Generations;
use crate::snapshot::layout::{Attr, Content, FsError, Kind, slice_at};
use crate::source::{Blob, Origin};

/// How long the kernel may cache entries and attributes that never change.
const TTL: Duration = Duration::from_secs(3600);

fn ttl(a: &Attr) -> Duration {
    if a.volatile { Duration::ZERO } else { TTL }
}

/// Logs a failed operation once, with its inode and errno (routine answers,
/// such as lookups of absent names, at debug level).
fn failed(op: &str, ino: u64, e: &FsError) -> Errno {
    let code = e.errno();
    if e.is_routine() {
        log::debug!("{op} ino {ino:#x}: {e} (errno {code})");
    } else {
        log::warn!("{op} ino {ino:#x}: {e} (errno {code})");
    }
    Errno::from_i32(code)
}

/// How the mounted filesystem behaves.
#[derive(Debug, Clone, Copy)]
pub struct FsOptions {
    /// Files owned by this user.
    pub uid: u32,
    /// And this group.
    pub gid: u32,
    /// Try kernel passthrough for source blobs.
    pub passthrough: bool,
    /// Hash each blob version once, at its first open, before serving it.
    pub verify: bool,
}

/// The mounted filesystem.
#[derive(Debug)]
pub struct OciFs {
    snapshots: Arc<Generations>,
    handles: Arc<Handles<BackingId>>,
    opts: FsOptions,
    verifier: Arc<Verifier>,
    stats: Arc<Stats>,
    /// Where opens that must hash first are answered (see `hashpool`).
    hashing: HashPool,
    /// Told once the kernel's INIT is handled: the mount answers from then on.
    handshake: Option<std::sync::mpsc::Sender<()>>,
    /// Set once the mount has left the daemon's namespace (see `gone`).
    stopped: Arc<std::sync::atomic::AtomicBool>,
}

/// A stopping mount, seen from outside the request threads: [`Drain::stop`]
/// refuses every new lookup and open, and [`Drain::open_files`] says how
/// many opened files are still being served.
#[derive(Debug, Clone)]
pub(crate) struct Drain {
    stopped: Arc<std::sync::atomic::AtomicBool>,
    handles: Arc<Handles<BackingId>>,
    stats: Arc<Stats>,
}

impl Drain {
    /// From now on, nothing new is looked up or opened.
    pub fn stop(&self) {
        self.stopped
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Files opened and not yet released.
    pub fn open_files(&self) -> usize {
        self.handles.open_count()
    }

    /// Bytes the daemon read for clients, opens served by passthrough, and
    /// by daemon reads.
    pub fn served(&self) -> (u64, u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let s = &self.stats;
        (
            s.read_bytes.load(Relaxed),
            s.passthrough_opens.load(Relaxed),
            s.daemon_opens.load(Relaxed),
        )
    }
}

impl OciFs {
    /// Serves the snapshots (swapped by the watcher when sources change).
    pub fn new(snapshots: Arc<Generations>, opts: FsOptions) -> Self {
        OciFs {
            snapshots,
            handles: Arc::default(),
            opts,
            verifier: Arc::default(),
            stats: Arc::default(),
            hashing: HashPool::default(),
            handshake: None,
            stopped: Arc::default(),
        }
    }

    /// The handle that stops this filesystem from outside.
    pub(crate) fn drain(&self) -> Drain {
        Drain {
            stopped: self.stopped.clone(),
            handles: self.handles.clone(),
            stats: self.stats.clone(),
        }
    }

    /// `Err(Stopped)` once the mount has been stopped.
    fn running(&self) -> Result<(), FsError> {
        match self.stopped.load(std::sync::atomic::Ordering::SeqCst) {
            true => Err(FsError::Stopped),
            false => Ok(()),
        }
    }

    /// A receiver told once the kernel's FUSE handshake (INIT) is handled:
    /// readiness from the protocol itself, not from thread names.
    pub fn handshake(&mut self) -> std::sync::mpsc::Receiver<()> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.handshake = Some(tx);
        rx
    }

    /// What an open of `ino` becomes, decided without the kernel (so it is
    /// tested without one): generated bytes get their handle now; a blob is
    /// opened, and either ready or to be hashed first.
    fn opening(&self, ino: u64, read_only: bool) -> Result<Opening, FsError> {
        if !read_only {
            return Err(FsError::ReadOnly);
        }
        let (attr, content) = self.snapshots.file(ino)?;
        match content {
            Content::Memory(bytes) => Ok(Opening::Memory {
                fh: self.handles.insert(Handle::Memory(bytes)),
                // What may change between snapshots is read directly, never
                // from a page cache that could be stale.
                direct_io: attr.volatile,
            }),
            Content::Blob(blob) => {
                match FileRange::open_for_serving(&blob, self.opts.verify, &self.verifier)
                    .inspect_err(|e| log_refused(&blob, e))?
                {
                    Proof::Ready(opened) => Ok(Opening::Ready(blob, opened)),
                    Proof::Needed(opened) => Ok(Opening::Hash(blob, opened)),
                }
            }
        }
    }

    /// Answers a blob open from the hashing pool once its bytes hashed right.
    fn open_after_hashing(
        &self,
        uid: u32,
        ino: u64,
        blob: Arc<Blob>,
        mut opened: Opened,
        reply: ReplyOpen,
    ) {
        // The version the hash is of: opens of it share one job.
        let r = &opened.range;
        let key = format!("{:?} {} {} {}", r.id, r.base, r.len, blob.digest);
        log::debug!("open {}: proving its bytes before serving", blob.digest);
        let (handles, stats, verifier) = (
            self.handles.clone(),
            self.stats.clone(),
            self.verifier.clone(),
        );
        self.hashing.submit_keyed(
            key,
            uid,
            Box::new(move |run| {
                if !run {
                    let busy = FsError::Io(std::io::Error::from_raw_os_error(libc::EAGAIN));
                    return refuse_open(ino, &blob, &busy, reply);
                }
                match opened.check(&blob, &verifier) {
                    Ok(()) => finish_open(&handles, &stats, ino, &blob, opened, reply),
                    Err(e) => refuse_open(ino, &blob, &e, reply),
                }
                log::debug!("open {}: answered after its proof", blob.digest);
            }),
        );
    }

    fn file_attr(&self, a: &Attr) -> FileAttr {
        let (uid, gid) = a.owner.ids(self.opts.uid, self.opts.gid);
        FileAttr {
            ino: INodeNo(a.ino),
            size: a.size,
            blocks: a.blocks(),
            atime: a.mtime,
            mtime: a.mtime,
            ctime: a.mtime,
            crtime: a.mtime,
            kind: kind(a.kind),
            perm: a.perm,
            nlink: a.nlink,
            uid,
            gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }
}

/// What an open becomes (see `OciFs::opening`).
#[derive(Debug)]
enum Opening {
    /// Generated bytes, with their handle; read directly (not cached) when
    /// they may differ in the next snapshot.
    Memory {
        /// The handle.
        fh: u64,
        /// `FOPEN_DIRECT_IO` rather than `FOPEN_KEEP_CACHE`.
        direct_io: bool,
    },
    /// A blob whose bytes may be served now.
    Ready(Arc<Blob>, Opened),
    /// A blob to hash first (off the request threads).
    Hash(Arc<Blob>, Opened),
}

/// Logs why a blob's source file was not served (its name and file quoted).
fn log_refused(blob: &Blob, e: &FsError) {
    let from = printable(&blob.describe()).into_owned();
    log::warn!("open {} ({from}): {e}", blob.digest);
}

fn refuse_open(ino: u64, blob: &Blob, e: &FsError, reply: ReplyOpen) {
    log_refused(blob, e);
    reply.error(failed("open", ino, e));
}

/// Answers an open whose bytes may be served: passthrough when possible (a
/// whole file, and the kernel agrees), else a daemon-read handle. An archive
/// member is a byte range, which passthrough cannot map: always daemon reads.
fn finish_open(
    handles: &Handles<BackingId>,
    stats: &Stats,
    ino: u64,
    blob: &Blob,
    opened: Opened,
    reply: ReplyOpen,
) {
    let Opened {
        range,
        as_recorded,
        passthrough,
    } = opened;
    // Archive members are read by the daemon (not allowed passthrough).
    let allowed = passthrough && matches!(blob.origin, Origin::File { .. });
    let backing = handles.backing_for(ino, allowed, || reply.open_backing(range.file.as_ref()));
    if let Some(backing) = backing {
        Stats::count(&stats.passthrough_opens, 1);
        let fh = handles.insert(Handle::Passthrough {
            _backing: backing.clone(),
        });
        return reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &backing);
    }
    Stats::count(&stats.daemon_opens, 1);
    let fh = handles.insert(Handle::Read { ino, range });
    // A name's bytes never change under an inode (a swap that changes them
    // invalidates the inode): keep the page cache, unless this is not the
    // file the snapshot recorded (replaced and not yet rebuilt): then the
    // kernel drops what it cached.
    let flags = if as_recorded {
        FopenFlags::FOPEN_KEEP_CACHE
    } else {
        FopenFlags::empty()
    };
    reply.opened(FileHandle(fh), flags);
}

/// Writes `Filesystem` methods that refuse with EROFS, logged as one failed
/// operation each: `name(first, ArgType…) -> ReplyType;`, where `first` is
/// the inode argument named in the log (`ino` or `parent`).
macro_rules! refuse_writes {
    ($($op:ident($first:ident $(, $arg:ty)* $(,)?) -> $reply:ty;)*) => {
        $(
            fn $op(&self, _req: &Request, $first: INodeNo, $(_: $arg,)* reply: $reply) {
                reply.error(failed(stringify!($op), $first.0, &FsError::ReadOnly));
            }
        )*
    };
}

fn kind(k: Kind) -> FileType {
    match k {
        Kind::Dir => FileType::Directory,
        Kind::File => FileType::RegularFile,
    }
}

impl Filesystem for OciFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Largest readahead the kernel allows: blobs are read front to back.
        if let Err(nearest) = config.set_max_readahead(u32::MAX) {
            // `nearest` is the kernel's maximum, which is always accepted.
            let _ = config.set_max_readahead(nearest);
        }
        let offered = config.capabilities().contains(InitFlags::FUSE_PASSTHROUGH);
        let why_not = match (self.opts.passthrough, offered) {
            (false, _) => Some("--no-passthrough"),
            (true, false) => Some("the kernel does not offer FUSE_PASSTHROUGH (Linux >= 6.9 does)"),
            (true, true) => {
                // Depth 2 lets backing files live on overlayfs (containers' own
                // root) as well as on plain filesystems.
                let ok = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
                    && config.set_max_stack_depth(2).is_ok();
                (!ok).then_some("the kernel refused the passthrough settings")
            }
        };
        self.handles.set_passthrough(why_not.is_none());
        match why_not {
            None => log::info!("read path: kernel passthrough for source blobs"),
            Some(why) => log::info!("read path: daemon reads ({why})"),
        }
        if let Some(tx) = self.handshake.take() {
            // The receiver may be gone (foreground mounts do not wait).
            let _ = tx.send(());
        }
        Ok(())
    }

    fn destroy(&mut self) {
        log::info!("{}", self.stats.summary());
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self
            .running()
            .and_then(|()| self.snapshots.lookup(parent.0, name))
        {
            Ok(a) => reply.entry(&ttl(&a), &self.file_attr(&a), Generation(0)),
            Err(e) => reply.error(failed("lookup", parent.0, &e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.snapshots.attr(ino.0) {
            Ok(a) => reply.attr(&ttl(&a), &self.file_attr(&a)),
            Err(e) => reply.error(failed("getattr", ino.0, &e)),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        // A source that leads back into this mount makes the daemon open its
        // own files: refused here, so no read of ours can follow either.
        if is_own_thread(req.pid()) {
            return reply.error(failed("open", ino.0, &FsError::SelfRequest));
        }
        let read_only = flags.acc_mode() == OpenAccMode::O_RDONLY;
        let opening = self.running().and_then(|()| self.opening(ino.0, read_only));
        match opening {
            Err(e) => reply.error(failed("open", ino.0, &e)),
            Ok(Opening::Memory { fh, direct_io }) => {
                let flags = match direct_io {
                    true => FopenFlags::FOPEN_DIRECT_IO,
                    false => FopenFlags::FOPEN_KEEP_CACHE,
                };
                reply.opened(FileHandle(fh), flags);
            }
            Ok(Opening::Ready(blob, opened)) => {
                finish_open(&self.handles, &self.stats, ino.0, &blob, opened, reply)
            }
            Ok(Opening::Hash(blob, opened)) => {
                self.open_after_hashing(req.uid(), ino.0, blob, opened, reply)
            }
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        Stats::count(&self.stats.read_requests, 1);
        match self.handles.read_from(fh.0) {
            Some(ReadFrom::Memory(bytes)) => reply.data(slice_at(&bytes, offset, size)),
            Some(ReadFrom::File(range)) => match range.read(offset, size) {
                Ok(bytes) => {
                    Stats::count(&self.stats.read_bytes, bytes.len() as u64);
                    reply.data(&bytes)
                }
                Err(e) => reply.error(failed("read", ino.0, &e)),
            },
            None => reply.error(Errno::EBADF),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let held = self.handles.remove(fh.0);
        reply.ok();
        drop(held); // after replying: closing a backing id is an ioctl
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.running().and_then(|()| self.snapshots.attr(ino.0)) {
            Ok(a) if a.kind == Kind::Dir => reply.opened(FileHandle(0), FopenFlags::empty()),
            Ok(_) => reply.error(failed("opendir", ino.0, &FsError::NotDir)),
            Err(e) => reply.error(failed("opendir", ino.0, &e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        // Listings show the current snapshot only; offsets index into it.
        let layout = self.snapshots.current();
        let entries = match layout.read_dir(ino.0, offset) {
            Ok(entries) => entries,
            Err(e) => return reply.error(failed("readdir", ino.0, &e)),
        };
        for e in entries {
            if reply.add(INodeNo(e.ino), e.next_offset, kind(e.kind), e.name) {
                break; // buffer full: the kernel asks again from e's offset
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let layout = self.snapshots.current();
        let (blocks, files) = (layout.total_bytes().div_ceil(4096), layout.file_count());
        // blocks, free, available, files, free files, block size, name max, fragment size
        reply.statfs(blocks, 0, 0, files as u64, 0, 4096, 255, 4096);
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        match self.snapshots.attr(ino.0) {
            Ok(_) if mask.contains(AccessFlags::W_OK) => reply.error(Errno::EROFS),
            Ok(_) => reply.ok(),
            Err(e) => reply.error(failed("access", ino.0, &e)),
        }
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(Errno::NO_XATTR);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: ReplyXattr) {
        if size == 0 {
            reply.size(0)
        } else {
            reply.data(&[])
        }
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        // Not a terminal, nor anything else with ioctls (isatty() asks).
        reply.error(Errno::ENOTTY);
    }

    // Every write is refused. The mount is also `ro`, so the kernel answers
    // EROFS before most of these are reached; they stay as a second fence.
    refuse_writes! {
        setattr(ino, Option<u32>, Option<u32>, Option<u32>, Option<u64>, Option<TimeOrNow>,
            Option<TimeOrNow>, Option<SystemTime>, Option<FileHandle>, Option<SystemTime>,
            Option<SystemTime>, Option<SystemTime>, Option<fuser::BsdFileFlags>) -> ReplyAttr;
        mknod(parent, &OsStr, u32, u32, u32) -> ReplyEntry;
        mkdir(parent, &OsStr, u32, u32) -> ReplyEntry;
        unlink(parent, &OsStr) -> ReplyEmpty;
        rmdir(parent, &OsStr) -> ReplyEmpty;
        symlink(parent, &OsStr, &Path) -> ReplyEntry;
        rename(parent, &OsStr, INodeNo, &OsStr, fuser::RenameFlags) -> ReplyEmpty;
        link(ino, INodeNo, &OsStr) -> ReplyEntry;
        write(ino, FileHandle, u64, &[u8], fuser::WriteFlags, OpenFlags, Option<LockOwner>)
            -> ReplyWrite;
        create(parent, &OsStr, u32, u32, i32) -> ReplyCreate;
        setxattr(ino, &OsStr, &[u8], i32, u32) -> ReplyEmpty;
        removexattr(ino, &OsStr) -> ReplyEmpty;
        fallocate(ino, FileHandle, u64, u64, i32) -> ReplyEmpty;
    }
}

/// Whether `tid`, the thread a request came from, is one of this process's
/// own threads: a source that leads back into this mount (through an
/// overlay, a bind mount in another namespace …) makes the daemon ask
/// itself, and waiting for itself would wedge the mount. The kernel names
/// the calling thread in each request; `/proc/self/task/TID` exists only for
/// this process's threads, whichever filesystem was stacked in between.
fn is_own_thread(tid: u32) -> bool {
    tid != 0 && std::fs::symlink_metadata(format!("/proc/self/task/{tid}")).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::layout::ino;
    use crate::testing::testutil::{composed, contribution, file_blob, image};
    use std::ffi::OsStr;

    /// A filesystem serving one real layer file under `dir`; the layer's inode.
    fn served(dir: &std::path::Path, verify: bool) -> (OciFs, u64, std::path::PathBuf) {
        let layer = file_blob(dir, b"layer bytes");
        let path = dir.join(layer.rel());
        let mut c = contribution("src", vec![image("linux/amd64", "m")]);
        c.blobs.push(Arc::new(layer.clone()));
        let g = Arc::new(Generations::new(&composed(&[c])));
        let n = g
            .lookup(ino::SHA256, OsStr::new(layer.digest.encoded()))
            .unwrap()
            .ino;
        let opts = FsOptions {
            uid: 0,
            gid: 0,
            passthrough: true,
            verify,
        };
        (OciFs::new(g, opts), n, path)
    }

    fn kind(o: Result<Opening, FsError>) -> String {
        match o {
            Ok(Opening::Memory { direct_io, .. }) => format!("memory direct_io={direct_io}"),
            Ok(Opening::Ready(..)) => "ready".into(),
            Ok(Opening::Hash(..)) => "hash".into(),
            Err(e) => format!("errno {}", e.errno()),
        }
    }

    /// What each open becomes, without a kernel.
    #[test]
    fn opening_table() {
        let tmp = tempfile::tempdir().unwrap();
        let (fs, layer, path) = served(tmp.path(), false);
        let cases: &[(u64, bool, String)] = &[
            (ino::INDEX_JSON, true, "memory direct_io=true".into()),
            (ino::OCI_LAYOUT, true, "memory direct_io=false".into()),
            (layer, true, "ready".into()),
            (layer, false, format!("errno {}", libc::EROFS)),
            (ino::ROOT, true, format!("errno {}", libc::EISDIR)),
            (999_999, true, format!("errno {}", libc::ENOENT)),
        ];
        for (n, read_only, want) in cases {
            assert_eq!(&kind(fs.opening(*n, *read_only)), want, "ino {n}");
        }
        // Replaced by the same bytes (a rebuild renames over): hashed first.
        let fresh = path.with_extension("new");
        std::fs::write(&fresh, b"layer bytes").unwrap();
        std::fs::rename(&fresh, &path).unwrap();
        assert_eq!(kind(fs.opening(layer, true)), "hash");
        // Gone: not found.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            kind(fs.opening(layer, true)),
            format!("errno {}", libc::ENOENT)
        );
        // --verify: hashed at the first open, ready once that version hashed right.
        let tmp = tempfile::tempdir().unwrap();
        let (fs, layer, _) = served(tmp.path(), true);
        let Ok(Opening::Hash(blob, mut opened)) = fs.opening(layer, true) else {
            panic!("--verify hashes first");
        };
        opened.check(&blob, &fs.verifier).unwrap();
        assert_eq!(kind(fs.opening(layer, true)), "ready");
    }

    #[test]
    fn own_threads_are_recognised() {
        let me = nix::unistd::gettid().as_raw() as u32;
        assert!(is_own_thread(me));
        assert!(is_own_thread(std::process::id()));
        let child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        assert!(!is_own_thread(child.id()));
        let mut child = child;
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!is_own_thread(0));
    }
}
