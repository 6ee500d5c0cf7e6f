//! YAML documents → servers, grants and sessions, collecting every problem with its place.
//!
//! Nothing here stops at the first problem: each object is read as far as it can be, every
//! problem is recorded as a [`Problem`], and the set is accepted only when none is an error.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use super::yaml::{Document, Node, Value, YamlError};
use super::{
    API_VERSION, Auth, AuthMode, DefaultDecision, DenyAs, Entry, Governs, Grant, Kind, Mode,
    ObjectKey, Primitive, RiskLevel, Rule, RuleDecision, Server, ServerMode, Session, SideEffect,
    Subject, Trust,
};
use crate::policy::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem of a policy set, shown as `FILE:LINE: KIND NAMESPACE/NAME: FIELD: problem`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub severity: Severity,
    pub file: String,
    pub line: usize,
    /// `KIND NAMESPACE/NAME` once the object is known.
    pub object: Option<String>,
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            0 => write!(f, "{}: ", self.file)?,
            line => write!(f, "{}:{line}: ", self.file)?,
        }
        if let Some(object) = &self.object {
            write!(f, "{object}: ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        f.write_str(&self.message)
    }
}

/// One parsed policy file.
pub struct SourceFile {
    /// The path as shown in problems.
    pub display: String,
    pub documents: Result<Vec<Document>, YamlError>,
}

/// A valid set, before compilation.
#[derive(Debug, Default)]
pub struct Objects {
    pub servers: Vec<Server>,
    pub grants: Vec<Grant>,
    pub sessions: Vec<Session>,
    pub warnings: Vec<Problem>,
}

/// Validates files one at a time, so only one file's YAML tree is in memory at once, and
/// checks what spans files (duplicates, ingress paths, references) at the end.
#[derive(Default)]
pub struct Validator {
    problems: Vec<Problem>,
    objects: Objects,
    seen: HashMap<(Kind, ObjectKey), (String, usize)>,
}

impl Validator {
    pub fn add(&mut self, file: &SourceFile) {
        let documents = match &file.documents {
            Ok(documents) => documents,
            Err(e) => {
                self.problems.push(Problem {
                    severity: Severity::Error,
                    file: file.display.clone(),
                    line: e.line,
                    object: None,
                    field: None,
                    message: format!("invalid YAML: {}", e.message),
                });
                return;
            }
        };
        for document in documents {
            let Some(root) = &document.root else { continue };
            if root.is_null() {
                continue;
            }
            let mut reader = Reader {
                file: &file.display,
                object: None,
                line: document.line,
                problems: &mut self.problems,
            };
            for Located {
                kind,
                key,
                line,
                parsed,
            } in reader.document(root)
            {
                if let Some((first_file, first_line)) = self.seen.get(&(kind, key.clone())) {
                    self.problems.push(Problem {
                        severity: Severity::Error,
                        file: file.display.clone(),
                        line,
                        object: Some(format!("{} {key}", kind.as_str())),
                        field: Some("metadata.name".into()),
                        message: format!("defined twice (first at {first_file}:{first_line})"),
                    });
                    continue;
                }
                self.seen.insert((kind, key), (file.display.clone(), line));
                match parsed {
                    Some(Parsed::Server(s)) => self.objects.servers.push(s),
                    Some(Parsed::Grant(g)) => self.objects.grants.push(g),
                    Some(Parsed::Session(s)) => self.objects.sessions.push(s),
                    None => {}
                }
            }
        }
    }

    /// The valid set, or every problem (warnings included).
    pub fn finish(mut self) -> Result<Objects, Vec<Problem>> {
        cross_check(&self.objects, &self.seen, &mut self.problems);
        if self.problems.iter().any(|p| p.severity == Severity::Error) {
            return Err(self.problems);
        }
        self.objects.warnings = self.problems;
        Ok(self.objects)
    }
}

