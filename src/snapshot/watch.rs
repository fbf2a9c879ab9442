//! Following live sources: when a source changes (index.json rewritten, blobs
//! added, the `…-latest-oci` symlink re-pointed, an archive replaced), build a
//! new snapshot off the request path and swap it in whole.
//!
//! inotify watches, per source: the directory holding the path as given (for
//! the symlink or archive itself, filtered by name), for a layout directory
//! the directory and its `blobs/sha256`, and every directory above the
//! source up to `/` for its own attributes only (a chmod, chown or ACL change
//! there changes what blobs may show) — those of the current sources only:
//! watches on a re-pointed symlink's old target are removed. A path has at
//! most a few dozen directories, so the watches are bounded per source.
//! Idle, this costs nothing (but a prune of replaced snapshots every
//! `PRUNE_EVERY` while any are kept). After an event the watcher waits for
//! `SETTLE` of quiet (a writer is usually mid-way), then rebuilds, never
//! sooner than `MIN_GAP` (or 4× the last rebuild) after the last one. A
//! source caught mid-rewrite (truncated JSON, a manifest whose blobs are not
//! there yet) fails to compose: the last good snapshot keeps being served,
//! the failure is logged once, and the rebuild is retried every `RETRY`
//! until it succeeds (the timing is the pure state machine in `schedule`). A
//! swap's invalidations are sent from this thread.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

use crate::snapshot::generations::{Generations, Invalidation};
use crate::snapshot::index::Composition;
use crate::snapshot::plan::Plan;
use crate::snapshot::schedule::{RETRY, Schedule};

/// Gives memory that building and dropping snapshots freed back to the
/// system: a composition of 200,000 blobs allocates and frees far more than
/// the snapshot keeps, and glibc's allocator keeps freed pages otherwise.
pub fn release_freed_memory() {
    crate::files::sys::release_freed_memory();
}

/// Tells the kernel what a swap made stale (see [`Invalidation`]).
pub type Notify = Box<dyn Fn(&[Invalidation]) + Send>;

/// Gives a running watcher other sources (`serve`'s Yocto mode, when an
/// image gains a machine): it rebuilds from them as from a change.
#[derive(Debug, Clone)]
pub struct Replan {
    slot: Arc<std::sync::Mutex<Option<Plan>>>,
    wake: Arc<OwnedFd>,
}

impl Replan {
    /// Hands `plan` over; the watcher takes the latest one given.
    pub fn send(&self, plan: Plan) {
        *self
            .slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(plan);
        // A full pipe already holds a wake-up.
        let _ = nix::unistd::write(self.wake.as_fd(), &[1]);
    }
}

/// Starts the watcher thread. It runs until the process exits.
pub fn spawn(
    plan: Plan,
    first: &Composition,
    snapshots: Arc<Generations>,
    notify: Notify,
) -> std::io::Result<Replan> {
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
        .map_err(std::io::Error::from)?;
    let flags = nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK;
    let (woken, wake) = nix::unistd::pipe2(flags).map_err(std::io::Error::from)?;
    let replan = Replan {
        slot: Arc::default(),
        wake: Arc::new(wake),
    };
    let mut watcher = Watcher {
        plan,
        snapshots,
        notify,
        inotify,
        names: HashMap::new(),
        dirs_changed: false,
        dir_perms: HashMap::new(),
        last: Fingerprint::of(first),
        last_error: None,
        replanned: Replanned {
            woken,
            slot: replan.slot.clone(),
            _wake: replan.wake.clone(),
        },
    };
    watcher.arm();
    std::thread::Builder::new()
        .name("watch".into())
        .spawn(move || {
            // A change between the first composition and the watches being
            // armed would otherwise go unseen.
            watcher.rebuild();
            release_freed_memory();
            watcher.run()
        })?;
    Ok(replan)
}

/// What makes two compositions serve the same tree.
#[derive(Debug, PartialEq, Eq)]
struct Fingerprint {
    index_json: Vec<u8>,
    blobs: Vec<Arc<crate::source::Blob>>,
}

impl Fingerprint {
    fn of(c: &Composition) -> Self {
        Fingerprint {
            index_json: c.index_json.clone(),
            blobs: c.blobs.clone(),
        }
    }

