//! List filtering over Envoy's ext_proc (SPEC §7): one `Process` stream per HTTP request.
//!
//! Envoy sends the request's headers, its buffered body, the answer's headers and, when still
//! asked for, the answer's buffered body, and waits for a reply to each. The MCP method is in
//! the request body, but Envoy honours a mode override only in the reply to a headers message:
//! - request headers: a GET or DELETE (an event stream, a session's end), or a POST whose
//!   `mcp-method` names no list method (ext_authz checked that it describes the body), switches
//!   the rest of the exchange off at once;
//! - request body: the method, found as a Check finds it ([`rpc::inspect`]);
//! - response headers: anything but a list request with a readable answer switches the
//!   response body off, so no tool call or stream is held back;
//! - response body: the list narrowed by [`filter`], with `content-length` set to the new
//!   length when the answer had one (Envoy refuses a body of another length otherwise) and
//!   `x-would-hide`, which depends on the body and so is set in the body's reply.
//!
//! Nothing here aborts a stream: an ext_authz denial opens one that carries only its 403's
//! headers, and an aborted stream would turn that denial into a 500.
//!
//! The server is the one ext_authz decided the request for (`mcp_server` in its dynamic
//! metadata, forwarded with `metadata_options.forwarding_namespaces`), since ext_proc gets no
//! `context_extensions`; without it, the server whose `ingressPath` the path falls under.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::SystemTime;

use prost_types::value::Kind as ValueKind;
use tonic::codegen::tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::audit::{Audit, FilterRecord, SpanIds, parent_ids};
use crate::check::{Options, decide_call};
use crate::decision::{CallInfo, Verdict};
use crate::filter::{self, Filtered, Format, ListMethod, Passthrough, Visibility};
use crate::identity::{self, Caller};
use crate::metrics::Metrics;
use crate::policy::Timestamp;
use crate::policy::snapshot::CompiledServer;
use crate::policy::{Mode, Primitive, Snapshot};
use crate::proto::core::header_value_option::HeaderAppendAction;
use crate::proto::core::{HeaderValue, HeaderValueOption, Metadata};
use crate::proto::ext_proc::external_processor_server::ExternalProcessor;
use crate::proto::ext_proc::processing_request::Request as Message;
use crate::proto::ext_proc::processing_response::Response as Reply;
use crate::proto::ext_proc::{
    BodyMutation, BodyResponse, CommonResponse, HeaderMutation, HeadersResponse, HttpBody,
    HttpHeaders, ProcessingRequest, ProcessingResponse, TrailersResponse, body_mutation,
};
use crate::proto::processing_mode::ProcessingMode;
use crate::proto::processing_mode::processing_mode::{BodySendMode, HeaderSendMode};
use crate::reload::PolicyStore;
use crate::request::{CheckInput, Headers, jwt_payloads};
use crate::rpc::{self, Inspection, Message as RpcMessage};

/// The service name Envoy's active gRPC health check asks for on the ext_proc cluster.
pub const EXT_PROC_SERVICE: &str = "envoy.service.ext_proc.v3.ExternalProcessor";

/// Set on a filtered answer when monitor mode kept entries a call of which it would deny.
pub const WOULD_HIDE_HEADER: &str = "x-would-hide";

/// Where ext_authz's decision is in the forwarded dynamic metadata.
const EXT_AUTHZ_FILTER: &str = "envoy.filters.http.ext_authz";
/// The filter name Envoy files the `request_attributes` under.
const EXT_PROC_FILTER: &str = "envoy.filters.http.ext_proc";
/// The attribute holding what ext_authz reports as `source.principal`: the peer
/// certificate's first URI SAN (a SPIFFE id).
const PEER_URI_SAN: &str = "connection.uri_san_peer_certificate";

/// The ext_proc service: what it shares with every stream.
#[derive(Clone)]
pub struct ListFilter {
    shared: Arc<Shared>,
}

struct Shared {
    store: Arc<PolicyStore>,
    options: Options,
    metrics: Arc<Metrics>,
    audit: Audit,
    /// Each passthrough reason is logged the first time it happens, then only counted.
    logged: [AtomicBool; Passthrough::ALL.len()],
}

impl ListFilter {
    pub fn new(
        store: Arc<PolicyStore>,
        options: Options,
        metrics: Arc<Metrics>,
        audit: Audit,
    ) -> Self {
        ListFilter {
            shared: Arc::new(Shared {
                store,
                options,
                metrics,
                audit,
                logged: Default::default(),
            }),
        }
    }
}

#[tonic::async_trait]
impl ExternalProcessor for ListFilter {
    type ProcessStream = Exchange;

