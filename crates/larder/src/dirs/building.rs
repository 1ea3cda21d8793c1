//! Building a recipe's directory once for everyone who asks.
//!
//! The first to attach is the builder: the process that runs `use`, not the
//! holder (which may be the calling shell), so a builder killed while its
//! shell lives is seen dead and taken over. Everyone else waits, showing who
//! builds and how far along, and polls the coordinator. A build goes into a
//! staging folder beside the directory, named after its builder and the
//! record's generation, and is renamed into place only when complete, before
//! the record turns ready: nobody ever sees a half-built directory. The
//! staging folder of a dead builder is thrown away by whoever builds next.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use super::{DirSpec, Dirs};
use crate::build::{self, Budget, Build};
use crate::coord::{BuildProgress, Coordinator, DirRecord, DirState, Holder, now_ms};
use crate::error::{Error, ErrorKind, Result};
use crate::holder::ProcessId;
use crate::progress::Progress;

/// How often a builder tells waiters how far it has come.
const REPORT_EVERY: Duration = Duration::from_millis(200);
/// The longest pause between two looks of a waiter.
const POLL_MAX: Duration = Duration::from_millis(200);

impl Dirs {
    /// Returns `record` once it is ready: at once if it is, after building it
    /// if nobody alive builds it, or after waiting for whoever does.
    pub(super) fn wait_or_build(
        &self,
        mut record: DirRecord,
        spec: &DirSpec,
        holder: &Holder,
        progress: &dyn Progress,
    ) -> Result<DirRecord> {
        let name = record.name.clone();
        let generation = record.generation;
        // Right after attaching, a failed build is built again; later, it
        // is the build this process waited for, and its failure is ours.
        let mut fresh = true;
        let mut waiting = Waiting::default();
        let mut watch = Watch { lock: build_lock_path(Path::new(&record.path), &name), rx: None };
        let mut pause = Duration::from_millis(10);
        loop {
            match &record.state {
                DirState::Ready => {
                    waiting.end(progress);
                    if fresh && spec.refresh {
                        tracing::warn!(
                            "directory {name} was built already and is in use, so --refresh \
                             downloaded nothing; it is built afresh once its holders let it go \
                             (larder dir show {name} lists them)"
                        );
                    }
                    return Ok(record);
                }
                DirState::Deleting { .. } => {
                    waiting.end(progress);
                    return Err(Error::new(
                        ErrorKind::Conflict,
                        format!(
                            "directory {name} was deleted (larder dir rm --force) while this waited for it; try again"
                        ),
                    ));
                }
                DirState::Failed { error } if !fresh => {
                    waiting.end(progress);
                    self.release(&name, holder);
                    // Waiters fail as the builder did: the same kind, the same exit code.
                    let (kind, error) = split_failure(error);
                    return Err(Error::new(
                        kind,
                        format!("building directory {name} failed: {error}"),
                    ));
                }
                DirState::Building { by }
                    if (*by != self.me && by.is_alive(now_ms()))
                        || (*by == self.me && BuildingHere::is_held(&record.path)) =>
                {
                    waiting.show(progress, &record, by);
                    let started = Instant::now();
                    // Woken at once if the builder's lock is free: it has
                    // finished or died, or not taken its lock yet; in the
                    // last case, pause rather than spin.
                    if watch.wait(pause) && started.elapsed() < Duration::from_millis(2) {
                        std::thread::sleep(pause);
                    }
                    pause = (pause * 2).min(POLL_MAX);
                    // Where grants are leases, a builder that looks alive from
                    // here (on another host, or stopped) may have lost its
                    // lease: the coordinator decides whether it is handed over.
                    if *by != self.me && self.coord.lease().is_some() && !spec.recipe.is_empty() {
                        self.claim_and_build(&record, fresh, spec, holder, progress, &mut waiting)?;
                    }
                }
                _ if spec.recipe.is_empty() => {
                    waiting.end(progress);
                    self.release(&name, holder);
                    return Err(Error::new(
                        ErrorKind::Conflict,
                        format!(
                            "directory {name} is built from a recipe and is not built yet; give its recipe to build it (larder dir show {name} shows it)"
                        ),
                    ));
                }
                _ => self.claim_and_build(&record, fresh, spec, holder, progress, &mut waiting)?,
            }
            fresh = false;
            let gone = || {
                Error::new(
                    ErrorKind::Conflict,
                    format!("directory {name} was deleted while this waited for it; try again"),
                )
            };
            record = self.coord.peek(&name)?.ok_or_else(gone)?;
            if record.state == DirState::Ready {
                // Its live holders, for the caller.
                record = self.coord.get(&name)?.ok_or_else(gone)?;
            }
            // Another generation is another directory, which this does not hold.
            if record.generation != generation {
                return Err(gone());
            }
        }
    }

