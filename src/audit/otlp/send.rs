//! Sending an encoded export request to the collector: OTLP/gRPC (`TraceService/Export`, over
//! a tonic channel) or OTLP/HTTP with a protobuf body (POST over hyper), with every
//! [`ExportConfig`] setting: the URL, headers, timeout, gzip and the TLS files.

use std::io::Write;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;

use crate::otlp_config::{ConfigError, ExportConfig, Protocol, TlsMaterial};

/// The gRPC method OTLP exports traces with.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
/// What is read of an HTTP answer's body (the answer is not used beyond its status).
const MAX_ANSWER: usize = 64 * 1024;

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Where export requests go (one per process, so its size does not matter).
#[allow(clippy::large_enum_variant)]
pub enum Transport {
    Grpc {
        grpc: tonic::client::Grpc<Channel>,
        metadata: tonic::metadata::MetadataMap,
    },
    Http {
        client: HttpsClient,
        uri: hyper::Uri,
        headers: hyper::HeaderMap,
        gzip: bool,
        timeout: Duration,
        /// The compressed body being built (reused).
        compressed: Vec<u8>,
    },
}

impl Transport {
    /// The transport for `config`. Reads the certificate files (an unreadable or empty one is
    /// an error); call it inside a Tokio runtime. Connects when the first request is sent.
    pub fn new(config: &ExportConfig) -> Result<Self, ConfigError> {
        let tls = TlsMaterial::load(&config.tls)?;
        let https = config.https();
        if !https && tls.has_files() {
            tracing::warn!(
                endpoint = %config.url(),
                "the OTLP certificate settings apply to https:// endpoints only; this one is plain"
            );
        }
        let build = |what: &str, e: &dyn std::fmt::Display| {
            ConfigError::Build(format!("{what} `{}`: {e}", config.url()))
        };
        match config.protocol {
            Protocol::Grpc => {
                let mut metadata = tonic::metadata::MetadataMap::new();
                for (key, value) in &config.headers {
                    let name = tonic::metadata::MetadataKey::from_bytes(key.as_bytes())
                        .map_err(|e| ConfigError::Build(format!("header `{key}`: {e}")))?;
                    let value = value
                        .parse()
                        .map_err(|e| ConfigError::Build(format!("header `{key}`: {e}")))?;
                    metadata.append(name, value);
                }
                let mut endpoint = tonic::transport::Endpoint::from_shared(config.url())
                    .map_err(|e| build("endpoint", &e))?;
                if https {
                    endpoint = endpoint
                        .tls_config(tls.tonic_client())
                        .map_err(|e| build("TLS for", &e))?;
                }
                let channel = endpoint.timeout(config.timeout).connect_lazy();
                let mut grpc = tonic::client::Grpc::new(channel);
                if config.gzip {
                    grpc = grpc
                        .send_compressed(CompressionEncoding::Gzip)
                        .accept_compressed(CompressionEncoding::Gzip);
                }
                Ok(Transport::Grpc { grpc, metadata })
            }
            Protocol::HttpProtobuf => {
                let connector = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(tls.rustls_client()?)
                    .https_or_http()
                    .enable_http1()
                    .build();
                let client = Client::builder(TokioExecutor::new()).build(connector);
                let uri = config
                    .url()
                    .parse::<hyper::Uri>()
                    .map_err(|e| build("endpoint", &e))?;
                let mut headers = hyper::HeaderMap::new();
                for (key, value) in &config.headers {
                    let name = hyper::header::HeaderName::from_bytes(key.as_bytes())
                        .map_err(|e| ConfigError::Build(format!("header `{key}`: {e}")))?;
                    let value = hyper::header::HeaderValue::from_str(value)
                        .map_err(|e| ConfigError::Build(format!("header `{key}`: {e}")))?;
                    headers.append(name, value);
                }
                Ok(Transport::Http {
                    client,
                    uri,
                    headers,
                    gzip: config.gzip,
                    timeout: config.timeout,
                    compressed: Vec::new(),
                })
            }
        }
    }

