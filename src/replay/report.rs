//! The replay report: totals, what was read, and the change groups, as text or one JSON
//! document with the same content.

use std::fmt::Write;

use serde_json::{Value, json};

use super::FileSummary;
use super::compare::{Change, Count, Example, Group, GroupKey, NotReplayable, ONE, Outcome, Tally};
use crate::policy::Mode;

/// A policy set the records were decided against.
#[derive(Debug, Clone, Copy)]
pub struct PolicySource<'a> {
    pub dir: &'a str,
    pub revision: &'a str,
}

/// Everything the report shows.
#[derive(Debug, Clone, Copy)]
pub struct Report<'a> {
    pub candidate: PolicySource<'a>,
    /// `--against`; without it the baseline is the recorded decision.
    pub against: Option<PolicySource<'a>>,
    pub mode: Mode,
    pub enforce: &'a [String],
    pub files: &'a [FileSummary],
    pub tally: &'a Tally,
}

fn count(c: Count) -> Value {
    json!({"records": c.records, "decisions": c.decisions()})
}

/// Decisions as a figure: whole when they are, else to one decimal.
fn decisions(c: Count) -> String {
    if c.weight.is_multiple_of(ONE) {
        (c.weight / ONE).to_string()
    } else {
        format!("{:.1}", c.decisions())
    }
}

fn outcome(o: &Outcome) -> Value {
    json!({"verdict": o.verdict.as_str(), "reason": o.reason.as_str(), "grant": o.grant})
}

fn example(e: &Example) -> Value {
    let mut value = json!({
        "time": e.time.to_string(),
        "trace_id": e.trace_id,
        "request_id": e.request_id,
        "caller": {"human": e.human, "agent": e.agent, "team": e.team, "session": e.session},
        "method": e.method,
    });
    if let Some((primitive, target)) = &e.target {
        value[primitive.key()] = json!(target);
    }
    value
}

