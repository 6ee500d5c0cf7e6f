//! The audit trail (SPEC §4, §4b, §7).

pub mod line;