    async fn process(
        &self,
        request: Request<Streaming<ProcessingRequest>>,
    ) -> Result<Response<Exchange>, Status> {
        // Envoy's ext_proc client span, the first parent of a filter span (as of a Check's).
        let traceparent = request
            .metadata()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok(Response::new(Exchange {
            inbound: request.into_inner(),
            stream: StreamState {
                shared: Arc::clone(&self.shared),
                phase: Phase::Start,
                traceparent,
            },
        }))
    }
}

/// One Process stream: each message Envoy sends is answered as it arrives.
pub struct Exchange {
    inbound: Streaming<ProcessingRequest>,
    stream: StreamState,
}

impl Stream for Exchange {
    type Item = Result<ProcessingResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        Pin::new(&mut this.inbound)
            .poll_next(cx)
            .map(|next| next.map(|message| message.and_then(|m| this.stream.answer(m))))
    }
}

struct StreamState {
    shared: Arc<Shared>,
    phase: Phase,
    /// The `traceparent` of the Process call's metadata.
    traceparent: Option<String>,
}

/// Where the exchange is.
enum Phase {
    /// Before the request headers: an ext_authz denial's stream starts at its answer.
    Start,
    /// The request headers, waiting for the body that names the method.
    Request(Box<Head>),
    /// A list request whose answer is filtered.
    List(Box<ListRequest>),
    /// Nothing left to filter.
    Done,
}

/// What the request headers message carries that identifies the server and the caller.
struct Head {
    headers: Vec<HeaderValue>,
    metadata: Option<Metadata>,
    attributes: HashMap<String, prost_types::Struct>,
}

impl Head {
    /// The request as a Check reads it; `body` is the buffered request body.
    fn input<'a>(&'a self, body: &'a [u8]) -> CheckInput<'a> {
        let ext_authz = self
            .metadata
            .as_ref()
            .and_then(|m| m.filter_metadata.get(EXT_AUTHZ_FILTER));
        CheckInput {
            method: pseudo_header(&self.headers, ":method"),
            path: pseudo_header(&self.headers, ":path"),
            headers: Headers::from_header_map(&self.headers),
            body,
            mcp_server: string_field(ext_authz, "mcp_server"),
            principal: string_field(self.attributes.get(EXT_PROC_FILTER), PEER_URI_SAN)
                .unwrap_or_default(),
            jwt_payloads: jwt_payloads(self.metadata.as_ref()),
        }
    }
}

/// A pseudo-header (`:method`, `:path`, `:status`) as sent, "" when absent.
fn pseudo_header<'a>(headers: &'a [HeaderValue], name: &str) -> &'a str {
    let Some(header) = headers.iter().find(|h| h.key == name) else {
        return "";
    };
    if header.raw_value.is_empty() {
        &header.value
    } else {
        std::str::from_utf8(&header.raw_value).unwrap_or_default()
    }
}

fn string_field<'a>(fields: Option<&'a prost_types::Struct>, key: &str) -> Option<&'a str> {
    match fields?.fields.get(key)?.kind.as_ref()? {
        ValueKind::StringValue(s) => Some(s),
        _ => None,
    }
}

struct ListRequest {
    head: Head,
    method: ListMethod,
    /// The list request's `params._meta.traceparent`.
    meta_traceparent: Option<String>,
    /// The policy the request was read under; its answer is filtered under the same.
    snapshot: Arc<Snapshot>,
    /// Known once the answer's headers are read.
    answer: Option<Answer>,
}

struct Answer {
    format: Format,
    /// The answer had a `content-length`, which must then be the new body's.
    sized: bool,
}

impl StreamState {
    fn answer(&mut self, message: ProcessingRequest) -> Result<ProcessingResponse, Status> {
        let ProcessingRequest {
            request,
            metadata_context,
            attributes,
        } = message;
        let reply = match request {
            Some(Message::RequestHeaders(headers)) => self.request_headers(Head {
                headers: headers.headers.map(|m| m.headers).unwrap_or_default(),
                metadata: metadata_context,
                attributes,
            }),
            Some(Message::RequestBody(body)) => self.request_body(&body),
            Some(Message::ResponseHeaders(headers)) => self.response_headers(&headers),
            Some(Message::ResponseBody(body)) => self.response_body(body),
            Some(Message::RequestTrailers(_)) => {
                respond(Reply::RequestTrailers(TrailersResponse {}))
            }
            Some(Message::ResponseTrailers(_)) => {
                respond(Reply::ResponseTrailers(TrailersResponse {}))
            }
            None => return Err(Status::invalid_argument("a processing request of no kind")),
        };
        Ok(reply)
    }

