//! A raw ext_authz client shared by the tests and the load benchmark: CheckRequest bytes are
//! sent exactly as given, answers decoded with the generated types (or left as bytes).
#![allow(dead_code)]

use std::collections::HashMap;

use bytes::{Buf, BufMut, Bytes};
use mcp_authz::proto::auth::{AttributeContext, CheckRequest, CheckResponse, attribute_context};
use prost::Message;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;

/// Sends already-encoded CheckRequest bytes with gRPC metadata (e.g. Envoy's `traceparent`).
pub async fn check_bytes<B: AsRef<[u8]> + Send + Sync + 'static>(
    channel: &Channel,
    request: B,
    metadata: &[(&'static str, &str)],
) -> Result<CheckResponse, Status> {
    call(
        channel,
        request,
        metadata,
        tonic_prost::ProstDecoder::default(),
    )
    .await
}

/// Sends already-encoded CheckRequest bytes; the answer comes back as sent, undecoded.
pub async fn check_undecoded<B: AsRef<[u8]> + Send + Sync + 'static>(
    channel: &Channel,
    request: B,
) -> Result<Bytes, Status> {
    call(channel, request, &[], Undecoded).await
}

async fn call<B, D>(
    channel: &Channel,
    request: B,
    metadata: &[(&'static str, &str)],
    decoder: D,
) -> Result<D::Item, Status>
where
    B: AsRef<[u8]> + Send + Sync + 'static,
    D: Decoder<Error = Status> + Clone + Send + 'static,
    D::Item: Send + Sync + 'static,
{
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let path = http::uri::PathAndQuery::from_static("/envoy.service.auth.v3.Authorization/Check");
    let mut request = tonic::Request::new(request);
    for (key, value) in metadata {
        request.metadata_mut().insert(*key, value.parse().unwrap());
    }
    let codec = RawCodec {
        decoder,
        request: std::marker::PhantomData,
    };
    grpc.unary(request, path, codec)
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

/// Sends the given bytes as the message; decodes answers with `decoder`.
pub struct RawCodec<B, D> {
    decoder: D,
    request: std::marker::PhantomData<B>,
}

impl<B, D> Codec for RawCodec<B, D>
where
    B: AsRef<[u8]> + Send + Sync + 'static,
    D: Decoder<Error = Status> + Clone + Send + 'static,
    D::Item: Send + Sync + 'static,
{
    type Encode = B;
    type Decode = D::Item;
    type Encoder = RawEncoder<B>;
    type Decoder = D;

    fn encoder(&mut self) -> Self::Encoder {
        RawEncoder(std::marker::PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        self.decoder.clone()
    }
}

/// Leaves an answer as its bytes.
#[derive(Clone, Copy)]
pub struct Undecoded;

impl Decoder for Undecoded {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining())))
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
