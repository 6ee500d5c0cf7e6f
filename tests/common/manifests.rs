//! The files of `deploy/` as data: YAML documents, and policy sets compared kind by kind.

use std::path::{Path, PathBuf};

use mcp_authz::policy::load_paths;
use serde::Deserialize;
use serde_yaml_ng::Value;

pub fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// Every YAML document of a file.
pub fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    parse_documents(&text, &path.display().to_string())
}

/// Every YAML document of `text`, read from `origin`.
pub fn parse_documents(text: &str, origin: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{origin}: {e}")))
        .collect()
}

/// The kinds of policy object whose loaded contents differ between the sets in `expected` and
/// `dir`.
pub fn differing_kinds(expected: &Path, dir: &Path) -> Vec<&'static str> {
    let expected = load_paths(&[expected]).unwrap();
    let actual = load_paths(&[dir]).unwrap();
    [
        ("servers", expected.servers == actual.servers),
        ("grants", expected.grants == actual.grants),
        ("sessions", expected.sessions == actual.sessions),
    ]
    .into_iter()
    .filter_map(|(kind, same)| (!same).then_some(kind))
    .collect()
}