/// Checks that span objects: ingress paths, dangling references, empty subjects.
fn cross_check(
    objects: &Objects,
    seen: &HashMap<(Kind, ObjectKey), (String, usize)>,
    problems: &mut Vec<Problem>,
) {
    let place = |kind: Kind, key: &ObjectKey| seen.get(&(kind, key.clone())).cloned();
    let mut paths: BTreeMap<&str, &ObjectKey> = BTreeMap::new();
    let mut servers: Vec<&Server> = objects.servers.iter().collect();
    servers.sort_by(|a, b| a.key.cmp(&b.key));
    for server in servers {
        if let Some(first) = paths.insert(&server.ingress_path, &server.key) {
            paths.insert(&server.ingress_path, first);
            if let Some((file, line)) = place(Kind::Server, &server.key) {
                problems.push(Problem {
                    severity: Severity::Error,
                    file,
                    line,
                    object: Some(format!("MCPServer {}", server.key)),
                    field: Some("spec.ingressPath".into()),
                    message: format!(
                        "`{}` is also the ingress path of MCPServer {first} (servers of the same name in two namespaces need an explicit ingressPath)",
                        server.ingress_path
                    ),
                });
            }
        }
    }
    let server_keys: std::collections::HashSet<&ObjectKey> =
        objects.servers.iter().map(|s| &s.key).collect();
    let mut warn = |kind: Kind, key: &ObjectKey, field: &str, message: String| {
        if let Some((file, line)) = place(kind, key) {
            problems.push(Problem {
                severity: Severity::Warning,
                file,
                line,
                object: Some(format!("{} {key}", kind.as_str())),
                field: Some(field.into()),
                message,
            });
        }
    };
    for grant in &objects.grants {
        if !server_keys.contains(&grant.server_ref) {
            warn(
                Kind::Grant,
                &grant.key,
                "spec.serverRef",
                format!("names no loaded MCPServer (`{}`)", grant.server_ref),
            );
        }
        if grant.subject.is_empty() {
            warn(
                Kind::Grant,
                &grant.key,
                "spec.subject",
                "is empty: the grant matches no one".into(),
            );
        }
    }
    for session in &objects.sessions {
        if !server_keys.contains(&session.server_ref) {
            warn(
                Kind::Session,
                &session.key,
                "spec.serverRef",
                format!("names no loaded MCPServer (`{}`)", session.server_ref),
            );
        }
    }
}

enum Parsed {
    Server(Server),
    Grant(Grant),
    Session(Session),
}

/// An object whose identity is known; `parsed` is `None` when it has errors. Identity alone
/// is enough to report a duplicate, even of an invalid object.
struct Located {
    kind: Kind,
    key: ObjectKey,
    line: usize,
    parsed: Option<Parsed>,
}

/// Reads one document, recording problems against the current file and object.
struct Reader<'a> {
    file: &'a str,
    /// `KIND NAMESPACE/NAME` once known.
    object: Option<String>,
    /// Where problems without a line of their own are reported: the object's first line.
    line: usize,
    problems: &'a mut Vec<Problem>,
}

/// The known keys of one mapping.
struct Fields<'n> {
    entries: Vec<(&'static str, &'n Node)>,
}

impl<'n> Fields<'n> {
    fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
            .filter(|v| !v.is_null())
    }
}

/// The name or URI an inventory entry or a rule is about, and where it was written.
struct Named {
    line: usize,
    field: String,
    /// The name; for a resource its URI in canonical form.
    name: String,
    /// A resource's `uriPrefix`.
    prefix: bool,
    written: String,
}

impl Named {
    /// As written, with the canonical form when that differs, for duplicate messages.
    fn shown(&self) -> String {
        if self.written == self.name {
            format!("`{}`", self.written)
        } else {
            format!("`{}` (canonical form `{}`)", self.written, self.name)
        }
    }
}