    /// Makes `comp` share the blobs that did not change with the last
    /// composition (and so with the snapshots built from it): a rebuild
    /// then costs memory for what changed, not for every blob again.
    ///
    /// A name served before whose bytes now come from another file (renamed
    /// over, rewritten) is marked [`Blob::replaced`](crate::source::Blob::replaced):
    /// the new file is a new claim, hashed before it is served. Marks stay.
    fn share_unchanged(&self, comp: &mut Composition) {
        let last: HashMap<&crate::oci::digest::Digest, &Arc<crate::source::Blob>> =
            self.blobs.iter().map(|b| (&b.digest, b)).collect();
        for blob in &mut comp.blobs {
            let Some(was) = last.get(&blob.digest) else {
                continue;
            };
            let mut now = (**blob).clone();
            now.replaced = was.replaced || was.origin.file_id() != now.origin.file_id();
            if ***was == now {
                *blob = Arc::clone(was);
            } else if now.replaced != blob.replaced {
                *blob = Arc::new(now);
            }
        }
    }
}

struct Watcher {
    plan: Plan,
    snapshots: Arc<Generations>,
    notify: Notify,
    inotify: Inotify,
    /// Per watch: its directory and which of its events matter. Only
    /// directories the current sources use are watched.
    names: HashMap<WatchDescriptor, (PathBuf, Filter)>,
    /// A watched directory's permissions (mode, owner, ACL) changed since
    /// the last rebuild: retained snapshots hold stale access.
    dirs_changed: bool,
    /// The permissions of each watched directory when last seen.
    dir_perms: HashMap<PathBuf, crate::files::chain::DirPerm>,
    last: Fingerprint,
    last_error: Option<String>,
    replanned: Replanned,
}

/// Where [`Replan::send`] wakes a watcher, and what it sent.
struct Replanned {
    woken: OwnedFd,
    slot: Arc<std::sync::Mutex<Option<Plan>>>,
    /// The write end, held here too: with no writer left the read end would
    /// be readable (end of file) for ever, and `wait` would spin.
    _wake: Arc<OwnedFd>,
}

/// Which events of a watched directory matter.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Filter {
    /// Every event.
    All,
    /// Events for these entries; `None` stands for the directory itself
    /// (a change of its mode, owner or ACL).
    Only(std::collections::BTreeSet<Option<OsString>>),
}

impl Filter {
    fn merge(&mut self, other: Filter) {
        match (&mut *self, other) {
            (Filter::All, _) => {}
            (_, Filter::All) => *self = Filter::All,
            (Filter::Only(mine), Filter::Only(theirs)) => mine.extend(theirs),
        }
    }

    fn matches(&self, name: Option<&OsString>) -> bool {
        match self {
            Filter::All => true,
            Filter::Only(names) => names.contains(&name.cloned()),
        }
    }

    /// Only the directory's own attributes: nothing else happening in it
    /// (a busy `/tmp`) needs to wake the watcher.
    fn mask(&self) -> AddWatchFlags {
        match self {
            Filter::Only(names) if names.iter().all(Option::is_none) => AddWatchFlags::IN_ATTRIB,
            _ => DIR_EVENTS,
        }
    }
}

const DIR_EVENTS: AddWatchFlags = AddWatchFlags::IN_CREATE
    .union(AddWatchFlags::IN_MOVED_TO)
    .union(AddWatchFlags::IN_MOVED_FROM)
    .union(AddWatchFlags::IN_DELETE)
    .union(AddWatchFlags::IN_CLOSE_WRITE)
    .union(AddWatchFlags::IN_MODIFY)
    .union(AddWatchFlags::IN_ATTRIB);

