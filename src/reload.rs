//! The policy store and hot reload: a notify watcher on the policy directory, SIGHUP, and the
//! arc-swap that replaces the compiled snapshot in one step.
//!
//! A Check holds an arc-swap guard on the snapshot for its whole length, so a swap never
//! changes the policy under a Check in flight, and an invalid set never replaces a good one.
//!
//! # Which reads are installed
//!
//! A file event says that something changed, not that it is done changing, so whether a read
//! is whole is told from the files and from what the watcher saw while they were read. Each
//! policy file is stamped (the file its path names, as device and inode; its size, mtime and
//! ctime) before the set is read and again after. A read is installed only when all three hold:
//!
//! 1. Nothing read changed while it was read: the same files with the same stamps. Otherwise
//!    it is read again [`SETTLE`] later. A rename is atomic and spoils only a read it overlaps
//!    (milliseconds), so under a stream of renames at any rate a set is installed about
//!    [`MAX_DELAY`] after the first event, and again at least that often while they go on.
//! 2. No file read was being written in place. Stamps cannot tell: a truncating open may leave
//!    mtime and ctime as they were until the first write (Linux 6.18, ext4), and a writer paused
//!    halfway leaves equal stamps around a read made meanwhile. The watcher sees each write
//!    (`IN_MODIFY`) and, on Linux, the close that ends it (`IN_CLOSE_WRITE`). So [`SETTLE`]
//!    after the read, when the events of writes made before it have reached the watcher, a
//!    file of the read that is written and not closed, or was written since the read began, has
//!    it done again: once the file is closed (an event, which brings the next read), or
//!    [`WRITER_GRACE`] after its last write, for a writer that never closes. A file
//!    closed less than [`IN_PLACE_QUIET`] before the read has it done again once that has
//!    passed, since a close is not always the writer's ([`Writers::hold`]). Renames write
//!    nothing in place, so a stream of them never holds a read back. Before judging, the
//!    watcher is caught up with a [`Barrier`]: a file created in a directory of our own that it
//!    follows too, whose event comes after those of every earlier write, so a late watcher
//!    thread (a loaded machine) cannot let a half-written file through.
//! 3. Files changed just before the read have settled, for watchers without close events and
//!    the case of no events at all (SIGHUP only). A file changed (ctime) less than [`SETTLE`]
//!    before the read, or less than a clock tick (20 ms; 2 s where ctimes have no fraction of a
//!    second, as equal stamps miss a change in the tick of the first), is looked at again once
//!    that long has passed since its change. If its path then names another file (renamed
//!    over) or none, its read stands: the file read was not being written through that name.
//!    If it names the same file, that file must be unchanged and must have been stamped more
//!    than a tick after its change; otherwise the set is read again.
//!
//! SIGHUP reads follow the same rules. What they cannot see: writes whose events do not name
//! the path read (a file reached through a symbolic link, a network file system written from
//! elsewhere) or come later than [`SETTLE`], where only rule 3 and the stamps are left; a
//! writer writing in place into a file it renamed into place, or keeping it open longer than
//! [`WRITER_GRACE`]. A half-written file read then is rejected or installed until its write's
//! next event reloads it whole.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::policy::load::{is_policy_file_name, policy_files};
use crate::policy::snapshot::{ModeChange, mode_changes};
use crate::policy::{LoadError, PolicySet, Snapshot, Text, load_paths};

/// Quiet time after the last file event before reloading: editors and `kubectl cp` write in
/// several steps.
pub const DEBOUNCE: Duration = Duration::from_millis(150);
/// Longest a reload waits while events keep coming.
pub const MAX_DELAY: Duration = Duration::from_millis(800);
/// How long after a read the events of the writes made before it are taken to have arrived,
/// and after its last change a file counts as settled (module doc, rules 2 and 3).
pub const SETTLE: Duration = Duration::from_millis(50);
/// The step of a file system clock with fractions of a second: a jiffy, 10 ms at most, with
/// room for the coarse clock lagging the real one.
const FINE_TICK: Duration = Duration::from_millis(20);
/// The step of one without (FAT counts mtimes in 2 s).
const COARSE_TICK: Duration = Duration::from_secs(2);
/// How long after its last write a file still open for writing stops holding reloads back.
pub const WRITER_GRACE: Duration = Duration::from_secs(2);

const FILE_CHANGE: &str = "file change";

#[derive(Debug, Default)]
pub struct PolicyStore {
    current: ArcSwapOption<Snapshot>,
}

/// What a successful load changed.
#[derive(Debug)]
pub struct Reloaded {
    pub snapshot: Arc<Snapshot>,
    /// The revision before, `None` at start-up.
    pub previous: Option<Text>,
    pub mode_changes: Vec<ModeChange>,
}

