//! `mcp-authz replay` (SPEC §8): recorded decisions decided again against a candidate policy
//! set, compared with what was recorded (or with the current set), and reported.
//!
//! [`read`] turns the three export formats into records, [`compare`] decides, classifies and
//! groups them, [`report`] renders the outcome; this module runs them over the inputs.
//!
//! The input is streamed: the reader thread splits it into chunks of whole lines (reading and
//! decompressing are sequential), a bounded queue hands them to one worker per core, and each
//! worker parses, decides and counts into a tally of its own, merged at the end. Memory is the
//! queue's few chunks plus the change groups. Scoped std threads over a channel suffice for
//! this one-producer pipeline, so no thread-pool crate is needed.

pub mod compare;
pub mod keys;
pub mod read;
pub mod report;

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use compare::{Replayer, Tally};
use read::{FileStats, Layout, Position, Record, Sink};

use crate::policy::{Mode, PolicySet};

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("`--enforce {0}`: CANDIDATE has no grant or server `{0}`")]
    UnknownEnforce(String),
}

/// `--enforce`: the named grants and servers (`namespace/name`), or `all`, enforce. Returns a
/// note for each named one that was not in monitor mode.
pub fn enforce(set: &mut PolicySet, names: &[String]) -> Result<Vec<String>, ReplayError> {
    let mut notes = Vec::new();
    for name in names {
        let all = name == "all";
        let mut found = false;
        let modes = set
            .servers
            .iter_mut()
            .map(|s| (&*s.key.full, &mut s.mode, "server"))
            .chain(
                set.grants
                    .iter_mut()
                    .map(|g| (&*g.key.full, &mut g.mode, "grant")),
            );
        for (key, mode, kind) in modes {
            if !all && key != name {
                continue;
            }
            found = true;
            if *mode == Mode::Monitor {
                *mode = Mode::Enforce;
            } else if !all {
                notes.push(format!("`--enforce {name}`: the {kind} already enforces"));
            }
        }
        if !found && !all {
            return Err(ReplayError::UnknownEnforce(name.clone()));
        }
    }
    Ok(notes)
}

/// A FILE argument: a path, or `-` for standard input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Stdin,
    File(PathBuf),
}

impl Input {
    pub fn new(arg: PathBuf) -> Self {
        if arg.as_os_str() == "-" {
            Input::Stdin
        } else {
            Input::File(arg)
        }
    }

    pub fn name(&self) -> String {
        match self {
            Input::Stdin => "-".into(),
            Input::File(path) => path.display().to_string(),
        }
    }

    fn open(&self) -> io::Result<Box<dyn BufRead>> {
        let raw: Box<dyn BufRead> = match self {
            Input::Stdin => Box::new(BufReader::with_capacity(READ_BUFFER, io::stdin())),
            Input::File(path) => Box::new(BufReader::with_capacity(READ_BUFFER, File::open(path)?)),
        };
        read::decompressed(raw)
    }
}

/// What was read of one input, and why reading stopped early if it did.
#[derive(Debug, Clone, Default)]
pub struct FileSummary {
    pub name: String,
    pub stats: FileStats,
    pub error: Option<String>,
}

/// The outcome of a run.
#[derive(Debug, Default)]
pub struct Replayed {
    pub tally: Tally,
    pub files: Vec<FileSummary>,
}

const READ_BUFFER: usize = 256 * 1024;
/// Bytes of whole lines handed to a worker at a time.
const CHUNK: usize = 1024 * 1024;
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

enum Work {
    Lines {
        file: u32,
        first_line: u64,
        bytes: Vec<u8>,
    },
    Records(Vec<Record>),
}

/// Replays every record of `inputs` on `workers` threads; with `progress`, says on stderr how
/// far it got.
pub fn run(replayer: &Replayer, inputs: &[Input], workers: usize, progress: bool) -> Replayed {
    let workers = workers.max(1);
    let done = AtomicU64::new(0);
    let (queue, work) = sync_channel::<Work>(workers * 2);
    let work = Mutex::new(work);
    let mut files: Vec<FileSummary> = inputs
        .iter()
        .map(|input| FileSummary {
            name: input.name(),
            ..FileSummary::default()
        })
        .collect();
    let mut progress = Progress::new(progress, &done);
    let results = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| scope.spawn(|| worker(&work, replayer, inputs.len(), &done)))
            .collect();
        for (index, input) in inputs.iter().enumerate() {
            read_input(
                index as u32,
                input,
                &queue,
                &mut files[index],
                &mut progress,
            );
        }
        drop(queue);
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect::<Vec<_>>()
    });
    progress.finish();
    let mut tally = Tally::default();
    for (worker_tally, stats) in results {
        tally.merge(worker_tally);
        for (file, stats) in files.iter_mut().zip(&stats) {
            file.stats.merge(stats);
        }
    }
    Replayed { tally, files }
}