impl Watcher {
    /// Watches exactly the directories the sources use now, and no others:
    /// a re-pointed symlink's old target (Yocto's previous build directory)
    /// loses its watches, so they do not pile up and its activity is ignored.
    fn arm(&mut self) {
        let wanted = self.wanted();
        self.dir_perms.retain(|dir, _| wanted.contains_key(dir));
        for dir in wanted.keys() {
            if !self.dir_perms.contains_key(dir) {
                if let Some(perm) = dir_perm(dir) {
                    self.dir_perms.insert(dir.clone(), perm);
                }
            }
        }
        let mut names = HashMap::new();
        for (dir, filter) in wanted {
            match self.inotify.add_watch(&dir, filter.mask()) {
                Ok(wd) => {
                    names.insert(wd, (dir, filter));
                }
                Err(e) => log::debug!("watch {}: {e}", dir.display()),
            }
        }
        for (wd, (dir, _)) in &self.names {
            if !names.contains_key(wd) {
                if let Err(e) = self.inotify.rm_watch(*wd) {
                    log::debug!("unwatch {}: {e}", dir.display());
                }
            }
        }
        self.names = names;
    }

    /// The directories to watch, each with the names in it that matter:
    /// each source's directory and what its path names, every directory
    /// above it, and the directories symlinked blobs' targets are in.
    fn wanted(&self) -> HashMap<PathBuf, Filter> {
        let mut wanted: HashMap<PathBuf, Filter> = HashMap::new();
        let mut want = |dir: PathBuf, filter: Filter| match wanted.get_mut(&dir) {
            Some(f) => f.merge(filter),
            None => {
                wanted.insert(dir, filter);
            }
        };
        let only = |name: Option<OsString>| Filter::Only([name].into_iter().collect());
        for spec in &self.plan.specs {
            let Ok(given) = std::path::absolute(&spec.path) else {
                continue;
            };
            if let (Some(parent), Some(name)) = (given.parent(), given.file_name()) {
                want(parent.to_owned(), only(Some(name.to_owned())));
            }
            if let Ok(target) = std::fs::canonicalize(&given) {
                // Every directory above the source, up to `/`: a chmod,
                // chown or ACL change there changes what blobs may show.
                for dir in target.ancestors().skip(1) {
                    want(dir.to_owned(), only(None));
                }
                if target.is_dir() {
                    want(target.join("blobs/sha256"), Filter::All);
                    want(target.join("blobs"), only(None));
                    want(target, Filter::All);
                }
            }
        }
        // The directories symlinked blobs' targets are in, for every
        // snapshot still served: their permissions narrow those blobs.
        for dir in self.snapshots.source_dirs() {
            for target_dir in dir.target_dirs() {
                want(target_dir, only(None));
            }
        }
        wanted
    }

    /// Whether any pending event concerns a source.
    fn drain(&mut self) -> bool {
        let mut relevant = false;
        let mut byte = [0u8; 64];
        while matches!(nix::unistd::read(&self.replanned.woken, &mut byte), Ok(n) if n > 0) {}
        let sent = self
            .replanned
            .slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(plan) = sent {
            log::info!("sources replaced: {} now", plan.specs.len());
            self.plan = plan;
            relevant = true;
        }
        while let Ok(events) = self.inotify.read_events() {
            if events.is_empty() {
                break;
            }
            for ev in events {
                relevant |= self
                    .names
                    .get(&ev.wd)
                    .is_some_and(|(_, filter)| filter.matches(ev.name.as_ref()))
                    || ev.mask.contains(AddWatchFlags::IN_Q_OVERFLOW);
                if ev.mask.contains(AddWatchFlags::IN_ATTRIB) {
                    self.note_attrib(ev.wd, ev.name.as_ref(), ev.mask);
                }
            }
        }
        relevant
    }

