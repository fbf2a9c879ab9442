//! The FUSE adapter: translates kernel requests into questions to the
//! [`Layout`] snapshot and its answers into replies. No OCI logic lives here.
//!
//! Each handler is one `match` on the model's result; a failure is logged once,
//! here, with the operation, the inode and the errno.
//!
//! Read paths for source blobs:
//! - passthrough (Linux ≥ 6.9 offers `FUSE_PASSTHROUGH`, and we may register
//!   backing files): `open` registers the source file with the kernel, which
//!   then serves read, splice and mmap itself; the daemon sees no READ;
//! - daemon: `open` keeps the source file, `read` does positional reads.
//!
//! The first failed registration switches passthrough off for good (logged
//! once); an inode that still has a live backing id keeps using it, because
//! all opens of one inode must agree. The tables' locks are held only to look
//! up, insert or remove an `Arc`, never across I/O or an ioctl.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, BackingId, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenAccMode, OpenFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow,
};

use crate::layout::{Attr, Content, FsError, Kind, Layout, slice_at};
use crate::readat::read_at;
use crate::source::Origin;

/// How long the kernel may cache entries and attributes. The snapshot never
/// changes while mounted, and blobs are content-addressed.
const TTL: Duration = Duration::from_secs(3600);

/// The one mapping from model errors to errno.
fn errno(e: &FsError) -> Errno {
    match e {
        FsError::NotFound => Errno::ENOENT,
        FsError::NotDir => Errno::ENOTDIR,
        FsError::IsDir => Errno::EISDIR,
        FsError::ReadOnly => Errno::EROFS,
        FsError::Io(io) => io.raw_os_error().map_or(Errno::EIO, Errno::from_i32),
    }
}

/// Logs a failed operation once, with its inode and errno (lookups of absent
/// names are normal and logged at debug level).
fn failed(op: &str, ino: u64, e: &FsError) -> Errno {
    let code = errno(e);
    match e {
        FsError::NotFound | FsError::ReadOnly => {
            log::debug!("{op} ino {ino:#x}: {e} (errno {})", code.code())
        }
        _ => log::warn!("{op} ino {ino:#x}: {e} (errno {})", code.code()),
    }
    code
}

/// What an open file handle holds.
#[derive(Debug)]
enum Handle {
    /// The daemon reads this file.
    Read(Arc<File>),
    /// The kernel reads the backing file; held so the id lives while open.
    Passthrough { _backing: Arc<BackingId> },
}

/// Open handles, and the live backing id of each inode opened with passthrough.
#[derive(Debug, Default)]
struct Handles {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Handle>>,
    backing: Mutex<HashMap<u64, Weak<BackingId>>>,
}

impl Handles {
    fn insert(&self, handle: Handle) -> u64 {
        // 0 is kept for generated files, which need no handle.
        let fh = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        if let Ok(mut open) = self.open.lock() {
            open.insert(fh, handle);
        }
        fh
    }

    fn file(&self, fh: u64) -> Option<Arc<File>> {
        match self.open.lock().ok()?.get(&fh)? {
            Handle::Read(f) => Some(f.clone()),
            Handle::Passthrough { .. } => None,
        }
    }

    /// Removes a handle; what it held is dropped after the lock is released
    /// (dropping the last `BackingId` is an ioctl).
    fn remove(&self, fh: u64) -> Option<Handle> {
        self.open.lock().ok()?.remove(&fh)
    }

    fn live_backing(&self, ino: u64) -> Option<Arc<BackingId>> {
        self.backing.lock().ok()?.get(&ino)?.upgrade()
    }

    /// Records `id` as the inode's backing id, unless another open registered
    /// one meanwhile: then that one is returned and `id` is dropped, so that
    /// every open of the inode uses one id.
    fn adopt_backing(&self, ino: u64, id: BackingId) -> Arc<BackingId> {
        let id = Arc::new(id);
        let Ok(mut table) = self.backing.lock() else {
            return id;
        };
        if let Some(existing) = table.get(&ino).and_then(Weak::upgrade) {
            return existing;
        }
        table.retain(|_, w| w.strong_count() > 0);
        table.insert(ino, Arc::downgrade(&id));
        id
    }
}

/// Counters, logged when the filesystem is unmounted.
#[derive(Debug, Default)]
struct Stats {
    read_requests: AtomicU64,
    read_bytes: AtomicU64,
    passthrough_opens: AtomicU64,
    daemon_opens: AtomicU64,
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
}

/// The mounted filesystem.
#[derive(Debug)]
pub struct OciFs {
    layout: Arc<Layout>,
    handles: Handles,
    opts: FsOptions,
    /// Whether new opens try passthrough: set in `init` when the kernel
    /// offers it, cleared for good by the first failed registration.
    passthrough: AtomicBool,
    stats: Stats,
    /// Bytes of all served files, for `statfs`.
    total_bytes: u64,
}

impl OciFs {
    /// Serves `layout`.
    pub fn new(layout: Arc<Layout>, opts: FsOptions) -> Self {
        let total_bytes = layout.total_bytes();
        OciFs {
            layout,
            handles: Handles::default(),
            opts,
            passthrough: AtomicBool::new(false),
            stats: Stats::default(),
            total_bytes,
        }
    }