    fn request_headers(&mut self, head: Head) -> ProcessingResponse {
        let input = head.input(&[]);
        let may_list = input.method.eq_ignore_ascii_case("POST")
            && input
                .headers
                .get("mcp-method")
                .is_none_or(|m| ListMethod::parse(&m).is_some());
        let reply = Reply::RequestHeaders(HeadersResponse::default());
        if may_list {
            self.phase = Phase::Request(Box::new(head));
            return respond(reply);
        }
        self.phase = Phase::Done;
        ProcessingResponse {
            response: Some(reply),
            mode_override: Some(ProcessingMode {
                request_body_mode: BodySendMode::None.into(),
                response_header_mode: HeaderSendMode::Skip.into(),
                response_body_mode: BodySendMode::None.into(),
                ..ProcessingMode::default()
            }),
        }
    }

    fn request_body(&mut self, body: &HttpBody) -> ProcessingResponse {
        let reply = respond(Reply::RequestBody(BodyResponse::default()));
        let Phase::Request(head) = std::mem::replace(&mut self.phase, Phase::Done) else {
            return reply;
        };
        let Some(snapshot) = self.shared.store.current().clone() else {
            return reply;
        };
        let input = head.input(&body.body);
        let list = {
            let Some(server) = select_server(&snapshot, &input) else {
                if lists(&input) {
                    self.passthrough(Passthrough::UnknownServer);
                }
                return reply;
            };
            let inspected = rpc::inspect(
                input.method,
                &input.headers,
                input.body,
                self.shared.options.max_body_bytes,
                server.server.govern,
            );
            let Ok(Inspection::Messages(messages)) = inspected else {
                return reply;
            };
            let governed = |m: ListMethod| server.server.govern.contains(m.primitive());
            match messages.as_slice() {
                [RpcMessage::Request(call)] if !call.in_batch => ListMethod::parse(&call.method)
                    .filter(|m| governed(*m))
                    .map(|m| (m, call.traceparent.as_deref().map(str::to_string))),
                calls => {
                    let listing = calls.iter().any(|c| match c {
                        RpcMessage::Request(call) => {
                            ListMethod::parse(&call.method).is_some_and(governed)
                        }
                        RpcMessage::Response => false,
                    });
                    if listing {
                        self.passthrough(Passthrough::Batch);
                    }
                    None
                }
            }
        };
        if let Some((method, meta_traceparent)) = list {
            self.phase = Phase::List(Box::new(ListRequest {
                head: *head,
                method,
                meta_traceparent,
                snapshot,
                answer: None,
            }));
        }
        reply
    }

    fn response_headers(&mut self, headers: &HttpHeaders) -> ProcessingResponse {
        // Only mcp-authz says what it would hide: an upstream's `x-would-hide` is removed.
        let reply = Reply::ResponseHeaders(HeadersResponse {
            response: Some(CommonResponse {
                header_mutation: Some(HeaderMutation {
                    remove_headers: vec![WOULD_HIDE_HEADER.to_string()],
                    ..HeaderMutation::default()
                }),
                ..CommonResponse::default()
            }),
        });
        if let Phase::List(list) = &mut self.phase {
            let map = headers.headers.as_ref().map_or(&[][..], |m| &m.headers[..]);
            let status = pseudo_header(map, ":status");
            let ok = status.len() == 3 && status.starts_with('2');
            let headers = Headers::from_header_map(map);
            if ok {
                match filter::format(
                    headers.get("content-type").as_deref(),
                    headers.get("content-encoding").as_deref(),
                ) {
                    Ok(format) => {
                        list.answer = Some(Answer {
                            format,
                            sized: headers.get("content-length").is_some(),
                        });
                        return respond(reply);
                    }
                    Err(reason) => self.passthrough(reason),
                }
            }
        }
        self.phase = Phase::Done;
        ProcessingResponse {
            response: Some(reply),
            mode_override: Some(ProcessingMode {
                response_body_mode: BodySendMode::None.into(),
                ..ProcessingMode::default()
            }),
        }
    }

    fn response_body(&mut self, body: HttpBody) -> ProcessingResponse {
        let unchanged = respond(Reply::ResponseBody(BodyResponse::default()));
        let Phase::List(list) = std::mem::replace(&mut self.phase, Phase::Done) else {
            return unchanged;
        };
        let Some(answer) = &list.answer else {
            return unchanged;
        };
        // Buffered bodies come whole; a part means the answer outgrew Envoy's buffer.
        if !body.end_of_stream {
            self.passthrough(Passthrough::TooLarge);
            return unchanged;
        }
        let started = SystemTime::now();
        match self.filter(&list, answer.format, &body.body, started) {
            Ok(filtered) => {
                let mut set_headers = Vec::new();
                if answer.sized {
                    set_headers.push(overwrite("content-length", filtered.body.len()));
                }
                if filtered.would_hide > 0 {
                    set_headers.push(overwrite(WOULD_HIDE_HEADER, filtered.would_hide));
                }
                respond(Reply::ResponseBody(BodyResponse {
                    response: Some(CommonResponse {
                        header_mutation: Some(HeaderMutation {
                            set_headers,
                            ..HeaderMutation::default()
                        }),
                        body_mutation: Some(BodyMutation {
                            mutation: Some(body_mutation::Mutation::Body(
                                filtered.body.into_bytes(),
                            )),
                        }),
                    }),
                }))
            }
            Err(reason) => {
                self.passthrough(reason);
                unchanged
            }
        }
    }

