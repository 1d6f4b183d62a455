//! The gRPC codec of every generated client and server: prost's, with a 1 KiB starting
//! buffer instead of tonic's 8 KiB. Each call allocates its encode and decode buffers; etcd's
//! requests and most answers are small, and an 8 KiB block bypasses malloc's per-thread
//! cache (measured: `_int_malloc` under `Streaming::new_request` was ~4 % of the node's CPU
//! per put). Larger messages grow the buffer as before.

use std::marker::PhantomData;
use std::sync::Arc;

use tonic::codec::{BufferSettings, Codec, EncodeBuf, Encoder};
use tonic::Status;
use tonic_prost::{ProstDecoder, ProstEncoder};

/// The starting size of a call's encode and decode buffers.
const BUFFER: usize = 1024;
/// tonic's default: how much a server stream encodes before it yields.
const YIELD_THRESHOLD: usize = 32 * 1024;

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER, YIELD_THRESHOLD)
}

/// `tonic_prost::ProstCodec` with small buffers (named by `build.rs`).
#[derive(Debug, Clone)]
pub struct SmallCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for SmallCodec<T, U> {
    fn default() -> Self {
        SmallCodec(PhantomData)
    }
}

impl<T, U> Codec for SmallCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(settings())
    }
}

/// `SmallCodec` for a request behind an `Arc`: the attempts of one call (the remote client's
/// failover) share the request instead of copying its keys and values for each attempt.
#[derive(Debug, Clone)]
pub struct SharedCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for SharedCodec<T, U> {
    fn default() -> Self {
        SharedCodec(PhantomData)
    }
}

impl<T, U> Codec for SharedCodec<T, U>
where
    T: prost::Message + Send + Sync + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = Arc<T>;
    type Decode = U;
    type Encoder = SharedEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        SharedEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(settings())
    }
}

/// Encodes the message an `Arc` points to.
#[derive(Debug)]
pub struct SharedEncoder<T>(PhantomData<T>);

impl<T: prost::Message> Encoder for SharedEncoder<T> {
    type Item = Arc<T>;
    type Error = Status;

    fn encode(&mut self, item: Arc<T>, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        // An `EncodeBuf` grows as needed: prost's only error (no room) cannot happen.
        item.encode(buf)
            .map_err(|e| Status::internal(format!("cannot encode the request: {e}")))
    }

    fn buffer_settings(&self) -> BufferSettings {
        settings()
    }
}