impl PolicyStore {
    /// The snapshot in force, `None` before the first successful load. The guard keeps it alive
    /// without touching its reference count (shared by every core) on the Check path.
    pub fn current(&self) -> arc_swap::Guard<Option<Arc<Snapshot>>> {
        self.current.load()
    }

    /// Loads, validates and compiles `dir` and swaps it in. On failure nothing changes.
    pub fn reload(&self, dir: &Path) -> Result<Reloaded, LoadError> {
        load_paths(&[dir]).map(|set| self.install_set(set))
    }

    /// Compiles a valid set and swaps it in whole.
    pub fn install_set(&self, set: PolicySet) -> Reloaded {
        for warning in &set.warnings {
            tracing::warn!("{warning}");
        }
        let snapshot = Arc::new(Snapshot::compile(set));
        let old = self.current.swap(Some(Arc::clone(&snapshot)));
        Reloaded {
            mode_changes: old
                .as_deref()
                .map(|old| mode_changes(old, &snapshot))
                .unwrap_or_default(),
            previous: old.map(|o| o.revision.clone()),
            snapshot,
        }
    }
}

/// Whether a file event under `root` can change the policy set. Pure, so it is tested on
/// synthetic events.
pub fn triggers_reload(root: &Path, event: &Event) -> bool {
    match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => {}
        EventKind::Access(_) => return false,
        _ => {}
    }
    event.paths.iter().any(|path| path_matters(root, path))
}

fn path_matters(root: &Path, path: &Path) -> bool {
    // The parent is watched too, to see the root itself removed or recreated.
    let Ok(relative) = path.strip_prefix(root) else {
        return false;
    };
    let mut last = None;
    for component in relative.components() {
        let name = component.as_os_str().to_string_lossy();
        // `..data`, `..2026_…`: the Kubernetes ConfigMap swap.
        if name.starts_with("..") {
            return true;
        }
        // Hidden entries are never loaded (editor swap files, `.git`).
        if name.starts_with('.') {
            return false;
        }
        last = Some(name.into_owned());
    }
    match last {
        None => true,
        // A policy file, or something without an extension: a directory, created or removed.
        Some(name) => is_policy_file_name(&name) || Path::new(&name).extension().is_none(),
    }
}

/// What a read found of one policy file: which file its path named, its size and its times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    /// Device and inode.
    file: (u64, u64),
    len: u64,
    modified: SystemTime,
    /// The inode change time: moved by writes and renames, and never set back by a tool the way
    /// mtime is (`touch -d`, `cp -p`, `tar`).
    changed: SystemTime,
}

impl Stamp {
    #[cfg(unix)]
    fn of(meta: &fs::Metadata) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        let changed = u64::try_from(meta.ctime()).map_or(UNIX_EPOCH, |seconds| {
            let nanos = u32::try_from(meta.ctime_nsec()).unwrap_or(0);
            UNIX_EPOCH + Duration::new(seconds, nanos)
        });
        Stamp {
            file: (meta.dev(), meta.ino()),
            len: meta.len(),
            modified: meta.modified().unwrap_or(UNIX_EPOCH),
            changed,
        }
    }

    #[cfg(not(unix))]
    fn of(meta: &fs::Metadata) -> Stamp {
        let modified = meta.modified().unwrap_or(UNIX_EPOCH);
        Stamp {
            file: (0, 0),
            len: meta.len(),
            modified,
            changed: modified,
        }
    }

    /// The step of the clock that set `changed`, as far as it shows: a time without a fraction
    /// of a second comes from a clock that counts whole seconds.
    fn tick(&self) -> Duration {
        let whole = self
            .changed
            .duration_since(UNIX_EPOCH)
            .is_ok_and(|t| t.subsec_nanos() == 0);
        if whole { COARSE_TICK } else { FINE_TICK }
    }

    /// When a write in place ending at this change counts as over.
    fn quiet_at(&self) -> SystemTime {
        self.changed + self.tick().max(SETTLE)
    }

    /// Whether a stamp taken after `started` may fall in the clock tick of the change, so that
    /// a later change in that tick leaves it as it is.
    fn racy(&self, started: SystemTime) -> bool {
        self.changed + self.tick() > started
    }
}

/// The files of a read in load order, each with its stamp (`None`: gone before it was stamped).
type Stamps = Vec<(PathBuf, Option<Stamp>)>;

fn stamp(paths: Vec<PathBuf>) -> Stamps {
    paths
        .into_iter()
        .map(|path| {
            let stamp = fs::metadata(&path).ok().map(|meta| Stamp::of(&meta));
            (path, stamp)
        })
        .collect()
}

/// How a read of the policy files went (module doc).
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Nothing read changed while it was read, and every file had been left alone long enough.
    Whole,
    /// The files changed while they were read: read them again.
    Changed,
    /// Some files changed shortly before the read: look at them again at `at` ([`settled`]).
    Fresh { at: SystemTime },
}