    /// Builds `record` if the coordinator hands the build to this process:
    /// nobody builds it, its builder died or lost its lease, or its last
    /// build failed.
    fn claim_and_build(
        &self,
        record: &DirRecord,
        fresh: bool,
        spec: &DirSpec,
        holder: &Holder,
        progress: &dyn Progress,
        waiting: &mut Waiting,
    ) -> Result<()> {
        let name = &record.name;
        // One build per directory in this process, whichever thread asks.
        if let Some(here) = BuildingHere::enter(&record.path)
            && let Some(claimed) = self.coord.claim_build(name, &self.me)?
        {
            waiting.end(progress);
            if let DirState::Building { by } = &record.state
                && !fresh
            {
                let what = if by.is_alive(now_ms()) { "lost its lease" } else { "died" };
                tracing::warn!("the builder of {name} ({by}) {what}; building it here");
            }
            self.run_build(&claimed, spec, holder, progress)?;
            drop(here);
        }
        Ok(())
    }

    /// Builds `record` as its claimed builder, and marks it ready or failed.
    /// On failure this holder's hold is released too: a failed build leaves
    /// nothing behind for it.
    fn run_build(
        &self,
        record: &DirRecord,
        spec: &DirSpec,
        holder: &Holder,
        progress: &dyn Progress,
    ) -> Result<()> {
        let name = &record.name;
        tracing::info!("building directory {name} from `{}`", spec.recipe);
        // A build taken over from another host goes into this host's copy.
        let here = record.has_copy_here();
        let path = if here {
            PathBuf::from(&record.path)
        } else {
            self.place(name, spec.size.max(record.size))?.join(name)
        };
        // Held until the record says how the build ended: its release wakes
        // those who wait, and so does the kernel's if this process dies.
        let lock = lock_for_build(&build_lock_path(&path, name));
        let built = std::thread::scope(|scope| {
            // Where grants are leases, they are renewed while the build runs;
            // a stopped builder stops renewing, and is taken over.
            let (stop, stopped) = std::sync::mpsc::channel::<()>();
            if let Some(lease) = self.coord.lease() {
                scope.spawn(move || {
                    while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(lease / 3) {
                        match self.coord.renew_grant(name, record.fence, &self.me) {
                            Ok(true) => {}
                            Ok(false) => break,
                            Err(e) => tracing::debug!("renewing the build of {name}: {e}"),
                        }
                    }
                });
            }
            let built = self
                .build_into_place(record, spec, &path, Some(record.fence), progress)
                .and_then(|()| {
                    if here {
                        return Ok(());
                    }
                    let at = path.display().to_string();
                    match self.coord.add_copy(name, record.generation, &at)? {
                        Some(_) => Ok(()),
                        None => Err(build_taken_over(name)),
                    }
                });
            drop(stop);
            built
        });
        let result = match built {
            Ok(()) => {
                if self.coord.finish_build(name, record.fence, &self.me)? {
                    Ok(())
                } else {
                    Err(build_taken_over(name))
                }
            }
            Err(e) => {
                if let Err(e) =
                    self.coord.fail_build(name, record.fence, &self.me, &failure_text(&e))
                {
                    tracing::warn!("recording the failed build of {name}: {e}");
                }
                self.release(name, holder);
                Err(e)
            }
        };
        drop(lock);
        result
    }