    /// Sends one encoded `ExportTraceServiceRequest`; `Err` says why it was not accepted.
    pub async fn send(&mut self, request: Bytes) -> Result<(), String> {
        match self {
            Transport::Grpc { grpc, metadata } => {
                grpc.ready()
                    .await
                    .map_err(|e| format!("the collector cannot be reached: {e}"))?;
                let request = tonic::Request::from_parts(
                    metadata.clone(),
                    tonic::Extensions::default(),
                    request,
                );
                let path = tonic::codegen::http::uri::PathAndQuery::from_static(EXPORT_PATH);
                match grpc.unary(request, path, EncodedCodec).await {
                    Ok(_) => Ok(()),
                    Err(status) => Err(grpc_failure(&status)),
                }
            }
            Transport::Http {
                client,
                uri,
                headers,
                gzip,
                timeout,
                compressed,
            } => {
                let mut builder = hyper::Request::post(uri.clone())
                    .header(hyper::header::CONTENT_TYPE, "application/x-protobuf");
                let body = if *gzip {
                    builder = builder.header(hyper::header::CONTENT_ENCODING, "gzip");
                    compressed.clear();
                    let mut encoder = flate2::write::GzEncoder::new(
                        &mut *compressed,
                        flate2::Compression::default(),
                    );
                    encoder
                        .write_all(&request)
                        .and_then(|()| encoder.finish().map(drop))
                        .map_err(|e| format!("cannot compress the request: {e}"))?;
                    Bytes::copy_from_slice(compressed)
                } else {
                    request
                };
                if let Some(map) = builder.headers_mut() {
                    map.extend(headers.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                let request = builder
                    .body(Full::new(body))
                    .map_err(|e| format!("cannot build the request: {e}"))?;
                let answer = tokio::time::timeout(*timeout, async {
                    let response = client
                        .request(request)
                        .await
                        .map_err(|e| format!("HTTP export failed: {}", source_chain(&e)))?;
                    let status = response.status();
                    // Read (a bounded part of) the answer, so the connection can be reused.
                    let _ = Limited::new(response.into_body(), MAX_ANSWER)
                        .collect()
                        .await;
                    if status.is_success() {
                        Ok(())
                    } else {
                        Err(format!(
                            "HTTP export failed with status code: {}",
                            status.as_u16()
                        ))
                    }
                })
                .await;
                answer.unwrap_or_else(|_| Err(format!("HTTP export timed out after {timeout:?}")))
            }
        }
    }
}

/// A failed gRPC export: the code, and the local cause when tonic's transport made the status
/// (the collector's message is left out: it may echo a credential back).
fn grpc_failure(status: &tonic::Status) -> String {
    let mut out = format!("gRPC export failed with code {:?}", status.code());
    if let Some(source) = std::error::Error::source(status) {
        out.push_str(": ");
        out.push_str(&source_chain(source));
    }
    out
}

/// An error and its causes, `: `-separated.
fn source_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut next = error.source();
    while let Some(e) = next {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = e.source();
    }
    out
}

/// A codec whose request is already encoded and whose answer is not read.
#[derive(Debug, Clone, Copy)]
struct EncodedCodec;

impl Codec for EncodedCodec {
    type Encode = Bytes;
    type Decode = ();
    type Encoder = EncodedCodec;
    type Decoder = EncodedCodec;

    fn encoder(&mut self) -> Self::Encoder {
        EncodedCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        EncodedCodec
    }
}

impl Encoder for EncodedCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for EncodedCodec {
    type Item = ();
    type Error = tonic::Status;

    /// `ExportTraceServiceResponse` (its `partial_success` is not reported).
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<()>, Self::Error> {
        src.advance(src.remaining());
        Ok(Some(()))
    }
}