fn worker(
    work: &Mutex<Receiver<Work>>,
    replayer: &Replayer,
    files: usize,
    done: &AtomicU64,
) -> (Tally, Vec<FileStats>) {
    let mut tally = Tally::default();
    let mut stats = vec![FileStats::default(); files];
    let mut sink = Sink::new(Position::default());
    loop {
        let next = work.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(next) = next else {
            return (tally, stats);
        };
        let before = tally.read.records;
        match next {
            Work::Lines {
                file,
                first_line,
                bytes,
            } => {
                let stats = &mut stats[file as usize];
                for (i, line) in bytes.split_inclusive(|&b| b == b'\n').enumerate() {
                    let line = line.strip_suffix(b"\n").unwrap_or(line);
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    sink.position = Position {
                        file,
                        line: first_line + i as u64,
                        item: 0,
                    };
                    stats.count(read::read_line(line, &mut sink));
                    stats.records += sink.records.len() as u64;
                    stats.other_spans += std::mem::take(&mut sink.other_spans);
                    for record in sink.records.drain(..) {
                        replayer.replay(&record, &mut tally);
                    }
                }
            }
            Work::Records(records) => {
                for record in &records {
                    replayer.replay(record, &mut tally);
                }
            }
        }
        done.fetch_add(tally.read.records - before, Ordering::Relaxed);
    }
}

/// Reads one input into the queue; what goes wrong is noted in `summary`.
fn read_input(
    file: u32,
    input: &Input,
    queue: &SyncSender<Work>,
    summary: &mut FileSummary,
    progress: &mut Progress,
) {
    let mut reader = match input.open() {
        Ok(reader) => reader,
        Err(e) => {
            summary.error = Some(e.to_string());
            return;
        }
    };
    let mut chunk = Vec::with_capacity(CHUNK + 64 * 1024);
    let (layout, mut lines) = match read::read_first(&mut reader, &mut chunk) {
        Ok(first) => first,
        Err(e) => {
            summary.error = Some(e.to_string());
            (Layout::Lines, 1)
        }
    };
    if layout == Layout::Document {
        let mut counted = CountLines {
            inner: chunk.as_slice().chain(reader),
            lines: 0,
            open: false,
        };
        read_document(file, &mut counted, queue, summary);
        // A last line without a newline is a line too.
        summary.stats.lines = counted.lines + u64::from(counted.open);
        return;
    }
    let mut first_line = 1;
    let send = |chunk: &mut Vec<u8>, first_line: u64| {
        let bytes = std::mem::replace(chunk, Vec::with_capacity(CHUNK + 64 * 1024));
        // The workers only stop when the queue closes.
        let _ = queue.send(Work::Lines {
            file,
            first_line,
            bytes,
        });
    };
    while summary.error.is_none() {
        match reader.read_until(b'\n', &mut chunk) {
            Ok(0) => break,
            Ok(_) => {
                lines += 1;
                if chunk.len() >= CHUNK {
                    send(&mut chunk, first_line);
                    first_line = lines + 1;
                    progress.tick();
                }
            }
            Err(e) => summary.error = Some(e.to_string()),
        }
    }
    if !chunk.is_empty() {
        send(&mut chunk, first_line);
    }
    summary.stats.lines = lines;
}

/// Counts the lines a document spans as it is read.
struct CountLines<R> {
    inner: R,
    lines: u64,
    /// Bytes were read after the last newline.
    open: bool,
}

impl<R: Read> Read for CountLines<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        if n > 0 {
            self.open = buf[n - 1] != b'\n';
        }
        Ok(n)
    }
}

/// A document over many lines, parsed here as a stream and handed on in batches of records.
fn read_document(
    file: u32,
    reader: impl Read,
    queue: &SyncSender<Work>,
    summary: &mut FileSummary,
) {
    let mut records = 0;
    let mut flush = |batch: &mut Vec<Record>| {
        records += batch.len() as u64;
        let _ = queue.send(Work::Records(std::mem::take(batch)));
    };
    let position = Position {
        file,
        line: 1,
        item: 0,
    };
    let mut sink = Sink::flushing(position, &mut flush);
    let read = read::read_document(reader, &mut sink);
    let (mut rest, other_spans) = (std::mem::take(&mut sink.records), sink.other_spans);
    drop(sink);
    flush(&mut rest);
    match read {
        Ok(kind) => summary.stats.count(kind),
        Err(e) => summary.error = Some(e.to_string()),
    }
    summary.stats.records += records;
    summary.stats.other_spans += other_spans;
}

/// Records read so far and the rate, on one rewritten stderr line.
struct Progress<'a> {
    enabled: bool,
    done: &'a AtomicU64,
    started: Instant,
    last: Instant,
    printed: bool,
}

impl<'a> Progress<'a> {
    fn new(enabled: bool, done: &'a AtomicU64) -> Self {
        let started = Instant::now();
        Progress {
            enabled,
            done,
            started,
            last: started,
            printed: false,
        }
    }

    fn tick(&mut self) {
        let now = Instant::now();
        if !self.enabled || now - self.last < PROGRESS_EVERY {
            return;
        }
        (self.last, self.printed) = (now, true);
        let records = self.done.load(Ordering::Relaxed);
        let seconds = (now - self.started).as_secs_f64().max(1e-3);
        eprint!(
            "\rreplay: {records} records read, {:.0} records/s ",
            records as f64 / seconds
        );
    }

    fn finish(&self) {
        if self.printed {
            // Clears the progress line.
            eprint!("\r\x1b[2K");
        }
    }
}
