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
//! that are not its own, are in `crate::handles`.
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

use crate::blob::{FileRange, Opened};
use crate::error::printable;
use crate::generations::Generations;
use crate::handles::{Handle, Handles, ReadFrom, Stats};
use crate::hashpool::{HashPool, is_own_thread};
use crate::layout::{Attr, Content, FsError, Kind, slice_at};
use crate::source::{Blob, Origin};
use crate::verify::Verifier;

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
        }
    }

    /// A receiver told once the kernel's FUSE handshake (INIT) is handled:
    /// readiness from the protocol itself, not from thread names.
    pub fn handshake(&mut self) -> std::sync::mpsc::Receiver<()> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.handshake = Some(tx);
        rx
    }

    /// Opens a source blob ([`FileRange::open`] refuses bytes that may not be
    /// its own). One that must be hashed first is answered from the hashing
    /// pool, never on this request thread.
    fn open_blob(&self, ino: u64, blob: &Blob, reply: ReplyOpen) {
        let (opened, must_hash) = match FileRange::open_unhashed(blob, self.opts.verify) {
            Ok(found) => found,
            Err(e) => return refuse_open(ino, blob, &e, reply),
        };
        if !must_hash || opened.checked_before(blob, &self.verifier) {
            return finish_open(&self.handles, &self.stats, ino, blob, opened, reply);
        }
        let (handles, stats, verifier) = (
            self.handles.clone(),
            self.stats.clone(),
            self.verifier.clone(),
        );
        let blob = blob.clone();
        self.hashing.submit(Box::new(move |run| {
            if !run {
                let busy = FsError::Io(std::io::Error::from_raw_os_error(libc::EAGAIN));
                return refuse_open(ino, &blob, &busy, reply);
            }
            match opened.check(&blob, &verifier) {
                Ok(()) => finish_open(&handles, &stats, ino, &blob, opened, reply),
                Err(e) => refuse_open(ino, &blob, &e, reply),
            }
        }));
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

fn refuse_open(ino: u64, blob: &Blob, e: &FsError, reply: ReplyOpen) {
    let from = printable(&blob.describe()).into_owned();
    log::warn!("open {} ({from}): {e}", blob.digest);
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
    let backing = match &blob.origin {
        Origin::Range { .. } => None,
        Origin::File { .. } => {
            handles.backing_for(ino, passthrough, || reply.open_backing(range.file.as_ref()))
        }
    };
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
        match self.snapshots.lookup(parent.0, name) {
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
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(failed("open", ino.0, &FsError::ReadOnly));
        }
        let (attr, content) = match self.snapshots.file(ino.0) {
            Ok(found) => found,
            Err(e) => return reply.error(failed("open", ino.0, &e)),
        };
        match content {
            Content::Memory(bytes) => {
                let fh = self.handles.insert(Handle::Memory(bytes));
                // What may change between snapshots is read directly, never
                // from a page cache that could be stale.
                let flags = match attr.volatile {
                    true => FopenFlags::FOPEN_DIRECT_IO,
                    false => FopenFlags::FOPEN_KEEP_CACHE,
                };
                reply.opened(FileHandle(fh), flags);
            }
            Content::Blob(blob) => self.open_blob(ino.0, &blob, reply),
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
        match self.snapshots.attr(ino.0) {
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