    /// Builds `record`'s recipe into `path`: under the grant `fence`, whose
    /// waiters are told how far it has come, or without one for this host's
    /// copy of a directory built elsewhere.
    pub(super) fn build_into_place(
        &self,
        record: &DirRecord,
        spec: &DirSpec,
        path: &Path,
        fence: Option<u64>,
        progress: &dyn Progress,
    ) -> Result<()> {
        let name = &record.name;
        let path = path.to_path_buf();
        let parent = path.parent().ok_or_else(|| {
            Error::new(ErrorKind::InvalidInput, format!("directory {name} has no parent folder"))
        })?;
        fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
        remove_stale_leftovers(parent);
        // A folder already at the path was renamed there by a builder that
        // died before it marked the record ready: nobody vouches for it.
        move_aside(&path, name)?;
        let staging = parent.join(staging_name(name, ProcessId::current(), record.generation));
        let mut scratch = staging.clone().into_os_string();
        scratch.push(".tmp");
        let scratch = PathBuf::from(scratch);
        let _ = fs::remove_dir_all(&staging);
        fs::create_dir(&staging).map_err(|e| Error::io("create", &staging, e))?;
        let result = (|| {
            let store = self.store()?;
            let budget = Budget::new((spec.size > 0).then_some(spec.size));
            let reporter = Reporter {
                inner: progress,
                coord: &*self.coord,
                name,
                fence,
                me: &self.me,
                budget: &budget,
                state: Mutex::new(ReportState::default()),
            };
            let b = Build {
                store,
                http: &self.http,
                remotes: &self.remotes,
                env: &self.env,
                progress: &reporter,
                budget: &budget,
                scratch: &scratch,
                refresh: spec.refresh,
                tiers: self.remote_tiers.as_deref(),
            };
            build::build(&b, &spec.recipe, &staging)?;
            // In a folder shared with a group, whichever user lets the
            // directory go last deletes it: the group gets the owner's rights.
            if crate::sharing::folder_is_shared(parent) {
                crate::sharing::share_tree(&staging)
                    .map_err(|e| Error::io("share with the group", &staging, e))?;
            }
            // Durable before it is published: a power cut must not leave a
            // ready record over files that never reached the disk.
            crate::fsutil::sync_filesystem(&staging)
                .map_err(|e| Error::io("flush", &staging, e))?;
            // A builder stopped past its lease must not put its build over
            // the one that took over: the grant is checked (and renewed)
            // right before the build is put in place.
            if let Some(fence) = fence
                && self.coord.lease().is_some()
                && !self.coord.renew_grant(name, fence, &self.me)?
            {
                return Err(build_taken_over(name));
            }
            if let Err(e) = fs::rename(&staging, &path) {
                // Something appeared at the path meanwhile (a builder of a
                // deleted record finishing late): not ours to keep.
                move_aside(&path, name)?;
                fs::rename(&staging, &path).map_err(|_| Error::io("move into place", &path, e))?;
            }
            fs::File::open(parent)
                .and_then(|dir| dir.sync_all())
                .map_err(|e| Error::io("flush", parent, e))
        })();
        let _ = fs::remove_dir_all(&scratch);
        if result.is_err() {
            let _ = fs::remove_dir_all(&staging);
        }
        result
    }
}

fn build_taken_over(name: &str) -> Error {
    Error::new(
        ErrorKind::Conflict,
        format!(
            "the build of directory {name} was taken over by another larder process (this one \
             was stopped or cut off from the coordinator past its lease); its result was thrown away"
        ),
    )
}

/// Renames whatever is at `path` to a trash name beside it and deletes it.
pub(super) fn move_aside(path: &Path, name: &str) -> Result<()> {
    if path.symlink_metadata().is_err() {
        return Ok(());
    }
    let aside = trash_path(path, name);
    fs::rename(path, &aside).map_err(|e| Error::io("move aside", path, e))?;
    if let Err(e) = fs::remove_dir_all(&aside) {
        tracing::warn!("cannot delete {}: {e}", aside.display());
    }
    Ok(())
}

/// A fresh name beside `path` for a folder on its way out, naming its owner,
/// so a folder whose deleter died is found and finished later.
pub(super) fn trash_path(path: &Path, name: &str) -> PathBuf {
    static NONCE: AtomicU64 = AtomicU64::new(0);
    let nonce = NONCE.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".larder-trash-{name}.{}.{nonce}", ProcessId::current()))
}

/// The directories this process is building now, by path: one build per
/// directory, even when several threads ask for it at once.
struct BuildingHere(String);