    /// The answer narrowed to what the caller could call now, decided entry by entry as a
    /// Check of that call would be.
    fn filter(
        &self,
        list: &ListRequest,
        format: Format,
        body: &[u8],
        started: SystemTime,
    ) -> Result<Filtered, Passthrough> {
        let snapshot = &*list.snapshot;
        let input = list.head.input(&[]);
        let server = select_server(snapshot, &input).ok_or(Passthrough::UnknownServer)?;
        let now = Timestamp::from_system(started);
        let caller = identity::resolve(server, &input, now);
        let mut mode = Mode::Enforce;
        let filtered = filter::filter(list.method, format, body, |primitive, name| {
            let (visibility, entry_mode) = visibility(
                snapshot,
                server,
                &caller,
                &self.shared.options,
                now,
                primitive,
                name,
            );
            if entry_mode == Mode::Monitor {
                mode = Mode::Monitor;
            }
            visibility
        })?;
        // The record of a filtered list (SPEC §7): counted, and its `mcp.authz.filter` span.
        self.shared
            .metrics
            .record_hidden(&server.server.key.full, mode, filtered.hidden);
        let call = CallInfo {
            traceparent: list.meta_traceparent.as_deref().map(Into::into),
            ..CallInfo::default()
        };
        let parent = parent_ids(self.traceparent.as_deref(), &input, Some(&call));
        let ids = SpanIds::random();
        let caller = caller.ok();
        let own = |text: Option<&std::borrow::Cow<str>>| text.map(|t| t.to_string());
        self.shared.audit.record_filter(FilterRecord {
            started,
            ended: SystemTime::now(),
            ids: SpanIds {
                trace_id: parent.map_or(ids.trace_id, |p| p.trace_id),
                span_id: ids.span_id,
            },
            parent,
            method: list.method.as_str(),
            server: server.server.key.clone(),
            human: own(caller.as_ref().and_then(|c| c.identity.human.as_ref())),
            agent: own(caller.as_ref().and_then(|c| c.identity.agent.as_ref())),
            team: own(caller.as_ref().and_then(|c| c.identity.team.as_ref())),
            session_id: own(caller.as_ref().and_then(|c| c.session_id.as_ref())),
            revision: snapshot.revision.clone(),
            mode,
            listed: filtered.listed,
            hidden: filtered.hidden,
            would_hide: filtered.would_hide,
            hidden_names: filtered.hidden_names.clone(),
        });
        Ok(filtered)
    }

    fn passthrough(&self, reason: Passthrough) {
        self.shared.metrics.record_passthrough(reason);
        let index = Passthrough::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or_default();
        if !self.shared.logged[index].swap(true, Ordering::Relaxed) {
            tracing::warn!(
                reason = reason.as_str(),
                "a list answer is passed on unfiltered (logged once per reason, counted in mcp_authz_filter_passthrough_total)"
            );
        }
    }
}

/// The server ext_authz decided the request for, else the one the path selects.
fn select_server<'s>(snapshot: &'s Snapshot, input: &CheckInput) -> Option<&'s CompiledServer> {
    match input.mcp_server {
        Some(key) => snapshot.server_named(key),
        None => snapshot.server_for_path(input.path_only()),
    }
}

/// The body holds a list request (in a batch or not), whatever server it is for.
fn lists(input: &CheckInput) -> bool {
    rpc::parse_messages(input.body).is_ok_and(|messages| {
        messages.iter().any(|m| match m {
            RpcMessage::Request(call) => ListMethod::parse(&call.method).is_some(),
            RpcMessage::Response => false,
        })
    })
}

