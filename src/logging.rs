//! Log output: stderr, with the audit trail's lines batched.
//!
//! Every log event but the audit trail's is written and flushed at once. Audit lines (one per
//! Check when no OTLP endpoint is set) go into a buffer that the audit worker flushes after each
//! batch, so a busy service makes one `write` per batch instead of one per Check.

use std::io::{self, BufWriter, Stderr, Write};
use std::sync::{Arc, Mutex, MutexGuard};

use tracing::Metadata;
use tracing_subscriber::fmt::MakeWriter;

/// The target of audit log lines.
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
    /// Writes out what is buffered.
    pub fn flush(&self) {
        let _ = self.lock().flush();
    }

    fn lock(&self) -> MutexGuard<'_, BufWriter<Stderr>> {
        // A panic while holding the lock leaves a usable buffer.
        self.stderr.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One event's writer: buffered for audit lines, flushed on drop for everything else.
pub struct EventWriter<'a> {
    output: &'a Output,
    flush: bool,
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
        if self.flush {
            self.output.flush();
        }
    }
}

impl<'a> MakeWriter<'a> for Output {
    type Writer = EventWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        EventWriter {
            output: self,
            flush: true,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        EventWriter {
            output: self,
            flush: meta.target() != AUDIT_TARGET,
        }
    }
}
