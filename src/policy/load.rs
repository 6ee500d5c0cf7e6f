//! Policy files on disk → a validated [`PolicySet`] and its revision.
//!
//! The same function serves `validate`, start-up and every reload, so the three can never
//! disagree about what a directory means.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::validate::{Objects, Problem, Severity, SourceFile, Validator};
use super::yaml;
use super::{Grant, Server, Session};

/// Largest policy file read, in bytes; a larger one is an error.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// A valid policy set as read from disk.
#[derive(Debug)]
pub struct PolicySet {
    pub servers: Vec<Server>,
    pub grants: Vec<Grant>,
    pub sessions: Vec<Session>,
    /// `sha256:` + hex over the loaded files (SPEC §1).
    pub revision: String,
    pub files: usize,
    pub warnings: Vec<Problem>,
}

/// Stack of the thread that loads a policy set. Parsing bounds nesting, so loading needs little;
/// the margin is for a recursion no bound foresaw, which then has room to finish instead of
/// overflowing (an overflow aborts the process: no panic to catch).
const LOAD_STACK_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("the policy set is invalid ({} problems)", .0.iter().filter(|p| p.severity == Severity::Error).count())]
    Invalid(Vec<Problem>),
    /// A bug met while loading: the set is refused like an invalid one, and the process lives on.
    #[error("loading the policy set failed: {}", .0.message)]
    Failed(Problem),
}

impl LoadError {
    /// Every problem, errors and warnings, in file order.
    pub fn problems(&self) -> &[Problem] {
        match self {
            LoadError::Invalid(problems) => problems,
            LoadError::Failed(problem) => std::slice::from_ref(problem),
        }
    }
}

struct Entry {
    /// Path relative to its root, `/`-separated: the revision's sort key.
    relative: String,
    path: PathBuf,
    display: String,
}

/// Loads the files and directories in `paths` as one set.
pub fn load_paths<P: AsRef<Path>>(paths: &[P]) -> Result<PolicySet, LoadError> {
    let paths: Vec<&Path> = paths.iter().map(AsRef::as_ref).collect();
    let shown = paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    isolated(&shown, || read_paths(&paths))
}

fn read_paths(paths: &[&Path]) -> Result<PolicySet, LoadError> {
    let mut problems = Vec::new();
    let mut entries = Vec::new();
    for root in paths {
        collect_root(root, &mut entries, &mut problems);
    }
    let mut files = Vec::with_capacity(entries.len());
    for entry in entries {
        match read_capped(&entry.path) {
            Ok(bytes) => files.push(File {
                relative: entry.relative,
                display: entry.display,
                bytes,
            }),
            Err(message) => problems.push(file_problem(&entry.display, message)),
        }
    }
    build(files, problems)
}

/// The files [`load_paths`] reads for `paths`, in the same order, leaving out what cannot be
/// listed: a reload stamps them before and after its read to tell whether they changed.
pub fn policy_files<P: AsRef<Path>>(paths: &[P]) -> Vec<PathBuf> {
    let (mut entries, mut problems) = (Vec::new(), Vec::new());
    for root in paths {
        collect_root(root.as_ref(), &mut entries, &mut problems);
    }
    entries.into_iter().map(|entry| entry.path).collect()
}

/// One policy file's content, named by its path relative to its root.
pub struct File {
    pub relative: String,
    pub display: String,
    pub bytes: Vec<u8>,
}

/// Loads in-memory files as one set (tests, fuzzing, tools); `display` is the relative path.
pub fn load_files(files: &[(&str, &[u8])]) -> Result<PolicySet, LoadError> {
    let shown = files
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(", ");
    isolated(&shown, || {
        let files = files
            .iter()
            .map(|(name, bytes)| File {
                relative: name.to_string(),
                display: name.to_string(),
                bytes: bytes.to_vec(),
            })
            .collect();
        build(files, Vec::new())
    })
}

/// Runs `load` on a thread of its own with a [`LOAD_STACK_BYTES`] stack, and turns a panic in it
/// into a [`LoadError`] on `shown` (the inputs as named to the user): a reload then fails and the
/// last good set keeps serving, `validate` reports it, and nothing crashes.
fn isolated<F>(shown: &str, load: F) -> Result<PolicySet, LoadError>
where
    F: FnOnce() -> Result<PolicySet, LoadError> + Send,
{
    let failed = |message: String| {
        LoadError::Failed(Problem {
            severity: Severity::Error,
            file: shown.to_string(),
            line: 0,
            object: None,
            field: None,
            message,
        })
    };
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name("policy-load".into())
            .stack_size(LOAD_STACK_BYTES)
            .spawn_scoped(scope, load)
            .map_err(|e| failed(format!("cannot start the loading thread: {e}")))?;
        thread.join().unwrap_or_else(|panic| {
            let reason = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            Err(failed(format!("loading panicked: {reason}")))
        })
    })
}