    /// Waits for events up to `until` (forever when `None`); whether any came.
    fn wait(&self, until: Option<Instant>) -> bool {
        let timeout = match until {
            None => PollTimeout::NONE,
            Some(t) => PollTimeout::try_from(t.saturating_duration_since(Instant::now()))
                .unwrap_or(PollTimeout::MAX),
        };
        let mut fds = [
            PollFd::new(self.inotify.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.replanned.woken.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, timeout) {
            Ok(n) => n > 0,
            Err(nix::errno::Errno::EINTR) => false,
            Err(e) => {
                // Never spin on a broken descriptor.
                log::warn!("watching sources: poll: {e}");
                std::thread::sleep(RETRY);
                false
            }
        }
    }

    fn run(mut self) {
        let mut schedule = Schedule::new(Instant::now(), self.last_error.is_some());
        loop {
            let pruning = self.snapshots.retired_count() > 0;
            if self.wait(schedule.wake_at(pruning)) && self.drain() {
                schedule.event(Instant::now());
            }
            let now = Instant::now();
            let due = schedule.due(now, pruning);
            if due.prune {
                let stale = self.snapshots.prune();
                (self.notify)(&stale);
                release_freed_memory();
                schedule.pruned(now);
            }
            if due.rebuild {
                let started = Instant::now();
                self.rebuild();
                // Whatever the rebuild found, what it composed is freed now.
                release_freed_memory();
                schedule.rebuilt(started, Instant::now(), self.last_error.is_some());
            }
        }
    }

    /// A directory's attributes changed (the watched one, or an entry of it
    /// that is a directory): whether its permissions did, not only its times.
    fn note_attrib(&mut self, wd: WatchDescriptor, name: Option<&OsString>, mask: AddWatchFlags) {
        let Some((dir, _)) = self.names.get(&wd) else {
            return;
        };
        let path = match name {
            None => dir.clone(),
            Some(n) if mask.contains(AddWatchFlags::IN_ISDIR) => dir.join(n),
            Some(_) => return,
        };
        // Only the directories whose permissions go into blobs' access.
        let Some(was) = self.dir_perms.get(&path).copied() else {
            return;
        };
        let now = dir_perm(&path);
        match now {
            Some(perm) => self.dir_perms.insert(path, perm),
            None => self.dir_perms.remove(&path),
        };
        self.dirs_changed |= now != Some(was);
    }

    /// Drops the retained snapshots (a directory's permissions changed:
    /// they hold the access of their time) and tells the kernel.
    fn drop_retired(&mut self) {
        let stale = self.snapshots.drop_retired();
        if !stale.is_empty() {
            log::info!(
                "a directory's permissions changed: {} names of replaced snapshots dropped",
                stale.len()
            );
            (self.notify)(&stale);
        }
    }

    fn rebuild(&mut self) {
        let started = Instant::now();
        match self.plan.compose() {
            Ok(mut comp) => {
                self.last.share_unchanged(&mut comp);
                self.snapshots.set_degraded(false);
                if let Some(e) = self.last_error.take() {
                    log::info!("sources compose again (was: {e})");
                }
                let fingerprint = Fingerprint::of(&comp);
                let dirs_changed = std::mem::take(&mut self.dirs_changed);
                self.arm();
                if fingerprint == self.last {
                    self.snapshots.record_rebuild(Ok(false));
                    if dirs_changed {
                        self.drop_retired();
                    }
                    return;
                }
                let stale = self.snapshots.swap(&comp);
                self.snapshots.record_rebuild(Ok(true));
                let layout = self.snapshots.current();
                log::info!(
                    "sources changed: serving index {}: {} blobs, {} bytes, built in {:?}; {} invalidations",
                    layout.index_digest(),
                    layout.blob_count(),
                    layout.total_bytes(),
                    started.elapsed(),
                    stale.len()
                );
                (self.notify)(&stale);
                self.last = fingerprint;
                // The snapshot just replaced holds the old access too.
                if dirs_changed {
                    self.drop_retired();
                }
            }
            Err(e) => {
                self.snapshots.set_degraded(true);
                let msg = e.to_string();
                if self.last_error.as_deref() != Some(msg.as_str()) {
                    log::warn!(
                        "a source changed but does not compose yet; still serving the last good snapshot: {msg}"
                    );
                }
                self.snapshots.record_rebuild(Err(&msg));
                self.last_error = Some(msg);
                self.arm();
            }
        }
    }
}

/// The permissions of the directory `path` now (no symlink followed).
fn dir_perm(path: &std::path::Path) -> Option<crate::files::chain::DirPerm> {
    use nix::fcntl::OFlag;
    let fd = nix::fcntl::open(
        path,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ok()?;
    let st = nix::sys::stat::fstat(&fd).ok()?;
    Some(crate::files::chain::DirPerm::of(fd.as_fd(), &st))
}
