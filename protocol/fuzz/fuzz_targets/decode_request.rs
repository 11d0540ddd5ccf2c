#![no_main]
//! Any bytes on a Kafka connection: decoding must return a frame, ask for more, or fail,
//! and never panic or abort.

use libfuzzer_sys::fuzz_target;

#[global_allocator]
static GLOBAL: protocol::alloc::LazyHugeAlloc = protocol::alloc::LazyHugeAlloc;

fuzz_target!(|data: &[u8]| {
    let mut buf = bytes::BytesMut::from(data);
    while let Ok(Some(_)) = protocol::frame::decode_request(&mut buf, 1 << 20) {}
    if data.len() >= 4 {
        let _ = protocol::frame::decode_frame(bytes::Bytes::copy_from_slice(&data[4..]));
    }
});