/// Hashes, parses and validates `files`; `problems` are those found while reading them.
fn build(mut files: Vec<File>, mut problems: Vec<Problem>) -> Result<PolicySet, LoadError> {
    files.sort_by(|a, b| a.relative.as_bytes().cmp(b.relative.as_bytes()));
    let mut hasher = Sha256::new();
    let mut validator = Validator::default();
    for file in &files {
        hasher.update(file.relative.as_bytes());
        hasher.update([0]);
        hasher.update(&file.bytes);
        hasher.update([0]);
        let documents = match std::str::from_utf8(&file.bytes) {
            Ok(text) => yaml::parse(text),
            Err(e) => Err(yaml::YamlError {
                line: 1 + file.bytes[..e.valid_up_to()]
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count(),
                message: "not UTF-8".into(),
            }),
        };
        // One file's YAML tree at a time.
        validator.add(&SourceFile {
            display: file.display.clone(),
            documents,
        });
    }
    let revision = format!("sha256:{}", hex(&hasher.finalize()));

    match validator.finish() {
        Ok(objects) if problems.is_empty() => {
            let Objects {
                servers,
                grants,
                sessions,
                warnings,
            } = objects;
            Ok(PolicySet {
                servers,
                grants,
                sessions,
                revision,
                files: files.len(),
                warnings,
            })
        }
        Ok(objects) => {
            problems.extend(objects.warnings);
            Err(LoadError::Invalid(problems))
        }
        Err(more) => {
            problems.extend(more);
            Err(LoadError::Invalid(problems))
        }
    }
}

fn file_problem(display: &str, message: String) -> Problem {
    Problem {
        severity: Severity::Error,
        file: display.to_string(),
        line: 0,
        object: None,
        field: None,
        message,
    }
}

fn read_capped(path: &Path) -> Result<Vec<u8>, String> {
    let len = fs::metadata(path)
        .map_err(|e| format!("cannot read: {e}"))?
        .len();
    if len > MAX_FILE_BYTES {
        return Err(format!(
            "file of {len} bytes is larger than the {MAX_FILE_BYTES}-byte limit"
        ));
    }
    fs::read(path).map_err(|e| format!("cannot read: {e}"))
}

fn collect_root(root: &Path, entries: &mut Vec<Entry>, problems: &mut Vec<Problem>) {
    let display = root.display().to_string();
    match fs::metadata(root) {
        Err(e) => problems.push(file_problem(&display, format!("cannot read: {e}"))),
        Ok(meta) if meta.is_dir() => {
            let mut ancestors = HashSet::new();
            walk(root, "", &display, &mut ancestors, entries, problems);
        }
        // A file named explicitly is loaded whatever its extension.
        Ok(_) => entries.push(Entry {
            relative: root
                .file_name()
                .map_or_else(|| display.clone(), |n| n.to_string_lossy().into_owned()),
            path: root.to_path_buf(),
            display,
        }),
    }
}

/// Whether a directory entry holds policy: `.yaml`, `.yml`, `.json` (case-sensitive).
pub fn is_policy_file_name(name: &str) -> bool {
    !name.starts_with('.')
        && (name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json"))
}

/// Recursive walk that follows symbolic links; `ancestors` holds the canonical directories on
/// the current path so a loop is reported instead of followed forever.
fn walk(
    dir: &Path,
    relative: &str,
    display: &str,
    ancestors: &mut HashSet<PathBuf>,
    entries: &mut Vec<Entry>,
    problems: &mut Vec<Problem>,
) {
    let canonical = match fs::canonicalize(dir) {
        Ok(c) => c,
        Err(e) => return problems.push(file_problem(display, format!("cannot read: {e}"))),
    };
    if ancestors.contains(&canonical) {
        return problems.push(file_problem(
            display,
            "directory loop: this directory contains itself through a symbolic link".into(),
        ));
    }
    let listing = match fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(e) => return problems.push(file_problem(display, format!("cannot read: {e}"))),
    };
    let mut names: Vec<_> = listing
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    ancestors.insert(canonical.clone());
    for name in names {
        let path = dir.join(&name);
        let rel = if relative.is_empty() {
            name.clone()
        } else {
            format!("{relative}/{name}")
        };
        let shown = format!("{}/{name}", display.trim_end_matches('/'));
        match fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => walk(&path, &rel, &shown, ancestors, entries, problems),
            Ok(_) if is_policy_file_name(&name) => entries.push(Entry {
                relative: rel,
                path,
                display: shown,
            }),
            Ok(_) => {}
            Err(e) if is_policy_file_name(&name) => {
                problems.push(file_problem(&shown, format!("cannot read: {e}")))
            }
            Err(_) => {}
        }
    }
    ancestors.remove(&canonical);
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_while_loading_is_a_problem() {
        let err = isolated("a.yaml, dir", || -> Result<PolicySet, LoadError> {
            panic!("boom at {}", 7)
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "loading the policy set failed: loading panicked: boom at 7"
        );
        let shown: Vec<String> = err.problems().iter().map(Problem::to_string).collect();
        assert_eq!(shown, ["a.yaml, dir: loading panicked: boom at 7"]);
        assert_eq!(err.problems()[0].severity, Severity::Error);
    }

    #[test]
    fn loading_runs_on_a_stack_larger_than_a_default_thread_has() {
        // About 20 MB of frames: a 2 MiB default thread stack would overflow and abort.
        fn descend(levels: u64) -> u64 {
            let frame = std::hint::black_box([levels; 16]);
            if levels == 0 {
                0
            } else {
                1 + descend(frame[3] - 1)
            }
        }
        let set = isolated("deep", || {
            assert_eq!(descend(100_000), 100_000);
            build(Vec::new(), Vec::new())
        })
        .unwrap();
        assert_eq!(set.files, 0);
    }
}
