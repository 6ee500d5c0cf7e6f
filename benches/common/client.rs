//! A raw ext_authz client shared by the tests and the load benchmark: CheckRequest bytes are
//! sent exactly as given, answers decoded with the generated types.
#![allow(dead_code)]

use std::collections::HashMap;

use bytes::BufMut;
use mcp_authz::proto::auth::{AttributeContext, CheckRequest, CheckResponse, attribute_context};
use prost::Message;
use tonic::Status;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic::transport::Channel;

/// Sends already-encoded CheckRequest bytes with gRPC metadata (e.g. Envoy's `traceparent`).
pub async fn check_bytes<B: AsRef<[u8]> + Send + Sync + 'static>(
    channel: &Channel,
    request: B,
    metadata: &[(&'static str, &str)],
) -> Result<CheckResponse, Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let path = http::uri::PathAndQuery::from_static("/envoy.service.auth.v3.Authorization/Check");
    let mut request = tonic::Request::new(request);
    for (key, value) in metadata {
        request.metadata_mut().insert(*key, value.parse().unwrap());
    }
    grpc.unary(request, path, RawCodec::default())
        .await
        .map(tonic::Response::into_inner)
}

/// An encoded CheckRequest for an HTTP request with `headers` and `body`.
pub fn encode_request(
    method: &str,
    path: &str,
    headers: HashMap<String, String>,
    body: &[u8],
) -> Vec<u8> {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(attribute_context::Request {
                time: None,
                http: Some(attribute_context::HttpRequest {
                    method: method.into(),
                    path: path.into(),
                    headers,
                    raw_body: body.to_vec(),
                    protocol: "HTTP/1.1".into(),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
    }
    .encode_to_vec()
}

/// Peak resident memory of a process, from `/proc` (0 where unknown).
pub fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

pub struct RawCodec<B>(std::marker::PhantomData<B>);

impl<B> Default for RawCodec<B> {
    fn default() -> Self {
        RawCodec(std::marker::PhantomData)
    }
}

impl<B: AsRef<[u8]> + Send + Sync + 'static> Codec for RawCodec<B> {
    type Encode = B;
    type Decode = CheckResponse;
    type Encoder = RawEncoder<B>;
    type Decoder = tonic_prost::ProstDecoder<CheckResponse>;

    fn encoder(&mut self) -> Self::Encoder {
        RawEncoder(std::marker::PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::default()
    }
}

pub struct RawEncoder<B>(std::marker::PhantomData<B>);

impl<B: AsRef<[u8]>> Encoder for RawEncoder<B> {
    type Item = B;
    type Error = Status;

    fn encode(&mut self, item: B, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put_slice(item.as_ref());
        Ok(())
    }
}
