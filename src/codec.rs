//! The gRPC codecs: prost's, except that a message that cannot be decoded is INVALID_ARGUMENT
//! (SPEC §3), which Envoy handles by its `failure_mode_allow`, rather than prost's INTERNAL;
//! and the Check server's, whose answers are already wire bytes ([`EncodedResponse`]).

use std::marker::PhantomData;

use bytes::BufMut;
use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, DecodeBuf, EncodeBuf};
use tonic_prost::{ProstDecoder, ProstEncoder};

use crate::proto::auth::CheckRequest;
use crate::response::EncodedResponse;

#[derive(Debug, Clone)]
pub struct Codec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Codec(PhantomData)
    }
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = Decoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        Decoder(ProstDecoder::default())
    }
}

#[derive(Debug, Clone)]
pub struct Decoder<U>(ProstDecoder<U>);

impl<U: Message + Default> tonic::codec::Decoder for Decoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|status| {
            Status::invalid_argument(format!("cannot decode the request: {}", status.message()))
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

/// The Check server's codec: decodes a CheckRequest, sends an answer's bytes as they are.
#[derive(Debug, Clone, Default)]
pub struct CheckCodec;

impl tonic::codec::Codec for CheckCodec {
    type Encode = EncodedResponse;
    type Decode = CheckRequest;
    type Encoder = AnswerEncoder;
    type Decoder = Decoder<CheckRequest>;

    fn encoder(&mut self) -> Self::Encoder {
        AnswerEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        Decoder(ProstDecoder::default())
    }
}

#[derive(Debug, Clone)]
pub struct AnswerEncoder;

impl tonic::codec::Encoder for AnswerEncoder {
    type Item = EncodedResponse;
    type Error = Status;

    fn encode(&mut self, item: EncodedResponse, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item.0);
        Ok(())
    }
}