    /// Opens a source blob: passthrough when possible (a whole file, and the
    /// kernel agrees), else a daemon-read handle. An archive member is a byte
    /// range, which passthrough cannot map: always daemon reads.
    fn open_blob(&self, ino: u64, origin: &Origin, reply: ReplyOpen) {
        let (path, whole_file) = match origin {
            Origin::File(path) => (path, true),
            Origin::Range { archive, .. } => (archive, false),
        };
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) => return reply.error(failed("open", ino, &FsError::Io(e))),
        };
        let backing = match self.handles.live_backing(ino) {
            Some(id) => Some(id),
            None if whole_file && self.passthrough.load(Ordering::Relaxed) => {
                match reply.open_backing(&file) {
                    Ok(id) => Some(self.handles.adopt_backing(ino, id)),
                    Err(e) => {
                        if self.passthrough.swap(false, Ordering::Relaxed) {
                            log::warn!(
                                "read path: passthrough registration failed ({e}); daemon reads from now on"
                            );
                        }
                        None
                    }
                }
            }
            None => None,
        };
        match backing {
            Some(id) => {
                self.stats.passthrough_opens.fetch_add(1, Ordering::Relaxed);
                let fh = self.handles.insert(Handle::Passthrough {
                    _backing: id.clone(),
                });
                reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &id);
            }
            None => {
                self.stats.daemon_opens.fetch_add(1, Ordering::Relaxed);
                let fh = self.handles.insert(Handle::Read(Arc::new(file)));
                // Blob bytes never change under an inode: keep the page cache.
                reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE);
            }
        }
    }

    fn file_attr(&self, a: &Attr) -> FileAttr {
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
            uid: self.opts.uid,
            gid: self.opts.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }
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
        self.passthrough.store(why_not.is_none(), Ordering::Relaxed);
        match why_not {
            None => log::info!("read path: kernel passthrough for source blobs"),
            Some(why) => log::info!("read path: daemon reads ({why})"),
        }
        Ok(())
    }

    fn destroy(&mut self) {
        let s = &self.stats;
        log::info!(
            "stats: {} read requests, {} bytes read by the daemon; {} passthrough opens, {} daemon opens",
            s.read_requests.load(Ordering::Relaxed),
            s.read_bytes.load(Ordering::Relaxed),
            s.passthrough_opens.load(Ordering::Relaxed),
            s.daemon_opens.load(Ordering::Relaxed),
        );
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.layout.lookup(parent.0, name) {
            Ok(a) => reply.entry(&TTL, &self.file_attr(&a), Generation(0)),
            Err(e) => reply.error(failed("lookup", parent.0, &e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.layout.attr(ino.0) {
            Ok(a) => reply.attr(&TTL, &self.file_attr(&a)),
            Err(e) => reply.error(failed("getattr", ino.0, &e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(failed("open", ino.0, &FsError::ReadOnly));
        }
        let content = match self.layout.content(ino.0) {
            Ok(c) => c,
            Err(e) => return reply.error(failed("open", ino.0, &e)),
        };
        match content {
            // Generated bytes never change under an inode: keep the page cache.
            Content::Memory(_) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            Content::Blob { origin, .. } => self.open_blob(ino.0, origin, reply),
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
        self.stats.read_requests.fetch_add(1, Ordering::Relaxed);
        let content = match self.layout.content(ino.0) {
            Ok(c) => c,
            Err(e) => return reply.error(failed("read", ino.0, &e)),
        };
        match content {
            Content::Memory(bytes) => reply.data(slice_at(bytes, offset, size)),
            Content::Blob { origin, size: len } => {
                let Some(file) = self.handles.file(fh.0) else {
                    return reply.error(Errno::EBADF);
                };
                // An archive member's bytes start at its data offset.
                let base = match origin {
                    Origin::File(_) => 0,
                    Origin::Range { offset, .. } => *offset,
                };
                let at = base.saturating_add(offset);
                match read_at(&file, at, size, base.saturating_add(*len)) {
                    Ok(bytes) => {
                        self.stats
                            .read_bytes
                            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                        reply.data(&bytes)
                    }
                    Err(e) => reply.error(failed("read", ino.0, &FsError::Io(e))),
                }
            }
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
        match self.layout.attr(ino.0) {
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
        let entries = match self.layout.read_dir(ino.0, offset) {
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
        let files = self.layout.file_count() as u64;
        reply.statfs(
            self.total_bytes.div_ceil(4096),
            0,
            0,
            files,
            0,
            4096,
            255,
            4096,
        );
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        match self.layout.attr(ino.0) {
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

    // Every write is refused. The mount is also `ro`, so the kernel answers
    // EROFS before most of these are reached; they stay as a second fence.

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(failed("setattr", ino.0, &FsError::ReadOnly));
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(failed("mknod", parent.0, &FsError::ReadOnly));
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply.error(failed("mkdir", parent.0, &FsError::ReadOnly));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(failed("unlink", parent.0, &FsError::ReadOnly));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(failed("rmdir", parent.0, &FsError::ReadOnly));
    }

    fn symlink(
        &self,
        _req: &Request,
        parent: INodeNo,
        _name: &OsStr,
        _target: &Path,
        reply: ReplyEntry,
    ) {
        reply.error(failed("symlink", parent.0, &FsError::ReadOnly));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(failed("rename", parent.0, &FsError::ReadOnly));
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(failed("link", ino.0, &FsError::ReadOnly));
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: fuser::WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(failed("write", ino.0, &FsError::ReadOnly));
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        reply.error(failed("create", parent.0, &FsError::ReadOnly));
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(failed("setxattr", ino.0, &FsError::ReadOnly));
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(failed("removexattr", ino.0, &FsError::ReadOnly));
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(failed("fallocate", ino.0, &FsError::ReadOnly));
    }
}
