//! Log output: stderr, shared by `tracing` (each event written and flushed at once) and the
//! audit trail's lines (one per Check when no OTLP endpoint is set), which the audit worker
//! writes a batch at a time, so a busy service makes one `write` per batch instead of one per
//! Check.

use std::io::{self, BufWriter, Stderr, Write};
use std::sync::{Arc, Mutex, MutexGuard};

use tracing_subscriber::fmt::MakeWriter;

/// The target of audit log lines: `RUST_LOG` directives apply to it as to any other, so
/// `RUST_LOG=info,mcp_authz::audit=off` keeps the service's logs and silences the audit lines.
pub const AUDIT_TARGET: &str = "mcp_authz::audit";

/// A shared, buffered stderr.
#[derive(Clone)]
pub struct Output {
    stderr: Arc<Mutex<BufWriter<Stderr>>>,
}

impl Default for Output {
    fn default() -> Self {
        Output {
            stderr: Arc::new(Mutex::new(BufWriter::with_capacity(
                64 * 1024,
                io::stderr(),
            ))),
        }
    }
}

impl Output {
    /// Writes `bytes` (whole lines) and flushes; a broken stderr loses them.
    pub fn write_all(&self, bytes: &[u8]) {
        let mut stderr = self.lock();
        let _ = stderr.write_all(bytes);
        let _ = stderr.flush();
    }

    fn lock(&self) -> MutexGuard<'_, BufWriter<Stderr>> {
        // A panic while holding the lock leaves a usable buffer.
        self.stderr.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One event's writer, flushed when the event is written.
pub struct EventWriter<'a> {
    output: &'a Output,
}

impl Write for EventWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.lock().write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.output.lock().flush()
    }
}

impl Drop for EventWriter<'_> {
    fn drop(&mut self) {
        let _ = self.output.lock().flush();
    }
}

impl<'a> MakeWriter<'a> for Output {
    type Writer = EventWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        EventWriter { output: self }
    }
}
