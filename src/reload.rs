//! The policy store and hot reload: a notify watcher on the policy directory, SIGHUP, and the
//! arc-swap that replaces the compiled snapshot in one step.
//!
//! Readers take an `Arc` of the snapshot for the length of one Check, so a swap never changes
//! the policy under a Check in flight, and an invalid set never replaces a good one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::policy::load::is_policy_file_name;
use crate::policy::snapshot::{ModeChange, mode_changes};
use crate::policy::{LoadError, PolicySet, Snapshot, Text, load_paths};

/// Quiet time after the last file event before reloading: editors and `kubectl cp` write in
/// several steps.
pub const DEBOUNCE: Duration = Duration::from_millis(150);
/// Longest a reload waits while events keep coming.
pub const MAX_DELAY: Duration = Duration::from_millis(800);
/// How long after reading the files a reload waits for the events of writes that were under
/// way while it read (they reach the watcher a little after the write itself).
const SETTLE: Duration = Duration::from_millis(50);

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

/// Re-reads `dir` into `store`, logging and counting the outcome. Returns whether the new set
/// was taken.
pub fn reload_and_log(store: &PolicyStore, metrics: &Metrics, dir: &Path, cause: &str) -> bool {
    let started = std::time::Instant::now();
    let read = load_paths(&[dir]);
    settle(store, metrics, read, started, cause)
}

/// Installs a set that was read (or logs why it was rejected), counting the outcome.
fn settle(
    store: &PolicyStore,
    metrics: &Metrics,
    read: Result<PolicySet, LoadError>,
    started: std::time::Instant,
    cause: &str,
) -> bool {
    let outcome = read.map(|set| store.install_set(set));
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    metrics.record_reload(outcome.is_ok());
    match outcome {
        Ok(reloaded) => {
            metrics.set_policy(&reloaded.snapshot);
            let s = &reloaded.snapshot;
            let unchanged = reloaded.previous.as_ref() == Some(&s.revision);
            tracing::info!(
                cause,
                revision = %s.revision,
                unchanged,
                elapsed_ms,
                files = s.counts.files,
                servers = s.counts.servers,
                grants = s.counts.grants,
                sessions = s.counts.sessions,
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
            true
        }
        Err(e) => {
            let kept = store.current().as_ref().map(|s| s.revision.clone());
            tracing::error!(
                cause,
                kept = kept.as_deref().unwrap_or("none"),
                "policy reload rejected: {e}; the last good set stays active"
            );
            for problem in e.problems() {
                tracing::error!("{problem}");
            }
            false
        }
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

/// Follows changes under `dir` (and SIGHUP) until `shutdown`, reloading `store`.
pub async fn watch(
    dir: PathBuf,
    store: Arc<PolicyStore>,
    metrics: Arc<Metrics>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let watcher = notify::recommended_watcher(move |event: notify::Result<Event>| {
        let _ = tx.send(event);
    });
    let mut watch = match watcher {
        Ok(watcher) => Watch {
            watcher,
            root: std::path::absolute(&dir).unwrap_or(dir.clone()),
            armed: None,
        },
        Err(e) => {
            tracing::error!("cannot watch the policy directory ({e}); reload with SIGHUP");
            return sighup_only(dir, store, metrics, shutdown).await;
        }
    };
    watch.arm();
    if let Some(parent) = watch.root.parent().map(Path::to_path_buf)
        && let Err(e) = watch.watcher.watch(&parent, RecursiveMode::NonRecursive)
    {
        tracing::debug!("cannot watch `{}`: {e}", parent.display());
    }
    let mut hangup = hangup_stream();
    let mut pending: Option<(Instant, Instant)> = None;
    loop {
        let deadline = pending.map(|(first, last)| (last + DEBOUNCE).min(first + MAX_DELAY));
        tokio::select! {
            event = rx.recv() => match event {
                Some(Ok(event)) if triggers_reload(&watch.root, &event) => {
                    let now = Instant::now();
                    pending = Some((pending.map_or(now, |(first, _)| first), now));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => tracing::warn!("policy watch error: {e}"),
                None => return,
            },
            () = sleep_until(deadline) => {
                pending = None;
                watch.arm();
                let started = std::time::Instant::now();
                let source = dir.clone();
                let Ok(read) = tokio::task::spawn_blocking(move || load_paths(&[source])).await else {
                    continue;
                };
                // Changes made while the files were read mean some were still being written (a
                // forced reload amid steady writes, a truncate then write): the set may be
                // torn, so it is read again once the directory is quiet.
                tokio::time::sleep(SETTLE).await;
                let mut torn = false;
                while let Ok(event) = rx.try_recv() {
                    torn |= event.is_ok_and(|e| triggers_reload(&watch.root, &e));
                }
                if torn {
                    let now = Instant::now();
                    pending = Some((now, now));
                    continue;
                }
                let (store, metrics) = (Arc::clone(&store), Arc::clone(&metrics));
                let _ = tokio::task::spawn_blocking(move || {
                    settle(&store, &metrics, read, started, "file change")
                })
                .await;
            }
            () = next_hangup(&mut hangup) => {
                watch.arm();
                reload_in_background(&store, &metrics, &dir, "SIGHUP").await;
            }
            _ = shutdown.changed() => return,
        }
    }
}

async fn sighup_only(
    dir: PathBuf,
    store: Arc<PolicyStore>,
    metrics: Arc<Metrics>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut hangup = hangup_stream();
    loop {
        tokio::select! {
            () = next_hangup(&mut hangup) => {
                reload_in_background(&store, &metrics, &dir, "SIGHUP").await;
            }
            _ = shutdown.changed() => return,
        }
    }
}

async fn reload_in_background(
    store: &Arc<PolicyStore>,
    metrics: &Arc<Metrics>,
    dir: &Path,
    cause: &'static str,
) {
    let (store, metrics, dir) = (Arc::clone(store), Arc::clone(metrics), dir.to_path_buf());
    let _ =
        tokio::task::spawn_blocking(move || reload_and_log(&store, &metrics, &dir, cause)).await;
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
    use notify::event::{CreateKind, ModifyKind, RemoveKind, RenameMode};

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
}