/// Judges a read from the stamps taken before and after it, `started` just before the first;
/// `files` is how many files it loaded (`None` when it failed: an error gives no count).
fn judge(
    before: &[(PathBuf, Option<Stamp>)],
    after: &[(PathBuf, Option<Stamp>)],
    files: Option<usize>,
    started: SystemTime,
) -> Verdict {
    // A file that came and went between the two listings shows only in the count.
    let unchanged = before == after
        && before.iter().all(|(_, stamp)| stamp.is_some())
        && files.is_none_or(|n| n == before.len());
    if !unchanged {
        return Verdict::Changed;
    }
    before
        .iter()
        .filter_map(|(_, stamp)| stamp.map(|s| s.quiet_at()))
        .filter(|&at| at > started)
        .max()
        .map_or(Verdict::Whole, |at| Verdict::Fresh { at })
}

/// Whether a read judged [`Verdict::Fresh`] stands, given its files stamped `now` (same order),
/// at its `at`: each file changed shortly before the read has been renamed over or removed, or
/// is the same file, unchanged, first stamped more than a tick after its change.
fn settled(
    read: &[(PathBuf, Option<Stamp>)],
    now: &[(PathBuf, Option<Stamp>)],
    started: SystemTime,
) -> bool {
    read.iter()
        .zip(now)
        .all(|((_, then), (_, now))| match (then, now) {
            (Some(then), Some(now)) if then.quiet_at() > started && now.file == then.file => {
                now == then && !then.racy(started)
            }
            _ => true,
        })
}

/// What the watcher saw of a file written in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Written {
    /// When its last write was seen.
    last: Instant,
    /// Written and not closed yet (only inotify reports closes).
    open: bool,
}

/// Files written in place, by path under the root: inotify reports each write (`IN_MODIFY`)
/// and the close that ends it (`IN_CLOSE_WRITE`), which tells a writer paused halfway, however
/// long, from one that is done. Renames write nothing in place, so they leave no entry.
#[derive(Debug, Default)]
struct Writers(HashMap<PathBuf, Written>);

impl Writers {
    /// Follows one event under `root`: a write opens or extends a file's entry and its close
    /// ends the write; the path renamed or removed no longer names the file written.
    fn note(&mut self, root: &Path, event: &Event, now: Instant) {
        let paths = event.paths.iter().filter_map(|p| p.strip_prefix(root).ok());
        match event.kind {
            EventKind::Modify(ModifyKind::Data(_)) => {
                // Other watchers report no closes: a write there counts only as a write.
                let open = cfg!(any(target_os = "linux", target_os = "android"));
                for path in paths {
                    self.0
                        .insert(path.to_path_buf(), Written { last: now, open });
                }
            }
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => {
                for path in paths {
                    if let Some(written) = self.0.get_mut(path) {
                        written.open = false;
                    }
                }
            }
            EventKind::Modify(ModifyKind::Name(_)) | EventKind::Remove(_) => {
                for path in paths {
                    self.0.retain(|written, _| !written.starts_with(path));
                }
            }
            _ => {}
        }
    }

    /// Whether a read of `files` (paths under the root) begun at `since` must be done again,
    /// and when: one of them is still open for writing (until its close, or [`WRITER_GRACE`]
    /// after its last write for a writer that never closes), was written after `since`, or was
    /// written less than [`IN_PLACE_QUIET`] before `since` (then once that has passed).
    ///
    /// The quiet time is there because a close does not always end the write: a process that
    /// forked while the file was open closes its copy of the descriptor at `exec`, which
    /// inotify reports as the file's close while the writer goes on, and `> file` truncates
    /// before the data comes.
    fn hold<'a>(
        &mut self,
        files: impl Iterator<Item = &'a Path>,
        since: Instant,
        now: Instant,
    ) -> Option<Instant> {
        // Reads begin later and later: a write closed long before this one began no longer
        // matters.
        self.0.retain(|_, w| {
            if w.open {
                w.last + WRITER_GRACE > now
            } else {
                w.last + IN_PLACE_QUIET > since
            }
        });
        files
            .filter_map(|file| self.0.get(file))
            .map(|w| match w.open {
                true => w.last + WRITER_GRACE,
                false if w.last >= since => now,
                false => w.last + IN_PLACE_QUIET,
            })
            .max()
    }
}

/// How long a file written in place and closed must have been left alone before a read of it
/// stands (see [`Writers::hold`]).
pub const IN_PLACE_QUIET: Duration = Duration::from_millis(250);

/// One read of the policy directory, with the stamps of its files around it.
struct Read {
    set: Result<PolicySet, LoadError>,
    before: Stamps,
    after: Stamps,
    started: SystemTime,
    /// The same moment on the monotonic clock, for the log's `elapsed_ms`.
    clock: std::time::Instant,
}

