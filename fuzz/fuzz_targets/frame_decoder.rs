//! Event frames from arbitrary bytes: decoding never panics, and whatever decodes re-encodes to a frame
//! that decodes to the same event.
//!
//! The first input byte picks the mode: even = the bytes as they are (checksums, magic and version must
//! be found by chance); odd = the rest with magic, version and both CRC32C checksums repaired, so the
//! fuzzer explores the length, opcode and key checks behind them.

#![no_main]

use databus_core::frame::{HEADER_LEN, MAGIC, VERSION};
use databus_core::{Event, EventView, FrameHeader};
use libfuzzer_sys::fuzz_target;

fn repair(bytes: &mut [u8]) {
    if bytes.len() < HEADER_LEN {
        return;
    }
    bytes[..4].copy_from_slice(&MAGIC);
    bytes[4] = VERSION;
    let frame_len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
    let body_end = frame_len.clamp(HEADER_LEN, bytes.len());
    let body_crc = crc32c::crc32c(&bytes[HEADER_LEN..body_end]);
    bytes[48..52].copy_from_slice(&body_crc.to_le_bytes());
    let header_crc = crc32c::crc32c(&bytes[..52]);
    bytes[52..56].copy_from_slice(&header_crc.to_le_bytes());
}

fn check(data: &[u8]) {
    let header = FrameHeader::parse(data);
    if let Ok((view, used)) = EventView::parse(data) {
        assert!(header.is_ok(), "a frame parsed whose header did not");
        assert!(used <= data.len());
        assert_eq!(view.as_bytes().len(), used);
        let event = Event::from(view);
        let frame = event.to_frame();
        let (again, again_used) = EventView::parse(&frame).expect("a re-encoded event decodes");
        assert_eq!(again_used, frame.len());
        assert_eq!(Event::from(again), event);
    }
    if let Ok(views) = EventView::parse_all(data) {
        let total: usize = views.iter().map(|v| v.as_bytes().len()).sum();
        assert_eq!(total, data.len(), "parse_all must consume every byte");
        for view in views {
            let _ = (view.key(), view.payload(), view.scn(), view.opcode());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        check(rest);
    } else {
        let mut repaired = rest.to_vec();
        repair(&mut repaired);
        check(&repaired);
    }
});
