//! The FUSE adapter: translates kernel requests into questions to the
//! [`Layout`] snapshot and its answers into replies. No OCI logic lives here.
//!
//! Each handler is one `match` on the model's result; a failure is logged once,
//! here, with the operation, the inode and the errno. Source files are opened
//! read-only on `open` and read with positional reads; the handle table's lock
//! is held only to insert, clone or remove an `Arc<File>`, never across I/O.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, KernelConfig, LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr,
    Request, TimeOrNow,
};

use crate::layout::{Attr, Content, FsError, Kind, Layout, slice_at};
use crate::readat::read_at;

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

/// Open source files, by file handle.
#[derive(Debug, Default)]
struct Handles {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<File>>>,
}

impl Handles {
    fn insert(&self, file: File) -> u64 {
        // 0 is kept for generated files, which need no handle.
        let fh = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        if let Ok(mut open) = self.open.lock() {
            open.insert(fh, Arc::new(file));
        }
        fh
    }

    fn get(&self, fh: u64) -> Option<Arc<File>> {
        self.open.lock().ok()?.get(&fh).cloned()
    }

    fn remove(&self, fh: u64) {
        if let Ok(mut open) = self.open.lock() {
            open.remove(&fh);
        }
    }
}

/// The mounted filesystem.
#[derive(Debug)]
pub struct OciFs {
    layout: Arc<Layout>,
    handles: Handles,
    uid: u32,
    gid: u32,
    /// Bytes of all served files, for `statfs`.
    total_bytes: u64,
}

impl OciFs {
    /// Serves `layout`, with files owned by `uid`/`gid`.
    pub fn new(layout: Arc<Layout>, uid: u32, gid: u32) -> Self {
        let total_bytes = layout.total_bytes();
        OciFs {
            layout,
            handles: Handles::default(),
            uid,
            gid,
            total_bytes,
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
            uid: self.uid,
            gid: self.gid,
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
        Ok(())
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
            // Generated and blob bytes never change under an inode: keep the page cache.
            Content::Memory(_) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            Content::File { path, .. } => match File::open(path) {
                Ok(file) => reply.opened(
                    FileHandle(self.handles.insert(file)),
                    FopenFlags::FOPEN_KEEP_CACHE,
                ),
                Err(e) => reply.error(failed("open", ino.0, &FsError::Io(e))),
            },
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
        let content = match self.layout.content(ino.0) {
            Ok(c) => c,
            Err(e) => return reply.error(failed("read", ino.0, &e)),
        };
        match content {
            Content::Memory(bytes) => reply.data(slice_at(bytes, offset, size)),
            Content::File { size: limit, .. } => {
                let Some(file) = self.handles.get(fh.0) else {
                    return reply.error(Errno::EBADF);
                };
                match read_at(&file, offset, size, *limit) {
                    Ok(bytes) => reply.data(&bytes),
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
        self.handles.remove(fh.0);
        reply.ok();
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