impl Read {
    fn take(dir: &Path) -> Read {
        let (clock, started) = (std::time::Instant::now(), SystemTime::now());
        let before = stamp(policy_files(&[dir]));
        let set = load_paths(&[dir]);
        let after = stamp(policy_files(&[dir]));
        Read {
            set,
            before,
            after,
            started,
            clock,
        }
    }

    fn verdict(&self) -> Verdict {
        let files = self.set.as_ref().ok().map(|set| set.files);
        judge(&self.before, &self.after, files, self.started)
    }
}

/// Installs a set that was read (or logs why it was rejected), counting the outcome.
fn install_and_log(
    store: &PolicyStore,
    metrics: &Metrics,
    read: Result<PolicySet, LoadError>,
    started: std::time::Instant,
    cause: &str,
) {
    let outcome = read.map(|set| store.install_set(set));
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    metrics.record_reload(outcome.is_ok());
    match outcome {
        Ok(reloaded) => {
            metrics.set_policy(&reloaded.snapshot);
            let s = &reloaded.snapshot;
            let counts = s.counts();
            let unchanged = reloaded.previous.as_ref() == Some(&s.revision);
            tracing::info!(
                cause,
                revision = %s.revision,
                unchanged,
                elapsed_ms,
                files = counts.files,
                servers = counts.servers,
                grants = counts.grants,
                sessions = counts.sessions,
                "policy reloaded"
            );
            for change in &reloaded.mode_changes {
                tracing::warn!(
                    kind = change.kind.as_str(),
                    name = %change.key,
                    from = change.from.as_str(),
                    to = change.to.as_str(),
                    "policy mode changed"
                );
            }
        }
        Err(e) => {
            tracing::error!(
                cause,
                kept = in_force(store).as_deref().unwrap_or("none"),
                "policy reload rejected: {e}; the last good set stays active"
            );
            for problem in e.problems() {
                tracing::error!("{problem}");
            }
        }
    }
}

/// Runs reload work on the blocking pool. Its panic is a failed reload: logged, counted, and
/// the set in force stays.
async fn blocking<T: Send + 'static>(
    store: &PolicyStore,
    metrics: &Metrics,
    cause: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    match tokio::task::spawn_blocking(work).await {
        Ok(done) => Some(done),
        Err(e) => {
            metrics.record_reload(false);
            tracing::error!(
                cause,
                kept = in_force(store).as_deref().unwrap_or("none"),
                "policy reload failed: {e}; the last good set stays active"
            );
            None
        }
    }
}

fn in_force(store: &PolicyStore) -> Option<Text> {
    store.current().as_ref().map(|s| s.revision.clone())
}

/// A read waiting until `at` for the events of the writes made while it was read, and for its
/// recently changed files to settle.
struct Deferred {
    at: Instant,
    read: Read,
    cause: &'static str,
}

/// Where a reload stands after one step.
enum Step {
    Done,
    /// The read was not whole: read again at this time.
    Again(Instant),
    /// The read waits to be judged.
    Deferred(Box<Deferred>),
}

/// Reads the policy directory into the store by the rules of the module doc.
struct Reloader {
    dir: PathBuf,
    store: Arc<PolicyStore>,
    metrics: Arc<Metrics>,
}

impl Reloader {
    async fn read(&self, cause: &'static str) -> Step {
        let dir = self.dir.clone();
        let Some(read) =
            blocking(&self.store, &self.metrics, cause, move || Read::take(&dir)).await
        else {
            return Step::Done;
        };
        // The events of writes made before the files were stamped reach the watcher a little
        // after them: wait for them, and for files changed just before to settle.
        let settled = Instant::now() + SETTLE;
        let at = match read.verdict() {
            Verdict::Changed => {
                tracing::debug!(cause, "policy files changed while read; reading them again");
                return Step::Again(settled);
            }
            Verdict::Whole => settled,
            Verdict::Fresh { at } => {
                let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
                settled.max(Instant::now() + wait)
            }
        };
        Step::Deferred(Box::new(Deferred { at, read, cause }))
    }

    async fn recheck(&self, deferred: Box<Deferred>, events: &mut Events) -> Step {
        let Deferred { read, cause, .. } = *deferred;
        let paths = read.before.iter().map(|(path, _)| path.clone()).collect();
        let Some(now) = blocking(&self.store, &self.metrics, cause, move || stamp(paths)).await
        else {
            return Step::Done;
        };
        if !settled(&read.before, &now, read.started) {
            tracing::debug!(
                cause,
                "policy files were being written while read; reading them again"
            );
            return Step::Again(Instant::now());
        }
        self.install(read, cause, events).await
    }