static BUILDING_HERE: Mutex<Option<HashSet<String>>> = Mutex::new(None);

impl BuildingHere {
    fn set() -> std::sync::MutexGuard<'static, Option<HashSet<String>>> {
        BUILDING_HERE.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks `path` as built here, unless another thread already builds it.
    fn enter(path: &str) -> Option<BuildingHere> {
        let mut set = BuildingHere::set();
        let new = set.get_or_insert_with(HashSet::new).insert(path.to_string());
        new.then(|| BuildingHere(path.to_string()))
    }

    fn is_held(path: &str) -> bool {
        BuildingHere::set().as_ref().is_some_and(|s| s.contains(path))
    }
}

impl Drop for BuildingHere {
    fn drop(&mut self) {
        if let Some(set) = BuildingHere::set().as_mut() {
            set.remove(&self.0);
        }
    }
}

/// The file a builder of the directory at `path` holds locked while it builds.
/// It is only a way to wake those who wait; the coordinator decides who builds.
pub(super) fn build_lock_path(path: &Path, name: &str) -> PathBuf {
    path.with_file_name(format!(".larder-build-{name}.lock"))
}

/// Locks `path` for a build. Without it (a folder that refuses the file), those
/// who wait still poll, only less promptly.
pub(super) fn lock_for_build(path: &Path) -> Option<fs::File> {
    if let Some(parent) = path.parent() {
        let _ = fs::create_dir_all(parent);
    }
    let file = fs::OpenOptions::new().create(true).truncate(false).write(true).open(path).ok()?;
    file.lock().ok()?;
    Some(file)
}

/// Waits for a builder's lock to be free, on a thread of its own, so that a
/// waiter can also wake every so often to show the builder's progress.
struct Watch {
    lock: PathBuf,
    rx: Option<std::sync::mpsc::Receiver<()>>,
}

impl Watch {
    /// Waits up to `pause`; true if the lock was free (or cannot be had).
    fn wait(&mut self, pause: Duration) -> bool {
        let rx = self.rx.get_or_insert_with(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            let lock = self.lock.clone();
            std::thread::spawn(move || {
                if let Ok(file) = fs::File::open(&lock)
                    && file.lock_shared().is_ok()
                {
                    let _ = file.unlock();
                }
                let _ = tx.send(());
            });
            rx
        });
        match rx.recv_timeout(pause) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => false,
            _ => {
                self.rx = None;
                true
            }
        }
    }
}

/// The staging folder of `owner`'s build of generation `generation` of `name`.
fn staging_name(name: &str, owner: ProcessId, generation: u64) -> String {
    format!(".larder-build-{name}.{owner}.{generation}")
}