/// What a call of `name` by this caller would do now, and the mode its decision applied in:
/// the decision a Check of that call gets. A caller who cannot be identified is decided as no
/// one, which every decided call denies as it denies them (identity comes first, and only
/// service and server monitor mode can let such a denial through).
fn visibility<'a>(
    snapshot: &'a Snapshot,
    server: &'a CompiledServer,
    caller: &Result<Caller<'a>, identity::IdentityDenial<'a>>,
    options: &Options,
    now: Timestamp,
    primitive: Primitive,
    name: &str,
) -> (Visibility, Mode) {
    // Until prompts and resources are decided, a Check lets every call of them through.
    if primitive != Primitive::Tool {
        return (Visibility::Allowed, Mode::Enforce);
    }
    let caller = match caller {
        Ok(caller) => caller.clone(),
        Err(_) => Caller {
            identity: Default::default(),
            session_id: None,
            session: None,
        },
    };
    let target = crate::decision::Target {
        primitive,
        name: name.into(),
    };
    let decision = decide_call(
        snapshot,
        server,
        caller,
        target,
        options,
        now,
        &mut crate::decide::NoRecord,
    );
    let visibility = match (decision.applied(), decision.would_deny) {
        (Verdict::Deny, _) => Visibility::Denied,
        (Verdict::Allow, true) => Visibility::WouldDeny,
        (Verdict::Allow, false) => Visibility::Allowed,
    };
    (visibility, decision.mode)
}

fn respond(reply: Reply) -> ProcessingResponse {
    ProcessingResponse {
        response: Some(reply),
        mode_override: None,
    }
}