    async fn install(&self, read: Read, cause: &'static str, events: &mut Events) -> Step {
        events.catch_up().await;
        let files = read
            .before
            .iter()
            .filter_map(|(path, _)| path.strip_prefix(&self.dir).ok());
        let since = Instant::from_std(read.clock);
        if let Some(at) = events.writers.hold(files, since, Instant::now()) {
            // A write's close and its last write are events that bring a read of their own.
            tracing::debug!(
                cause,
                "a policy file was written while read; reading it again"
            );
            return Step::Again(at.max(Instant::now() + SETTLE));
        }
        let (store, metrics) = (Arc::clone(&self.store), Arc::clone(&self.metrics));
        blocking(&self.store, &self.metrics, cause, move || {
            install_and_log(&store, &metrics, read.set, read.clock, cause)
        })
        .await;
        Step::Done
    }
}

/// Identity of the watched root, to notice it being replaced.
#[cfg(unix)]
fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|_| (0, 0))
}

struct Watch {
    watcher: RecommendedWatcher,
    root: PathBuf,
    armed: Option<(u64, u64)>,
}

impl Watch {
    /// Watches the root recursively (again, if it was replaced) and its parent shallowly.
    fn arm(&mut self) {
        let now = identity(&self.root);
        if now.is_some() && now == self.armed {
            return;
        }
        let _ = self.watcher.unwatch(&self.root);
        self.armed = None;
        if now.is_none() {
            return;
        }
        match self.watcher.watch(&self.root, RecursiveMode::Recursive) {
            Ok(()) => self.armed = now,
            Err(e) => tracing::warn!("cannot watch `{}`: {e}", self.root.display()),
        }
    }
}

/// The watcher's events and what they tell: which files are being written, and the reload
/// they ask for.
struct Events {
    queue: mpsc::UnboundedReceiver<notify::Result<Event>>,
    watch: Option<Watch>,
    barrier: Option<Barrier>,
    writers: Writers,
    /// The first and last events not yet read.
    pending: Option<(Instant, Instant)>,
}

impl Events {
    fn take(&mut self, event: notify::Result<Event>) {
        let Some(watch) = &self.watch else {
            return;
        };
        match event {
            Ok(event) => {
                let now = Instant::now();
                self.writers.note(&watch.root, &event, now);
                if triggers_reload(&watch.root, &event) {
                    self.pending = Some((self.pending.map_or(now, |(first, _)| first), now));
                }
            }
            Err(e) => tracing::warn!("policy watch error: {e}"),
        }
    }

    /// Takes every event already queued.
    fn drain(&mut self) {
        while let Ok(event) = self.queue.try_recv() {
            self.take(event);
        }
    }

    /// Takes the events of every write made before now. With a barrier: creates a file of its
    /// own and takes events until that file's arrives (at most [`BARRIER_WAIT`]); a barrier that
    /// fails is given up, and then, as without one, only what is queued already is taken.
    async fn catch_up(&mut self) {
        if let Some(barrier) = &mut self.barrier {
            barrier.next += 1;
            let path = barrier.dir.join(barrier.next.to_string());
            let found = fs::write(&path, b"").is_ok() && {
                let deadline = Instant::now() + BARRIER_WAIT;
                loop {
                    match tokio::time::timeout_at(deadline, self.queue.recv()).await {
                        Ok(Some(Ok(event))) if event.paths.contains(&path) => break true,
                        Ok(Some(event)) => self.take(event),
                        Ok(None) | Err(_) => break false,
                    }
                }
            };
            let _ = fs::remove_file(&path);
            if !found {
                tracing::warn!(
                    "the reload barrier in `{}` got no event; reloads now rely on timing alone",
                    path.display()
                );
                self.barrier = None;
            }
        }
        self.drain();
    }
}

/// How long [`Events::catch_up`] waits for its barrier's event.
const BARRIER_WAIT: Duration = Duration::from_secs(1);

/// A directory of our own that the policy watcher follows too. One watcher reports its events
/// in the order they happened (one inotify queue), so once the event of a file created there
/// arrives, so have the events of every write made before it, however late the watcher's
/// thread runs on a loaded machine: rule 2 then does not depend on [`SETTLE`] being long
/// enough.
struct Barrier {
    dir: PathBuf,
    next: u64,
}

impl Barrier {
    /// A new directory under the system's temporary directory, watched by `watch`; `None` when
    /// it cannot be made or watched, or would be inside the policy directory.
    fn start(watch: &mut Watch) -> Option<Barrier> {
        static STARTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::path::absolute(std::env::temp_dir())
            .ok()?
            .join(format!("mcp-authz-reload-{}-{n}", std::process::id()));
        if dir.starts_with(&watch.root) || fs::create_dir_all(&dir).is_err() {
            return None;
        }
        let barrier = Barrier { dir, next: 0 };
        match watch
            .watcher
            .watch(&barrier.dir, RecursiveMode::NonRecursive)
        {
            Ok(()) => Some(barrier),
            Err(e) => {
                tracing::debug!("cannot watch `{}`: {e}", barrier.dir.display());
                None
            }
        }
    }
}