/// Removes the staging, scratch and trash folders in `parent` whose owners
/// died, whatever directory they were for:
/// `.larder-build-NAME.OWNER.GENERATION[.tmp]` and
/// `.larder-trash-NAME.OWNER.NONCE` (a killed `unuse` or builder leaves them;
/// an unnamed directory's name never comes back to clean them up).
pub(super) fn remove_stale_leftovers(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else { return };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else { continue };
        if !(file_name.starts_with(".larder-build-") || file_name.starts_with(".larder-trash-")) {
            continue;
        }
        // The name may hold dots: read the owner from the right.
        let rest = file_name.strip_suffix(".tmp").unwrap_or(file_name);
        let mut parts = rest.rsplitn(3, '.');
        let (Some(counter), Some(owner), Some(_)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if counter.parse::<u64>().is_err() {
            continue; // a build's lock file, which lives as long as its directory
        }
        let Ok(owner) = owner.parse::<ProcessId>() else { continue };
        if !owner.is_alive() {
            tracing::info!("removing {}, left by a process that died", entry.path().display());
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Passes a builder's progress on to its own display, and to the coordinator
/// for those who wait.
struct Reporter<'a> {
    inner: &'a dyn Progress,
    coord: &'a dyn Coordinator,
    name: &'a str,
    /// The build's grant; `None`: a host's own copy, which nobody waits on
    /// through the coordinator.
    fence: Option<u64>,
    me: &'a Holder,
    budget: &'a Budget,
    state: Mutex<ReportState>,
}

#[derive(Default)]
struct ReportState {
    phase: String,
    done: u64,
    total: Option<u64>,
    last: Option<Instant>,
}

impl Reporter<'_> {
    fn send(&self, state: &mut ReportState) {
        state.last = Some(Instant::now());
        let Some(fence) = self.fence else { return };
        let progress = BuildProgress {
            phase: state.phase.clone(),
            done: state.done,
            total: state.total,
            written: self.budget.written(),
        };
        if let Err(e) = self.coord.report_progress(self.name, fence, self.me, &progress) {
            tracing::debug!("reporting progress: {e}");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReportState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Progress for Reporter<'_> {
    fn start(&self, label: &str, total: Option<u64>) {
        self.inner.start(label, total);
        let mut state = self.lock();
        *state = ReportState { phase: label.to_string(), done: 0, total, last: None };
        self.send(&mut state);
    }

    fn advance(&self, amount: u64) {
        self.inner.advance(amount);
        let mut state = self.lock();
        state.done += amount;
        if state.last.is_none_or(|t| t.elapsed() >= REPORT_EVERY) {
            self.send(&mut state);
        }
    }

    fn finish(&self) {
        self.inner.finish();
    }
}

/// What a waiter shows of the build it waits for.
#[derive(Default)]
struct Waiting {
    label: Option<String>,
    done: u64,
}

impl Waiting {
    fn show(&mut self, progress: &dyn Progress, record: &DirRecord, by: &Holder) {
        let phase = record.progress.as_ref();
        let label = match phase {
            Some(p) => format!("waiting for {by}: {}", p.phase),
            None => format!("waiting for {by} to build {}", record.name),
        };
        if self.label.as_deref() != Some(label.as_str()) {
            if self.label.is_some() {
                progress.finish();
            } else {
                tracing::info!("{label}");
            }
            progress.start(&label, phase.and_then(|p| p.total));
            self.label = Some(label);
            self.done = 0;
        }
        let done = phase.map_or(0, |p| p.done);
        if self.done == 0 && done > 0 {
            progress.skip_to(done);
            self.done = done;
        } else if done > self.done {
            progress.advance(done - self.done);
            self.done = done;
        }
    }

    fn end(&mut self, progress: &dyn Progress) {
        if self.label.take().is_some() {
            progress.finish();
        }
    }
}

/// A failed build's error as the coordinator keeps it: its kind's name, a
/// space, and its message, so that those who waited fail as the builder did.
fn failure_text(err: &Error) -> String {
    format!("{} {err}", err.kind().name())
}

/// The kind and message of a failure [`failure_text`] wrote; a record without
/// a kind (written by an older larder) is an I/O failure.
pub(super) fn split_failure(text: &str) -> (ErrorKind, &str) {
    text.split_once(' ')
        .and_then(|(name, message)| Some((ErrorKind::from_name(name)?, message)))
        .unwrap_or((ErrorKind::Io, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftovers_of_dead_owners_go_whatever_their_name() {
        let parent = tempfile::tempdir().expect("tempdir");
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        let dead = ProcessId::of_pid(child.id()).unwrap_or(ProcessId { pid: child.id(), start: 1 });
        child.wait().expect("wait");
        let live = ProcessId::current();
        for (name, owner) in [("a", dead), ("a", live), ("a.b", dead)] {
            fs::create_dir(parent.path().join(staging_name(name, owner, 7))).expect("mkdir");
        }
        fs::create_dir(parent.path().join(format!("{}.tmp", staging_name("c", dead, 1))))
            .expect("mkdir");
        fs::create_dir(parent.path().join(format!(".larder-trash-x.y.{dead}.3"))).expect("mkdir");
        fs::create_dir(parent.path().join(format!(".larder-trash-x.{live}.4"))).expect("mkdir");
        fs::write(parent.path().join(".larder-build-a.lock"), "").expect("lock file");
        remove_stale_leftovers(parent.path());
        let mut left: Vec<String> = fs::read_dir(parent.path())
            .expect("read")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let mut expected = vec![
            staging_name("a", live, 7),
            format!(".larder-trash-x.{live}.4"),
            ".larder-build-a.lock".to_string(),
        ];
        expected.sort();
        assert_eq!(left, expected, "only the live owners' folders and the lock file stay");
    }
}