/// Sets `key` to `value`, replacing what the upstream sent.
fn overwrite(key: &str, value: usize) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_string(),
            value: String::new(),
            raw_value: value.to_string().into_bytes(),
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd.into(),
        ..HeaderValueOption::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::core::HeaderMap;

    const SUPPORT: [(&str, &str); 2] = [
        ("x-mcp-agent-id", "support-bot"),
        ("x-mcp-team-id", "support"),
    ];
    const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    const TOOLS: &str = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"search"},{"name":"summarize"},{"name":"create_ticket"},{"name":"delete_ticket"}]}}"#;

    fn stream() -> (StreamState, Arc<Metrics>) {
        let store = Arc::new(PolicyStore::default());
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/policies");
        store.reload(&dir).expect("deploy/policies loads");
        let metrics = Arc::new(Metrics::new());
        let filter = ListFilter::new(
            store,
            Options::default(),
            Arc::clone(&metrics),
            Audit::discarding(),
        );
        let stream = StreamState {
            shared: filter.shared,
            phase: Phase::Start,
            traceparent: None,
        };
        (stream, metrics)
    }

    fn headers(pairs: &[(&str, &str)]) -> HttpHeaders {
        HttpHeaders {
            headers: Some(HeaderMap {
                headers: pairs
                    .iter()
                    .map(|(k, v)| HeaderValue {
                        key: k.to_string(),
                        value: String::new(),
                        raw_value: v.as_bytes().to_vec(),
                    })
                    .collect(),
            }),
            end_of_stream: false,
        }
    }

    fn send(stream: &mut StreamState, request: Message) -> ProcessingResponse {
        send_with(stream, request, None)
    }

    fn send_with(
        stream: &mut StreamState,
        request: Message,
        metadata: Option<Metadata>,
    ) -> ProcessingResponse {
        stream
            .answer(ProcessingRequest {
                request: Some(request),
                metadata_context: metadata,
                attributes: HashMap::new(),
            })
            .expect("every message is answered")
    }

    fn body(text: &str) -> HttpBody {
        HttpBody {
            body: text.as_bytes().to_vec(),
            end_of_stream: true,
        }
    }

    /// A POST to `path` by `caller` with `request_body`, answered with `answer` under
    /// `answer_headers`; the replies to the answer's headers and body.
    fn exchange(
        path: &str,
        caller: &[(&str, &str)],
        request_body: &str,
        answer_headers: &[(&str, &str)],
        answer: &str,
    ) -> (ProcessingResponse, ProcessingResponse, Arc<Metrics>) {
        let (mut stream, metrics) = stream();
        let mut request = vec![(":method", "POST"), (":path", path)];
        request.extend_from_slice(caller);
        let reply = send(&mut stream, Message::RequestHeaders(headers(&request)));
        assert_eq!(reply.mode_override, None, "a POST may be a list request");
        let reply = send(&mut stream, Message::RequestBody(body(request_body)));
        assert_eq!(reply, respond(Reply::RequestBody(BodyResponse::default())));
        let head = send(
            &mut stream,
            Message::ResponseHeaders(headers(answer_headers)),
        );
        let tail = send(&mut stream, Message::ResponseBody(body(answer)));
        (head, tail, metrics)
    }

    fn json_answer(length: usize) -> Vec<(&'static str, String)> {
        vec![
            (":status", "200".into()),
            ("content-type", "application/json".into()),
            ("content-length", length.to_string()),
        ]
    }

    fn pairs<'a>(owned: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
        owned.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }

    /// The new body and the headers set, of a body reply that changed the answer.
    fn rewritten(reply: &ProcessingResponse) -> (String, Vec<(String, String)>) {
        let Some(Reply::ResponseBody(BodyResponse {
            response: Some(common),
        })) = &reply.response
        else {
            panic!("not a body rewrite: {reply:?}");
        };
        let Some(BodyMutation {
            mutation: Some(body_mutation::Mutation::Body(body)),
        }) = &common.body_mutation
        else {
            panic!("no new body: {reply:?}");
        };
        let set = common
            .header_mutation
            .iter()
            .flat_map(|m| &m.set_headers)
            .map(|o| {
                let h = o.header.as_ref().unwrap();
                assert_eq!(
                    o.append_action,
                    i32::from(HeaderAppendAction::OverwriteIfExistsOrAdd)
                );
                (
                    h.key.clone(),
                    String::from_utf8(h.raw_value.clone()).unwrap(),
                )
            })
            .collect();
        (String::from_utf8(body.clone()).unwrap(), set)
    }

    fn off(reply: &ProcessingResponse) -> bool {
        reply
            .mode_override
            .as_ref()
            .is_some_and(|m| m.response_body_mode == i32::from(BodySendMode::None))
    }

    fn listed(body: &str) -> Vec<String> {
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        v["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn a_json_list_keeps_only_callable_tools_and_its_length_is_set() {
        let answer = json_answer(TOOLS.len());
        let (head, tail, metrics) = exchange("/demo/mcp", &SUPPORT, LIST, &pairs(&answer), TOOLS);
        assert!(!off(&head), "the list answer's body is asked for: {head:?}");
        let Some(Reply::ResponseHeaders(HeadersResponse {
            response: Some(common),
        })) = &head.response
        else {
            panic!("{head:?}")
        };
        assert_eq!(
            common.header_mutation.as_ref().unwrap().remove_headers,
            [WOULD_HIDE_HEADER]
        );
        let (body, set) = rewritten(&tail);
        assert_eq!(listed(&body), ["search", "summarize", "create_ticket"]);
        assert_eq!(
            set,
            [("content-length".to_string(), body.len().to_string())]
        );
        assert!(
            metrics.encode().contains(
                r#"mcp_authz_list_entries_hidden_total{server="mcp/demo",mode="enforce"} 1"#
            ),
            "{}",
            metrics.encode()
        );
    }

    #[test]
    fn monitor_grants_keep_entries_and_say_how_many() {
        let answer = json_answer(TOOLS.len());
        let (_, tail, _) = exchange(
            "/demo/mcp",
            &[("x-mcp-agent-id", "triage-bot")],
            LIST,
            &pairs(&answer),
            TOOLS,
        );
        let (body, set) = rewritten(&tail);
        assert_eq!(listed(&body).len(), 4);
        assert!(
            set.contains(&(WOULD_HIDE_HEADER.to_string(), "3".to_string())),
            "{set:?}"
        );
    }

    #[test]
    fn nobody_sees_nothing() {
        let answer = json_answer(TOOLS.len());
        let (_, tail, _) = exchange("/demo/mcp", &[], LIST, &pairs(&answer), TOOLS);
        let (body, _) = rewritten(&tail);
        assert!(listed(&body).is_empty(), "{body}");
    }

    #[test]
    fn the_server_ext_authz_decided_for_comes_before_the_path() {
        let (mut stream, _) = stream();
        let mut request = vec![(":method", "POST"), (":path", "/v2/gateway/rpc")];
        request.extend_from_slice(&SUPPORT);
        let metadata = Metadata {
            filter_metadata: [(
                EXT_AUTHZ_FILTER.to_string(),
                prost_types::Struct {
                    fields: [(
                        "mcp_server".to_string(),
                        prost_types::Value {
                            kind: Some(ValueKind::StringValue("mcp/demo".into())),
                        },
                    )]
                    .into(),
                },
            )]
            .into(),
            ..Metadata::default()
        };
        send_with(
            &mut stream,
            Message::RequestHeaders(headers(&request)),
            Some(metadata),
        );
        send(&mut stream, Message::RequestBody(body(LIST)));
        let answer = json_answer(TOOLS.len());
        send(
            &mut stream,
            Message::ResponseHeaders(headers(&pairs(&answer))),
        );
        let (body, _) = rewritten(&send(&mut stream, Message::ResponseBody(body(TOOLS))));
        assert_eq!(listed(&body), ["search", "summarize", "create_ticket"]);
    }

    #[test]
    fn an_event_stream_answer_has_no_length_to_set() {
        let stream_body = format!("event: message\r\ndata: {TOOLS}\r\n\r\n");
        let (_, tail, _) = exchange(
            "/demo/mcp",
            &SUPPORT,
            LIST,
            &[(":status", "200"), ("content-type", "text/event-stream")],
            &stream_body,
        );
        let (body, set) = rewritten(&tail);
        assert!(body.starts_with("event: message\r\ndata: {"), "{body}");
        assert!(body.ends_with("}\r\n\r\n"), "{body}");
        assert!(!body.contains("delete_ticket"));
        assert!(set.is_empty(), "{set:?}");
    }

    #[test]
    fn streams_and_session_ends_are_switched_off_at_the_request_headers() {
        for (method, extra) in [
            ("GET", None),
            ("DELETE", None),
            ("POST", Some(("mcp-method", "tools/call"))),
        ] {
            let (mut stream, _) = stream();
            let mut request = vec![(":method", method), (":path", "/demo/mcp")];
            request.extend(extra);
            let reply = send(&mut stream, Message::RequestHeaders(headers(&request)));
            let mode = reply.mode_override.expect("switched off");
            assert_eq!(mode.request_body_mode, i32::from(BodySendMode::None));
            assert_eq!(mode.response_header_mode, i32::from(HeaderSendMode::Skip));
            assert_eq!(mode.response_body_mode, i32::from(BodySendMode::None));
        }
    }

    #[test]
    fn other_calls_are_switched_off_at_the_response_headers() {
        let call = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"search"}}"#;
        let answer = json_answer(10);
        let (head, tail, metrics) = exchange("/demo/mcp", &SUPPORT, call, &pairs(&answer), "{}");
        assert!(off(&head), "{head:?}");
        assert_eq!(tail, respond(Reply::ResponseBody(BodyResponse::default())));
        assert!(!metrics.encode().contains("passthrough_total{"));
    }

    #[test]
    fn a_denials_stream_is_answered_not_aborted() {
        let (mut stream, _) = stream();
        let reply = send(
            &mut stream,
            Message::ResponseHeaders(headers(&[(":status", "403")])),
        );
        assert!(off(&reply), "{reply:?}");
    }

    #[test]
    fn unreadable_answers_are_passed_on_and_counted() {
        let gzip = [
            (":status", "200"),
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ];
        let (head, _, metrics) = exchange("/demo/mcp", &SUPPORT, LIST, &gzip, "\u{1f}");
        assert!(off(&head));
        assert!(
            metrics
                .encode()
                .contains(r#"mcp_authz_filter_passthrough_total{reason="content_encoding"} 1"#)
        );

        let answer = json_answer(8);
        let (head, tail, metrics) =
            exchange("/demo/mcp", &SUPPORT, LIST, &pairs(&answer), "not json");
        assert!(!off(&head));
        assert_eq!(tail, respond(Reply::ResponseBody(BodyResponse::default())));
        assert!(
            metrics
                .encode()
                .contains(r#"mcp_authz_filter_passthrough_total{reason="not_json"} 1"#)
        );

        let batch = format!("[{LIST}]");
        let (head, _, metrics) = exchange("/demo/mcp", &SUPPORT, &batch, &pairs(&answer), "[]");
        assert!(off(&head));
        assert!(
            metrics
                .encode()
                .contains(r#"mcp_authz_filter_passthrough_total{reason="batch"} 1"#)
        );

        let (head, _, metrics) = exchange("/elsewhere", &SUPPORT, LIST, &pairs(&answer), "{}");
        assert!(off(&head));
        assert!(
            metrics
                .encode()
                .contains(r#"mcp_authz_filter_passthrough_total{reason="unknown_server"} 1"#)
        );
    }

    #[test]
    fn an_error_status_is_not_a_list() {
        let answer = [(":status", "500"), ("content-type", "application/json")];
        let (head, _, metrics) = exchange("/demo/mcp", &SUPPORT, LIST, &answer, "{}");
        assert!(off(&head));
        assert!(!metrics.encode().contains("passthrough_total{"));
    }

    mod against_check {
        use super::*;
        use crate::check::authorize;
        use crate::decision::Verdict;
        use crate::policy::load_files;
        use proptest::prelude::*;

        const TOOLS: [&str; 4] = ["t0", "t1", "t2", "t3"];
        const TRUST: [&str; 3] = ["low", "medium", "high"];
        const EFFECTS: [&str; 3] = ["read", "write", "destructive"];

        #[derive(Debug, Clone)]
        struct Grant {
            agent: usize,
            max_trust: usize,
            effects: [bool; 3],
            /// Per tool: no rule, allow, deny.
            rules: Option<[u8; 4]>,
            monitor: bool,
        }

        fn grant() -> impl Strategy<Value = Grant> {
            (
                0usize..3,
                0usize..3,
                any::<[bool; 3]>(),
                prop::option::of(prop::array::uniform4(0u8..3)),
                any::<bool>(),
            )
                .prop_map(|(agent, max_trust, effects, rules, monitor)| Grant {
                    agent,
                    max_trust,
                    effects,
                    rules,
                    monitor,
                })
        }

        fn yaml(tools: &[(usize, Option<usize>)], grants: &[Grant], monitor: bool) -> String {
            let mut out = String::from(
                "apiVersion: mcpruntime.org/v1alpha1\nkind: MCPServer\nmetadata: {name: demo, namespace: mcp}\nspec:\n  ingressPath: /demo/mcp\n  tools:\n",
            );
            for (i, (trust, effect)) in tools.iter().enumerate() {
                let effect =
                    effect.map_or(String::new(), |e| format!(", sideEffect: {}", EFFECTS[e]));
                out += &format!(
                    "    - {{name: t{i}, requiredTrust: {}{effect}}}\n",
                    TRUST[*trust]
                );
            }
            let mode = if monitor { "monitor" } else { "allow-list" };
            out += &format!("  policy: {{mode: {mode}, defaultDecision: deny}}\n");
            for (i, g) in grants.iter().enumerate() {
                let effects: Vec<&str> = EFFECTS
                    .iter()
                    .zip(g.effects)
                    .filter(|(_, on)| *on)
                    .map(|(e, _)| *e)
                    .collect();
                out += &format!(
                    "---\napiVersion: mcpruntime.org/v1alpha1\nkind: MCPAccessGrant\nmetadata: {{name: g{i}, namespace: mcp}}\nspec:\n  serverRef: {{name: demo}}\n  subject: {{agentID: a{}}}\n  maxTrust: {}\n  allowedSideEffects: [{}]\n  mode: {}\n",
                    g.agent,
                    TRUST[g.max_trust],
                    effects.join(", "),
                    if g.monitor { "monitor" } else { "enforce" }
                );
                if let Some(rules) = g.rules {
                    out += "  toolRules:\n";
                    for (t, rule) in rules.iter().enumerate() {
                        match rule {
                            1 => out += &format!("    - {{name: t{t}}}\n"),
                            2 => out += &format!("    - {{name: t{t}, decision: deny}}\n"),
                            _ => {}
                        }
                    }
                }
            }
            out
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]
            /// Whatever the policy, each caller's filtered list holds exactly the tools a
            /// Check of their call lets through (allowed or would-deny).
            #[test]
            fn the_list_is_what_checks_let_through(
                tools in prop::collection::vec((0usize..3, prop::option::of(0usize..3)), 4),
                grants in prop::collection::vec(grant(), 0..5),
                monitor_server in any::<bool>(),
            ) {
                let text = yaml(&tools, &grants, monitor_server);
                let set = load_files(&[("p.yaml", text.as_bytes())]).expect("the generated policy is valid");
                let store = Arc::new(PolicyStore::default());
                store.install_set(set);
                let snapshot = store.current().clone().unwrap();
                let answer = serde_json::json!({"jsonrpc": "2.0", "id": 1, "result": {
                    "tools": TOOLS.iter().map(|t| serde_json::json!({"name": t})).collect::<Vec<_>>()
                }})
                .to_string();
                for agent in ["a0", "a1", "a2", "a3"] {
                    let mut stream = StreamState {
                        shared: ListFilter::new(Arc::clone(&store), Options::default(), Arc::new(Metrics::new()), Audit::discarding()).shared,
                        traceparent: None,
                        phase: Phase::Start,
                    };
                    let request = [(":method", "POST"), (":path", "/demo/mcp"), ("x-mcp-agent-id", agent)];
                    send(&mut stream, Message::RequestHeaders(headers(&request)));
                    send(&mut stream, Message::RequestBody(body(LIST)));
                    let length = answer.len().to_string();
                    send(&mut stream, Message::ResponseHeaders(headers(&[(":status", "200"), ("content-type", "application/json"), ("content-length", &length)])));
                    let (filtered, _) = rewritten(&send(&mut stream, Message::ResponseBody(body(&answer))));
                    let callable: Vec<String> = TOOLS
                        .iter()
                        .filter(|tool| {
                            let call = format!(r#"{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"{tool}"}}}}"#);
                            let input = CheckInput {
                                method: "POST",
                                path: "/demo/mcp",
                                headers: Headers::new(vec![("x-mcp-agent-id", agent)]),
                                body: call.as_bytes(),
                                ..CheckInput::default()
                            };
                            let decision = authorize(Some(&snapshot), &input, &Options::default(), Timestamp::now());
                            decision.applied() == Verdict::Allow
                        })
                        .map(|t| t.to_string())
                        .collect();
                    prop_assert_eq!(listed(&filtered), callable, "{} under\n{}", agent, text);
                }
            }
        }
    }
}