impl Drop for Barrier {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Follows changes under `dir` (and SIGHUP) until `shutdown`, reloading `store`.
///
/// The watches and the SIGHUP handler are in place when this returns, before the future is
/// first polled: a change or a SIGHUP right after the first load is never missed (nor does a
/// SIGHUP then end the process, SIGHUP's default action).
pub fn watch(
    dir: PathBuf,
    store: Arc<PolicyStore>,
    metrics: Arc<Metrics>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> impl Future<Output = ()> + Send {
    let (tx, queue) = mpsc::unbounded_channel();
    let watcher = notify::recommended_watcher(move |event: notify::Result<Event>| {
        let _ = tx.send(event);
    });
    let mut watch = match watcher {
        Ok(watcher) => {
            let mut watch = Watch {
                watcher,
                root: std::path::absolute(&dir).unwrap_or(dir.clone()),
                armed: None,
            };
            watch.arm();
            if let Some(parent) = watch.root.parent().map(Path::to_path_buf)
                && let Err(e) = watch.watcher.watch(&parent, RecursiveMode::NonRecursive)
            {
                tracing::debug!("cannot watch `{}`: {e}", parent.display());
            }
            Some(watch)
        }
        Err(e) => {
            tracing::error!("cannot watch the policy directory ({e}); reload with SIGHUP");
            None
        }
    };
    let barrier = watch.as_mut().and_then(Barrier::start);
    let events = Events {
        queue,
        watch,
        barrier,
        writers: Writers::default(),
        pending: None,
    };
    let reloader = Reloader {
        dir,
        store,
        metrics,
    };
    let hangup = hangup_stream();
    follow(events, reloader, hangup, shutdown)
}

/// The loop of [`watch`].
async fn follow(
    mut events: Events,
    reloader: Reloader,
    mut hangup: Hangup,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    // When to read again (a read that was not whole, SIGHUP), and why.
    let mut again: Option<(Instant, &'static str)> = None;
    let mut deferred: Option<Box<Deferred>> = None;
    loop {
        let debounced = events
            .pending
            .map(|(first, last)| (last + DEBOUNCE).min(first + MAX_DELAY));
        let deadline = [
            debounced,
            again.map(|(at, _)| at),
            deferred.as_ref().map(|d| d.at),
        ]
        .into_iter()
        .flatten()
        .min();
        tokio::select! {
            event = events.queue.recv(), if events.watch.is_some() => match event {
                Some(event) => events.take(event),
                None => return,
            },
            () = sleep_until(deadline) => {
                let (step, cause) = match deferred.take() {
                    Some(due) if due.at <= Instant::now() => {
                        let cause = due.cause;
                        (reloader.recheck(due, &mut events).await, cause)
                    }
                    // A newer read replaces one still waiting.
                    _ => {
                        let cause = again.take().map_or(FILE_CHANGE, |(_, cause)| cause);
                        // Events that come while the files are read bring the next read.
                        events.pending = None;
                        if let Some(watch) = &mut events.watch {
                            watch.arm();
                        }
                        (reloader.read(cause).await, cause)
                    }
                };
                match step {
                    Step::Done => {}
                    // A sooner read already asked for (SIGHUP) keeps its time and cause.
                    Step::Again(at) => if again.is_none_or(|(sooner, _)| sooner > at) {
                        again = Some((at, cause));
                    },
                    Step::Deferred(due) => deferred = Some(due),
                }
            }
            () = next_hangup(&mut hangup) => again = Some((Instant::now(), "SIGHUP")),
            _ = shutdown.changed() => return,
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = ();

#[cfg(unix)]
fn hangup_stream() -> Hangup {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}

#[cfg(not(unix))]
fn hangup_stream() -> Hangup {}

#[cfg(unix)]
async fn next_hangup(hangup: &mut Hangup) {
    match hangup {
        Some(signal) => {
            if signal.recv().await.is_none() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn next_hangup(_: &mut Hangup) {
    std::future::pending().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange, RemoveKind, RenameMode};

    fn event(kind: EventKind, paths: &[&str]) -> Event {
        Event {
            kind,
            paths: paths.iter().map(PathBuf::from).collect(),
            attrs: Default::default(),
        }
    }

    #[test]
    fn which_events_reload() {
        let root = Path::new("/policies");
        let yes = [
            event(
                EventKind::Modify(ModifyKind::Any),
                &["/policies/grants.yaml"],
            ),
            event(
                EventKind::Create(CreateKind::File),
                &["/policies/sub/new.yml"],
            ),
            event(EventKind::Remove(RemoveKind::File), &["/policies/old.json"]),
            event(
                EventKind::Access(AccessKind::Close(AccessMode::Write)),
                &["/policies/grants.yaml"],
            ),
            // Rename into place: the temporary name does not count, the target does.
            event(
                EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
                &["/policies/.grants.yaml.tmp", "/policies/grants.yaml"],
            ),
            // A new or removed sub-directory.
            event(EventKind::Create(CreateKind::Folder), &["/policies/team-a"]),
            event(EventKind::Remove(RemoveKind::Folder), &["/policies/team-a"]),
            // The ConfigMap swap: `..data` replaced by rename, old timestamp dir removed.
            event(
                EventKind::Modify(ModifyKind::Name(RenameMode::To)),
                &["/policies/..data"],
            ),
            event(
                EventKind::Remove(RemoveKind::Folder),
                &["/policies/..2026_11_26_10_00_00.1"],
            ),
            // The root itself, seen from the parent watch.
            event(EventKind::Create(CreateKind::Folder), &["/policies"]),
            event(EventKind::Any, &["/policies/x.yaml"]),
        ];
        for e in &yes {
            assert!(triggers_reload(root, e), "{e:?}");
        }
        let no = [
            event(
                EventKind::Access(AccessKind::Open(AccessMode::Any)),
                &["/policies/grants.yaml"],
            ),
            event(
                EventKind::Access(AccessKind::Close(AccessMode::Read)),
                &["/policies/grants.yaml"],
            ),
            event(EventKind::Modify(ModifyKind::Any), &["/policies/notes.txt"]),
            event(
                EventKind::Create(CreateKind::File),
                &["/policies/.grants.yaml.swp"],
            ),
            event(
                EventKind::Modify(ModifyKind::Any),
                &["/policies/.git/index"],
            ),
            event(
                EventKind::Modify(ModifyKind::Any),
                &["/policies/grants.yaml~"],
            ),
            event(EventKind::Create(CreateKind::Folder), &["/elsewhere"]),
            event(
                EventKind::Modify(ModifyKind::Any),
                &["/policies-old/x.yaml"],
            ),
        ];
        for e in &no {
            assert!(!triggers_reload(root, e), "{e:?}");
        }
    }

    /// A moment on a clock with fractions of a second, `ms` after an arbitrary origin.
    fn time(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::new(1_800_000_000, 123) + Duration::from_millis(ms)
    }

    fn stamped(file: u64, len: u64, changed: SystemTime) -> Option<Stamp> {
        Some(Stamp {
            file: (1, file),
            len,
            modified: changed,
            changed,
        })
    }

    fn files(stamps: &[Option<Stamp>]) -> Stamps {
        stamps
            .iter()
            .enumerate()
            .map(|(n, stamp)| (PathBuf::from(format!("/p/{n}.yaml")), *stamp))
            .collect()
    }

    #[test]
    fn a_read_is_whole_only_when_nothing_it_read_changed() {
        let started = time(1_000);
        let old = time(0);
        let before = files(&[stamped(7, 100, old), stamped(8, 50, old)]);
        assert_eq!(judge(&before, &before, Some(2), started), Verdict::Whole);
        // A failed read has no count; its stamps still decide.
        assert_eq!(judge(&before, &before, None, started), Verdict::Whole);
        let changed = [
            // Truncated then written within one tick: only the size tells.
            files(&[stamped(7, 99, old), stamped(8, 50, old)]),
            // Renamed over.
            files(&[stamped(9, 100, old), stamped(8, 50, old)]),
            // Written again.
            files(&[stamped(7, 100, time(990)), stamped(8, 50, old)]),
            // A file added, one removed.
            files(&[
                stamped(7, 100, old),
                stamped(8, 50, old),
                stamped(3, 1, old),
            ]),
            files(&[stamped(7, 100, old)]),
            // Gone between the listing and its stamp.
            files(&[stamped(7, 100, old), None]),
        ];
        for after in &changed {
            assert_eq!(
                judge(&before, after, None, started),
                Verdict::Changed,
                "{after:?}"
            );
            assert_eq!(
                judge(after, &before, None, started),
                Verdict::Changed,
                "{after:?}"
            );
        }
        // A file that came and went between the listings: the load counted one more.
        assert_eq!(judge(&before, &before, Some(3), started), Verdict::Changed);
    }

    #[test]
    fn files_changed_just_before_the_read_are_looked_at_again() {
        let started = time(1_000);
        let read = files(&[stamped(7, 100, time(0)), stamped(8, 50, time(990))]);
        assert_eq!(
            judge(&read, &read, Some(2), started),
            Verdict::Fresh {
                at: time(990) + SETTLE
            }
        );
        // Changed exactly SETTLE before: settled.
        let read = files(&[stamped(7, 100, started - SETTLE)]);
        assert_eq!(judge(&read, &read, Some(1), started), Verdict::Whole);
        // A clock that counts whole seconds: a change 1.5 s ago may still be in its tick.
        let whole_second = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let read = files(&[stamped(7, 100, whole_second)]);
        let started = whole_second + Duration::from_millis(1_500);
        assert_eq!(
            judge(&read, &read, Some(1), started),
            Verdict::Fresh {
                at: whole_second + COARSE_TICK
            }
        );
    }

    #[test]
    fn a_fresh_read_stands_if_its_files_were_left_alone_or_replaced() {
        let started = time(1_000);
        // Stamped 30 ms after its change: more than a tick.
        let change = time(970);
        let read = files(&[stamped(7, 100, change), stamped(8, 50, time(0))]);
        let stands = [
            read.clone(),
            // Renamed over, or removed, since.
            files(&[stamped(9, 120, time(1_010)), stamped(8, 50, time(0))]),
            files(&[None, stamped(8, 50, time(0))]),
            // A file that had settled before the read may change after it.
            files(&[stamped(7, 100, change), stamped(8, 60, time(1_010))]),
        ];
        for now in &stands {
            assert!(settled(&read, now, started), "{now:?}");
        }
        // The same file written again since: its write was under way.
        let now = files(&[stamped(7, 140, time(1_010)), stamped(8, 50, time(0))]);
        assert!(!settled(&read, &now, started));
        // Stamped 5 ms after its change, within a tick: a change in that tick would not show.
        let racy = files(&[stamped(7, 100, time(995))]);
        assert!(!settled(&racy, &racy, started));
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn a_file_written_in_place_holds_reads_back() {
        let root = Path::new("/policies");
        let t = Instant::now();
        let ms = Duration::from_millis(1);
        let grants = [Path::new("grants.yaml")];
        let write = event(
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            &["/policies/grants.yaml"],
        );
        let close = event(
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            &["/policies/grants.yaml"],
        );
        let mut writers = Writers::default();
        writers.note(root, &write, t);
        // Written and not closed, whenever the read began: until its close, or the grace.
        for since in [t - ms, t + ms] {
            assert_eq!(
                writers.hold(grants.into_iter(), since, t),
                Some(t + WRITER_GRACE)
            );
        }
        assert_eq!(
            writers.hold([Path::new("x.yaml")].into_iter(), t - ms, t),
            None
        );
        // Reading it does not end the write; closing it does.
        let read = event(
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            &["/policies/grants.yaml"],
        );
        writers.note(root, &read, t);
        assert!(writers.hold(grants.into_iter(), t + ms, t).is_some());
        writers.note(root, &close, t);
        // Closed, but written after the read began: read again now.
        assert_eq!(
            writers.hold(grants.into_iter(), t - ms, t + ms),
            Some(t + ms)
        );
        // Written and closed just before the read began: read again once it has been quiet.
        assert_eq!(
            writers.hold(grants.into_iter(), t + ms, t + ms),
            Some(t + IN_PLACE_QUIET)
        );
        // Written and closed long before the read began: no hold.
        let quiet = t + IN_PLACE_QUIET;
        assert_eq!(writers.hold(grants.into_iter(), quiet, quiet), None);

        // A writer that never closes holds reads back for WRITER_GRACE.
        let mut writers = Writers::default();
        writers.note(root, &write, t);
        let later = t + WRITER_GRACE;
        assert_eq!(writers.hold(grants.into_iter(), later, later), None);

        // The path renamed over or removed, the root replaced: no longer the file written.
        for end in [
            event(
                EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
                &["/policies/.grants.yaml.tmp", "/policies/grants.yaml"],
            ),
            event(
                EventKind::Remove(RemoveKind::File),
                &["/policies/grants.yaml"],
            ),
            event(EventKind::Remove(RemoveKind::Folder), &["/policies"]),
        ] {
            let mut writers = Writers::default();
            writers.note(root, &write, t);
            writers.note(root, &end, t);
            assert_eq!(writers.hold(grants.into_iter(), t - ms, t), None, "{end:?}");
        }
    }

    #[tokio::test]
    async fn a_reload_that_panics_is_a_failure_and_the_set_stays() {
        let store = PolicyStore::default();
        store.install_set(crate::policy::load_files(&[]).unwrap());
        let kept = in_force(&store);
        let metrics = Metrics::new();
        let done = blocking(&store, &metrics, "test", || -> () {
            panic!("a reload panics")
        })
        .await;
        assert!(done.is_none());
        assert!(
            metrics
                .encode()
                .contains("mcp_authz_policy_reloads_total{result=\"failure\"} 1"),
            "{}",
            metrics.encode()
        );
        assert_eq!(in_force(&store), kept);
        assert_eq!(blocking(&store, &metrics, "test", || 7).await, Some(7));
    }
}
