//! Event frames from arbitrary bytes: decoding never panics, and whatever decodes re-encodes to a frame
//! that decodes to the same event.

#![no_main]

use databus_core::{Event, EventView, FrameHeader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let header = FrameHeader::parse(data);
    match EventView::parse(data) {
        Ok((view, used)) => {
            assert!(header.is_ok(), "a frame parsed whose header did not");
            assert!(used <= data.len());
            assert_eq!(view.as_bytes().len(), used);
            let event = Event::from(view);
            let frame = event.to_frame();
            let (again, again_used) = EventView::parse(&frame).expect("a re-encoded event decodes");
            assert_eq!(again_used, frame.len());
            assert_eq!(Event::from(again), event);
        }
        Err(_) => {}
    }
    if let Ok(views) = EventView::parse_all(data) {
        let total: usize = views.iter().map(|v| v.as_bytes().len()).sum();
        assert_eq!(total, data.len(), "parse_all must consume every byte");
        for view in views {
            let _ = (view.key(), view.payload(), view.scn(), view.opcode());
        }
    }
});