impl Report<'_> {
    pub fn json(&self) -> Value {
        let tally = self.tally;
        let source = |s: PolicySource| json!({"policy_dir": s.dir, "revision": s.revision});
        let files: Vec<Value> = self
            .files
            .iter()
            .map(|f| {
                let s = &f.stats;
                json!({
                    "name": f.name,
                    "lines": s.lines,
                    "records": s.records,
                    "audit_lines": s.audit_lines,
                    "otlp": s.otlp,
                    "jaeger": s.jaeger,
                    "other_lines": s.other_lines,
                    "other_spans": s.other_spans,
                    "corrupt_lines": s.corrupt,
                    "truncated_lines": s.truncated,
                    "error": f.error,
                })
            })
            .collect();
        let why: serde_json::Map<String, Value> = NotReplayable::ALL
            .into_iter()
            .filter(|&w| tally.not_replayable[w as usize].records > 0)
            .map(|w| {
                (
                    w.as_str().to_string(),
                    count(tally.not_replayable[w as usize]),
                )
            })
            .collect();
        let changes: Vec<Value> = tally
            .sorted_groups()
            .into_iter()
            .map(|(key, group)| {
                json!({
                    "kind": key.change.as_str(),
                    "server": key.server,
                    "before": outcome(&key.before),
                    "after": outcome(&key.after),
                    "records": group.count.records,
                    "decisions": group.count.decisions(),
                    "examples": group.examples.iter().map(example).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({
            "candidate": source(self.candidate),
            "baseline": match self.against {
                Some(current) => source(current),
                None => json!("recorded"),
            },
            "mode": self.mode.as_str(),
            "enforce": self.enforce,
            "input": files,
            "totals": {
                "read": count(tally.read),
                "replayed": count(tally.replayed()),
                "unchanged": count(tally.unchanged),
                "changed": count(tally.changed_total()),
                "tighten": count(tally.changed[Change::Tighten as usize]),
                "loosen": count(tally.changed[Change::Loosen as usize]),
                "reason": count(tally.changed[Change::Reason as usize]),
                "kept_recorded_reason": count(tally.kept),
                "not_replayable": count(tally.not_replayable_total()),
                "not_replayable_why": why,
            },
            "changes": changes,
        })
    }

    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = self.write_text(&mut out);
        out
    }

    fn write_text(&self, out: &mut String) -> std::fmt::Result {
        let tally = self.tally;
        writeln!(
            out,
            "replay against {} ({})",
            self.candidate.dir, self.candidate.revision
        )?;
        match self.against {
            Some(current) => writeln!(
                out,
                "baseline: the same records decided against {} ({})",
                current.dir, current.revision
            )?,
            None => writeln!(out, "baseline: the recorded decisions")?,
        }
        write!(out, "service mode: {}", self.mode.as_str())?;
        if !self.enforce.is_empty() {
            write!(out, "; enforced: {}", self.enforce.join(", "))?;
        }
        writeln!(out, "\n\ninput")?;
        for file in self.files {
            write_file(out, file)?;
        }

        writeln!(
            out,
            "\n{:<24}{:>10}{:>12}",
            "totals", "records", "decisions"
        )?;
        let row = |out: &mut String, indent: usize, label: &str, c: Count| {
            let width = 24 - indent;
            writeln!(
                out,
                "{:indent$}{label:<width$}{:>10}{:>12}",
                "",
                c.records,
                decisions(c)
            )
        };
        row(out, 2, "read", tally.read)?;
        row(out, 2, "replayed", tally.replayed())?;
        row(out, 4, "unchanged", tally.unchanged)?;
        row(out, 4, "changed", tally.changed_total())?;
        for change in Change::ALL {
            row(out, 6, change.as_str(), tally.changed[change as usize])?;
        }
        row(out, 4, "kept recorded reason", tally.kept)?;
        row(out, 2, "not replayable", tally.not_replayable_total())?;
        for why in NotReplayable::ALL {
            let c = tally.not_replayable[why as usize];
            if c.records > 0 {
                row(out, 4, why.as_str(), c)?;
            }
        }
        if tally.kept.records > 0 {
            writeln!(
                out,
                "  (kept recorded reason: inspection failures do not depend on policy; only \
                 service and server monitor mode can change their verdict)"
            )?;
        }
        for why in NotReplayable::ALL {
            if tally.not_replayable[why as usize].records > 0 {
                writeln!(out, "  ({}: {})", why.as_str(), why.why())?;
            }
        }

        let groups = tally.sorted_groups();
        if groups.is_empty() {
            return writeln!(out, "\nno changes");
        }
        writeln!(out, "\nchanges (new denials first)")?;
        for (key, group) in groups {
            write_group(out, key, group)?;
        }
        Ok(())
    }
}

fn write_file(out: &mut String, file: &FileSummary) -> std::fmt::Result {
    let s = &file.stats;
    write!(
        out,
        "  {}: {} lines, {} records",
        file.name, s.lines, s.records
    )?;
    for (n, what) in [
        (s.audit_lines, "audit lines"),
        (s.otlp, "OTLP"),
        (s.jaeger, "Jaeger"),
        (s.other_lines, "other lines skipped"),
        (s.other_spans, "other spans skipped"),
        (s.corrupt, "corrupt lines"),
        (s.truncated, "truncated lines"),
    ] {
        if n > 0 {
            write!(out, ", {n} {what}")?;
        }
    }
    if let Some(error) = &file.error {
        write!(out, "; stopped: {error}")?;
    }
    writeln!(out)
}

fn write_outcome(out: &mut String, label: &str, o: &Outcome) -> std::fmt::Result {
    write!(
        out,
        "    {label:<7}{:<11}{}",
        o.verdict.as_str(),
        o.reason.as_str()
    )?;
    if let Some(grant) = &o.grant {
        write!(out, "  grant {grant}")?;
    }
    writeln!(out)
}

fn write_group(out: &mut String, key: &GroupKey, group: &Group) -> std::fmt::Result {
    writeln!(
        out,
        "  {} on {}: {} records, {} decisions",
        key.change.as_str(),
        key.server.as_deref().unwrap_or("(no server)"),
        group.count.records,
        decisions(group.count)
    )?;
    write_outcome(out, "before", &key.before)?;
    write_outcome(out, "after", &key.after)?;
    for e in &group.examples {
        write!(out, "      {}", e.time)?;
        for (label, value) in [
            ("trace", &e.trace_id),
            ("request", &e.request_id),
            ("human", &e.human),
            ("agent", &e.agent),
            ("team", &e.team),
            ("session", &e.session),
        ] {
            if let Some(value) = value {
                write!(out, " {label}={value}")?;
            }
        }
        match &e.target {
            Some((primitive, target)) => write!(out, " {}={target}", primitive.key())?,
            None => {
                if let Some(method) = &e.method {
                    write!(out, " method={method}")?;
                }
            }
        }
        writeln!(out)?;
    }
    Ok(())
}
