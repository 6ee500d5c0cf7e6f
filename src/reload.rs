//! The policy store: the current compiled snapshot, swapped whole.
//!
//! Readers take an `Arc` of the snapshot for the length of one Check, so a swap never changes
//! the policy under a Check in flight, and an invalid set never replaces a good one.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwapOption;

use crate::policy::{LoadError, Snapshot, load_paths};

#[derive(Debug, Default)]
pub struct PolicyStore {
    current: ArcSwapOption<Snapshot>,
}

impl PolicyStore {
    /// The snapshot in force, `None` before the first successful load.
    pub fn current(&self) -> Option<Arc<Snapshot>> {
        self.current.load_full()
    }

    pub fn install(&self, snapshot: Snapshot) {
        self.current.store(Some(Arc::new(snapshot)));
    }

    /// Loads, validates and compiles `dir`; on success swaps it in. On failure the current
    /// snapshot stays.
    pub fn reload(&self, dir: &PathBuf) -> Result<Arc<Snapshot>, LoadError> {
        let set = load_paths(std::slice::from_ref(dir))?;
        for warning in &set.warnings {
            tracing::warn!("{warning}");
        }
        let snapshot = Arc::new(Snapshot::compile(set));
        self.current.store(Some(Arc::clone(&snapshot)));
        Ok(snapshot)
    }
}
