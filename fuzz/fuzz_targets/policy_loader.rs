//! The policy loader on arbitrary documents: a set or a list of problems, never a panic, and no
//! parsed tree deeper than the nesting limit (aliases expanded), whatever the input nests.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_authz::policy::yaml::{self, MAX_DEPTH, Node, Value};
use mcp_authz::policy::{Snapshot, load_files};

/// Collection levels of `node`, walked with a heap stack so that a tree too deep shows as a
/// failed assertion rather than an overflow here.
fn height(node: &Node) -> usize {
    let mut deepest = 0;
    // Each node with the number of collections around it.
    let mut pending = vec![(node, 0)];
    while let Some((node, around)) = pending.pop() {
        let children: Vec<&Node> = match &node.value {
            Value::Scalar(_) => continue,
            Value::Seq(items) => items.iter().collect(),
            Value::Map(entries) => entries.iter().flat_map(|(k, v)| [k, v]).collect(),
        };
        deepest = deepest.max(around + 1);
        pending.extend(children.into_iter().map(|child| (child, around + 1)));
    }
    deepest
}

fuzz_target!(|data: &[u8]| {
    if let Ok(documents) = std::str::from_utf8(data).map(yaml::parse) {
        for document in documents.iter().flatten() {
            if let Some(root) = &document.root {
                assert!(height(root) <= MAX_DEPTH);
            }
        }
    }
    match load_files(&[("fuzz.yaml", data)]) {
        Ok(set) => {
            Snapshot::compile(set);
        }
        Err(e) => assert!(!e.problems().is_empty()),
    }
});