impl Reader<'_> {
    fn error(&mut self, line: usize, field: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            severity: Severity::Error,
            file: self.file.to_string(),
            line,
            object: self.object.clone(),
            field: (!field.is_empty()).then(|| field.to_string()),
            message: message.into(),
        });
    }

    /// The known keys of a mapping at `path`. With `strict`, other keys are errors.
    fn fields<'n>(
        &mut self,
        node: &'n Node,
        path: &str,
        known: &[&'static str],
        strict: bool,
    ) -> Fields<'n> {
        let mut fields = Fields {
            entries: Vec::new(),
        };
        if node.is_null() {
            return fields;
        }
        let Some(entries) = node.as_map() else {
            self.error(
                node.line,
                path,
                format!("expected a mapping, found {}", node.type_name()),
            );
            return fields;
        };
        let mut seen: Vec<&str> = Vec::new();
        for (key, value) in entries {
            let Some(name) = key.as_scalar().map(|s| s.text.as_str()) else {
                self.error(key.line, path, "mapping keys must be strings");
                continue;
            };
            let field = join(path, name);
            if seen.contains(&name) {
                self.error(key.line, &field, "duplicate key");
                continue;
            }
            seen.push(name);
            match known.iter().find(|k| **k == name) {
                Some(k) => fields.entries.push((k, value)),
                None if strict => self.error(key.line, &field, "unknown field"),
                None => {}
            }
        }
        fields
    }

    /// A YAML string; plain scalars that YAML reads as null, bool or number are errors.
    fn string(&mut self, node: &Node, field: &str) -> Option<String> {
        match &node.value {
            Value::Scalar(s) if !s.plain || s.tagged_str || node.type_name() == "a string" => {
                Some(s.text.clone())
            }
            _ => {
                let hint = if node.as_scalar().is_some() {
                    " (quote it)"
                } else {
                    ""
                };
                self.error(
                    node.line,
                    field,
                    format!("expected a string, found {}{hint}", node.type_name()),
                );
                None
            }
        }
    }

    /// A string that may be left out; empty counts as absent.
    fn opt_string(&mut self, fields: &Fields, key: &str, path: &str) -> Option<String> {
        let node = fields.get(key)?;
        self.string(node, &join(path, key))
            .filter(|s| !s.is_empty())
    }

    fn keyword<T>(
        &mut self,
        fields: &Fields,
        key: &str,
        path: &str,
        parse: fn(&str) -> Option<T>,
        choices: fn() -> &'static str,
    ) -> Option<T> {
        let node = fields.get(key)?;
        let field = join(path, key);
        let text = self.string(node, &field)?;
        let value = parse(&text);
        if value.is_none() {
            self.error(
                node.line,
                &field,
                format!("`{text}` is not one of {}", choices()),
            );
        }
        value
    }

    fn boolean(&mut self, fields: &Fields, key: &str, path: &str) -> bool {
        let Some(node) = fields.get(key) else {
            return false;
        };
        match node.as_scalar() {
            Some(s) if s.plain && matches!(s.text.as_str(), "true" | "True" | "TRUE") => true,
            Some(s) if s.plain && matches!(s.text.as_str(), "false" | "False" | "FALSE") => false,
            _ => {
                self.error(
                    node.line,
                    &join(path, key),
                    format!("expected true or false, found {}", describe(node)),
                );
                false
            }
        }
    }

    fn time(&mut self, fields: &Fields, key: &str, path: &str) -> Option<Timestamp> {
        let node = fields.get(key)?;
        let field = join(path, key);
        let text = match node.as_scalar() {
            Some(s) => s.text.clone(),
            None => {
                self.error(
                    node.line,
                    &field,
                    format!("expected an RFC 3339 time, found {}", node.type_name()),
                );
                return None;
            }
        };
        match Timestamp::parse_rfc3339(&text) {
            Ok(t) => Some(t),
            Err(e) => {
                self.error(node.line, &field, e.to_string());
                None
            }
        }
    }

    fn seq<'n>(&mut self, fields: &Fields<'n>, key: &str, path: &str) -> &'n [Node] {
        let Some(node) = fields.get(key) else {
            return &[];
        };
        match node.as_seq() {
            Some(items) => items,
            None => {
                self.error(
                    node.line,
                    &join(path, key),
                    format!("expected a sequence, found {}", node.type_name()),
                );
                &[]
            }
        }
    }

    /// One document: an object, or a `kind: List` of objects.
    fn document(&mut self, root: &Node) -> Vec<Located> {
        let fields = self.fields(
            root,
            "",
            &["apiVersion", "kind", "metadata", "items"],
            false,
        );
        if root.as_map().is_none() {
            return Vec::new();
        }
        let is_list = fields
            .get("kind")
            .and_then(Node::as_scalar)
            .is_some_and(|s| s.text == "List");
        if !is_list {
            return self.object(root).into_iter().collect();
        }
        match fields.get("apiVersion").and_then(Node::as_scalar) {
            Some(s) if s.text == "v1" => {}
            Some(s) => self.error(
                fields.get("apiVersion").map_or(root.line, |n| n.line),
                "apiVersion",
                format!("a `kind: List` needs `apiVersion: v1`, found `{}`", s.text),
            ),
            None => self.error(
                root.line,
                "apiVersion",
                "missing (a `kind: List` needs `v1`)",
            ),
        }
        let mut objects = Vec::new();
        let items = self.seq(&fields, "items", "");
        for (i, item) in items.iter().enumerate() {
            let field = format!("items[{i}]");
            if item.is_null() {
                self.error(item.line, &field, "null item");
                continue;
            }
            if item
                .get("kind")
                .and_then(Node::as_scalar)
                .is_some_and(|s| s.text == "List")
            {
                self.error(item.line, &field, "a List inside a List");
                continue;
            }
            if item.as_map().is_none() {
                self.error(
                    item.line,
                    &field,
                    format!("expected an object, found {}", item.type_name()),
                );
                continue;
            }
            let line = self.line;
            self.line = item.line;
            objects.extend(self.object(item));
            self.line = line;
            self.object = None;
        }
        objects
    }

    fn object(&mut self, root: &Node) -> Option<Located> {
        let line = root.line.max(self.line);
        self.line = line;
        let peek = |node: Option<&Node>| node.and_then(Node::as_scalar).map(|s| s.text.clone());
        if let (Some(kind), Some(name)) = (
            peek(root.get("kind")),
            peek(root.get("metadata").and_then(|m| m.get("name"))),
        ) {
            let namespace = peek(root.get("metadata").and_then(|m| m.get("namespace")))
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "default".into());
            self.object = Some(format!("{kind} {namespace}/{name}"));
        }
        let fields = self.fields(
            root,
            "",
            &["apiVersion", "kind", "metadata", "spec", "status"],
            true,
        );
        let api_version = match fields.get("apiVersion") {
            Some(node) => self.string(node, "apiVersion"),
            None => {
                self.error(line, "apiVersion", "missing");
                None
            }
        };
        let kind_node = fields.get("kind");
        let kind = match kind_node {
            Some(node) => self.string(node, "kind"),
            None => {
                self.error(line, "kind", "missing");
                None
            }
        };
        let kind = kind.and_then(|k| match k.as_str() {
            "MCPServer" => Some(Kind::Server),
            "MCPAccessGrant" => Some(Kind::Grant),
            "MCPAgentSession" => Some(Kind::Session),
            other => {
                self.error(
                    kind_node.map_or(line, |n| n.line),
                    "kind",
                    format!("unknown kind `{other}` (expected MCPServer, MCPAccessGrant or MCPAgentSession)"),
                );
                None
            }
        });
        if let Some(v) = &api_version
            && v != API_VERSION
        {
            self.error(
                fields.get("apiVersion").map_or(line, |n| n.line),
                "apiVersion",
                format!("unknown apiVersion `{v}` (expected `{API_VERSION}`)"),
            );
        }
        let metadata = fields.get("metadata");
        let meta = match metadata {
            Some(node) => self.fields(node, "metadata", &["name", "namespace"], false),
            None => Fields {
                entries: Vec::new(),
            },
        };
        let name = match meta.get("name") {
            Some(node) => self.string(node, "metadata.name").filter(|n| !n.is_empty()),
            None => None,
        };
        if name.is_none() && meta.get("name").is_none() {
            self.error(
                metadata.map_or(line, |n| n.line),
                "metadata.name",
                "missing",
            );
        }
        let namespace = self
            .opt_string(&meta, "namespace", "metadata")
            .unwrap_or_else(|| "default".to_string());
        let (kind, name) = (kind?, name?);
        let key = ObjectKey::new(&namespace, &name);
        self.object = Some(format!("{} {key}", kind.as_str()));
        let errors_before = self.problems.len();
        let spec = fields.get("spec");
        let empty = Node {
            line,
            value: Value::Map(Vec::new()),
        };
        let spec = spec.unwrap_or(&empty);
        let parsed = match kind {
            Kind::Server => self.server(key.clone(), spec).map(Parsed::Server),
            Kind::Grant => self.grant(key.clone(), spec).map(Parsed::Grant),
            Kind::Session => self.session(key.clone(), spec).map(Parsed::Session),
        };
        let valid =
            api_version.as_deref() == Some(API_VERSION) && self.problems.len() == errors_before;
        Some(Located {
            kind,
            key,
            line,
            parsed: parsed.filter(|_| valid),
        })
    }

    fn server(&mut self, key: ObjectKey, spec: &Node) -> Option<Server> {
        let fields = self.fields(
            spec,
            "spec",
            &[
                "ingressPath",
                "teamID",
                "tools",
                "prompts",
                "resources",
                "auth",
                "policy",
                "session",
            ],
            false,
        );
        let ingress_path = match fields.get("ingressPath") {
            Some(node) => {
                let path = self.string(node, "spec.ingressPath")?;
                if !path.starts_with('/') || (path.len() > 1 && path.ends_with('/')) {
                    self.error(
                        node.line,
                        "spec.ingressPath",
                        format!("`{path}` must start with `/` and not end with `/`"),
                    );
                }
                path
            }
            None => format!("/{}/mcp", key.name),
        };
        let team_id = self.opt_string(&fields, "teamID", "spec");
        let tools = self.inventory(&fields, Primitive::Tool);
        let prompts = self.inventory(&fields, Primitive::Prompt);
        let resources = self.inventory(&fields, Primitive::Resource);
        let auth = self.auth(fields.get("auth"));
        let policy = fields
            .get("policy")
            .map(|n| {
                self.fields(
                    n,
                    "spec.policy",
                    &[
                        "mode",
                        "defaultDecision",
                        "policyVersion",
                        "govern",
                        "denyAs",
                    ],
                    true,
                )
            })
            .unwrap_or(Fields {
                entries: Vec::new(),
            });
        let mode = self
            .keyword(
                &policy,
                "mode",
                "spec.policy",
                ServerMode::parse,
                ServerMode::choices,
            )
            .unwrap_or(ServerMode::AllowList)
            .mode();
        let default_decision = self
            .keyword(
                &policy,
                "defaultDecision",
                "spec.policy",
                DefaultDecision::parse,
                DefaultDecision::choices,
            )
            .unwrap_or(DefaultDecision::Deny);
        let policy_version = self
            .opt_string(&policy, "policyVersion", "spec.policy")
            .map_or_else(|| "v1".into(), Into::into);
        let govern = self.govern(&policy);
        let deny_as = self
            .keyword(
                &policy,
                "denyAs",
                "spec.policy",
                DenyAs::parse,
                DenyAs::choices,
            )
            .unwrap_or(DenyAs::HttpStatus);
        let session = fields
            .get("session")
            .map(|n| self.fields(n, "spec.session", &["required"], true))
            .unwrap_or(Fields {
                entries: Vec::new(),
            });
        let session_required = self.boolean(&session, "required", "spec.session");
        Some(Server {
            key,
            ingress_path,
            team_id,
            tools,
            prompts,
            resources,
            auth: auth?,
            mode,
            default_decision,
            policy_version,
            govern,
            deny_as,
            session_required,
        })
    }

    /// `spec.tools`, `spec.prompts` or `spec.resources`: the server's inventory of one primitive.
    fn inventory(&mut self, fields: &Fields, primitive: Primitive) -> Vec<Entry> {
        let key = primitive.as_str();
        let known: &[&'static str] = match primitive {
            Primitive::Tool => &[
                "name",
                "requiredTrust",
                "sideEffect",
                "riskLevel",
                "description",
                "labels",
            ],
            Primitive::Prompt => &[
                "name",
                "requiredTrust",
                "riskLevel",
                "description",
                "labels",
                "arguments",
            ],
            Primitive::Resource => &[
                "uri",
                "uriPrefix",
                "name",
                "requiredTrust",
                "riskLevel",
                "description",
                "labels",
                "mimeType",
            ],
        };
        let mut entries: Vec<Entry> = Vec::new();
        for (i, node) in self.seq(fields, key, "spec").iter().enumerate() {
            let path = format!("spec.{key}[{i}]");
            let f = self.fields(node, &path, known, true);
            if primitive == Primitive::Resource {
                // A resource's `name` is only a label, but names are strings all the same.
                self.opt_string(&f, "name", &path);
            }
            let Some(target) = self.target(&f, node, &path, primitive) else {
                continue;
            };
            if entries
                .iter()
                .any(|e| (e.name.as_str(), e.prefix) == (&target.name, target.prefix))
            {
                self.error(
                    target.line,
                    &target.field,
                    format!("duplicate {} {}", primitive.key(), target.shown()),
                );
            }
            let required_trust = self
                .keyword(&f, "requiredTrust", &path, Trust::parse, Trust::choices)
                .unwrap_or(Trust::Low);
            // A declared prompt or resource only reads (SPEC §2 "The decision", step 4).
            let side_effect = match primitive {
                Primitive::Tool => self.keyword(
                    &f,
                    "sideEffect",
                    &path,
                    SideEffect::parse,
                    SideEffect::choices,
                ),
                Primitive::Prompt | Primitive::Resource => Some(SideEffect::Read),
            };
            let risk_level =
                self.keyword(&f, "riskLevel", &path, RiskLevel::parse, RiskLevel::choices);
            entries.push(Entry {
                name: target.name,
                prefix: target.prefix,
                required_trust,
                side_effect,
                risk_level,
            });
        }
        entries
    }

    /// `spec.toolRules`, `spec.promptRules` or `spec.resourceRules` of a grant.
    fn rules(&mut self, fields: &Fields, primitive: Primitive) -> Vec<Rule> {
        let key = format!("{}Rules", primitive.key());
        let known: &[&'static str] = match primitive {
            Primitive::Tool | Primitive::Prompt => &["name", "decision", "requiredTrust"],
            Primitive::Resource => &["uri", "uriPrefix", "decision", "requiredTrust"],
        };
        let mut rules: Vec<Rule> = Vec::new();
        for (i, node) in self.seq(fields, &key, "spec").iter().enumerate() {
            let path = format!("spec.{key}[{i}]");
            let f = self.fields(node, &path, known, true);
            let Some(target) = self.target(&f, node, &path, primitive) else {
                continue;
            };
            if rules
                .iter()
                .any(|r| (r.name.as_str(), r.prefix) == (&target.name, target.prefix))
            {
                self.error(
                    target.line,
                    &target.field,
                    format!("duplicate rule {}", target.shown()),
                );
            }
            let decision = self
                .keyword(
                    &f,
                    "decision",
                    &path,
                    RuleDecision::parse,
                    RuleDecision::choices,
                )
                .unwrap_or(RuleDecision::Allow);
            let required_trust = self
                .keyword(&f, "requiredTrust", &path, Trust::parse, Trust::choices)
                .unwrap_or(Trust::Low);
            rules.push(Rule {
                name: target.name,
                prefix: target.prefix,
                decision,
                required_trust,
            });
        }
        rules
    }

    /// What an inventory entry or a rule at `path` is about: a tool's or prompt's required
    /// `name`; a resource's `uri` or `uriPrefix` (exactly one, not empty) in canonical form.
    fn target(
        &mut self,
        f: &Fields,
        node: &Node,
        path: &str,
        primitive: Primitive,
    ) -> Option<Named> {
        if primitive != Primitive::Resource {
            let name = self.required_name(f, node, path)?;
            return Some(Named {
                line: f.get("name").map_or(node.line, |n| n.line),
                field: join(path, "name"),
                written: name.clone(),
                name,
                prefix: false,
            });
        }
        let (key, value) = match (f.get("uri"), f.get("uriPrefix")) {
            (Some(uri), None) => ("uri", uri),
            (None, Some(prefix)) => ("uriPrefix", prefix),
            (None, None) => {
                self.error(node.line, path, "needs `uri` or `uriPrefix`");
                return None;
            }
            (Some(_), Some(_)) => {
                self.error(
                    node.line,
                    path,
                    "has both `uri` and `uriPrefix` (give one of them)",
                );
                return None;
            }
        };
        let field = join(path, key);
        let written = self.string(value, &field)?;
        if written.is_empty() {
            self.error(value.line, &field, "must not be empty");
            return None;
        }
        let Some(canonical) = crate::uri::canonical(&written) else {
            self.error(
                value.line,
                &field,
                format!(
                    "`{written}` has no canonical form (percent-decoded, it is not UTF-8 or holds a NUL or a backslash)"
                ),
            );
            return None;
        };
        Some(Named {
            line: value.line,
            field,
            name: canonical.into_owned(),
            prefix: key == "uriPrefix",
            written,
        })
    }

    /// `spec.policy.govern`: a list of primitives that holds `tools`, each once.
    fn govern(&mut self, policy: &Fields) -> Governs {
        let Some(node) = policy.get("govern") else {
            return Governs::TOOLS_ONLY;
        };
        let mut governed: Vec<Primitive> = Vec::new();
        for (i, item) in self.seq(policy, "govern", "spec.policy").iter().enumerate() {
            let field = format!("spec.policy.govern[{i}]");
            let Some(text) = self.string(item, &field) else {
                continue;
            };
            match Primitive::parse(&text) {
                Some(p) if governed.contains(&p) => {
                    self.error(item.line, &field, format!("duplicate entry `{text}`"))
                }
                Some(p) => governed.push(p),
                None => self.error(
                    item.line,
                    &field,
                    format!("`{text}` is not one of {}", Primitive::choices()),
                ),
            }
        }
        if node.as_seq().is_some() && !governed.contains(&Primitive::Tool) {
            self.error(
                node.line,
                "spec.policy.govern",
                "must contain `tools` (tool calls are always decided)",
            );
        }
        Governs {
            prompts: governed.contains(&Primitive::Prompt),
            resources: governed.contains(&Primitive::Resource),
        }
    }

    fn required_name(&mut self, fields: &Fields, node: &Node, path: &str) -> Option<String> {
        match fields.get("name") {
            Some(n) => {
                let name = self.string(n, &join(path, "name"))?;
                if name.is_empty() {
                    self.error(n.line, &join(path, "name"), "must not be empty");
                    return None;
                }
                Some(name)
            }
            None => {
                self.error(node.line, &join(path, "name"), "missing");
                None
            }
        }
    }

    fn auth(&mut self, node: Option<&Node>) -> Option<Auth> {
        let mut auth = Auth::default();
        let Some(node) = node else {
            return Some(auth);
        };
        let path = "spec.auth";
        let f = self.fields(
            node,
            path,
            &[
                "mode",
                "humanIDHeader",
                "agentIDHeader",
                "teamIDHeader",
                "sessionIDHeader",
                "jwtPayloadKey",
                "trustDomain",
            ],
            true,
        );
        if let Some(mode) = self.keyword(&f, "mode", path, AuthMode::parse, AuthMode::choices) {
            auth.mode = mode;
        }
        for (key, slot) in [
            ("humanIDHeader", &mut auth.human_header),
            ("agentIDHeader", &mut auth.agent_header),
            ("teamIDHeader", &mut auth.team_header),
            ("sessionIDHeader", &mut auth.session_header),
            ("jwtPayloadKey", &mut auth.jwt_payload_key),
        ] {
            if let Some(value) = self.opt_string(&f, key, path) {
                *slot = value;
            }
        }
        auth.trust_domain = self.opt_string(&f, "trustDomain", path);
        if auth.mode == AuthMode::Mtls && auth.trust_domain.is_none() {
            self.error(
                node.line,
                "spec.auth.trustDomain",
                "required when `mode: mtls`",
            );
            return None;
        }
        Some(auth)
    }

    fn server_ref(&mut self, fields: &Fields, own: &ObjectKey, spec: &Node) -> Option<ObjectKey> {
        let Some(node) = fields.get("serverRef") else {
            self.error(spec.line, "spec.serverRef", "missing");
            return None;
        };
        let f = self.fields(node, "spec.serverRef", &["name", "namespace"], true);
        let name = self.required_name(&f, node, "spec.serverRef")?;
        let namespace = self
            .opt_string(&f, "namespace", "spec.serverRef")
            .unwrap_or_else(|| own.namespace.to_string());
        Some(ObjectKey::new(&namespace, &name))
    }

    fn subject(&mut self, fields: &Fields) -> Subject {
        let Some(node) = fields.get("subject") else {
            return Subject::default();
        };
        let path = "spec.subject";
        let f = self.fields(node, path, &["humanID", "agentID", "teamID"], true);
        Subject {
            human: self.opt_string(&f, "humanID", path),
            agent: self.opt_string(&f, "agentID", path),
            team: self.opt_string(&f, "teamID", path),
        }
    }

    fn grant(&mut self, key: ObjectKey, spec: &Node) -> Option<Grant> {
        let fields = self.fields(
            spec,
            "spec",
            &[
                "serverRef",
                "subject",
                "maxTrust",
                "allowedSideEffects",
                "toolRules",
                "promptRules",
                "resourceRules",
                "disabled",
                "expiresAt",
                "policyVersion",
                "mode",
            ],
            true,
        );
        let server_ref = self.server_ref(&fields, &key, spec);
        let subject = self.subject(&fields);
        let max_trust = self
            .keyword(&fields, "maxTrust", "spec", Trust::parse, Trust::choices)
            .unwrap_or(Trust::Low);
        let mut allowed_side_effects = Vec::new();
        for (i, node) in self
            .seq(&fields, "allowedSideEffects", "spec")
            .iter()
            .enumerate()
        {
            let field = format!("spec.allowedSideEffects[{i}]");
            let Some(text) = self.string(node, &field) else {
                continue;
            };
            match SideEffect::parse(&text) {
                Some(effect) if allowed_side_effects.contains(&effect) => {
                    self.error(node.line, &field, format!("duplicate side effect `{text}`"))
                }
                Some(effect) => allowed_side_effects.push(effect),
                None => self.error(
                    node.line,
                    &field,
                    format!("`{text}` is not one of {}", SideEffect::choices()),
                ),
            }
        }
        let tool_rules = self.rules(&fields, Primitive::Tool);
        let prompt_rules = self.rules(&fields, Primitive::Prompt);
        let resource_rules = self.rules(&fields, Primitive::Resource);
        let disabled = self.boolean(&fields, "disabled", "spec");
        let expires_at = self.time(&fields, "expiresAt", "spec");
        let policy_version = self
            .opt_string(&fields, "policyVersion", "spec")
            .map(Into::into);
        let mode = self
            .keyword(&fields, "mode", "spec", Mode::parse, Mode::choices)
            .unwrap_or(Mode::Enforce);
        Some(Grant {
            key,
            server_ref: server_ref?,
            subject,
            max_trust,
            allowed_side_effects,
            tool_rules,
            prompt_rules,
            resource_rules,
            disabled,
            expires_at,
            policy_version,
            mode,
        })
    }

    fn session(&mut self, key: ObjectKey, spec: &Node) -> Option<Session> {
        let fields = self.fields(
            spec,
            "spec",
            &[
                "serverRef",
                "subject",
                "consentedTrust",
                "expiresAt",
                "revoked",
                "policyVersion",
                "upstreamTokenSecretRef",
            ],
            true,
        );
        let server_ref = self.server_ref(&fields, &key, spec);
        let subject = self.subject(&fields);
        if subject.is_empty() {
            let line = fields.get("subject").map_or(spec.line, |n| n.line);
            self.error(
                line,
                "spec.subject",
                "needs at least one of humanID, agentID, teamID",
            );
        }
        let consented_trust = self
            .keyword(
                &fields,
                "consentedTrust",
                "spec",
                Trust::parse,
                Trust::choices,
            )
            .unwrap_or(Trust::Low);
        let expires_at = self.time(&fields, "expiresAt", "spec");
        let revoked = self.boolean(&fields, "revoked", "spec");
        let policy_version = self
            .opt_string(&fields, "policyVersion", "spec")
            .map(Into::into);
        Some(Session {
            key,
            server_ref: server_ref?,
            subject,
            consented_trust,
            expires_at,
            revoked,
            policy_version,
        })
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn describe(node: &Node) -> String {
    match node.as_scalar() {
        Some(s) if s.plain => format!("`{}`", s.text),
        Some(s) => format!("the string `{}`", s.text),
        None => node.type_name().to_string(),
    }
}
