//! Property tests of the event frame: arbitrary bytes never panic, every built frame round-trips.

use databus_core::{
    Event, EventView, FrameHeader, Key, Opcode, PartitionId, SchemaId, Scn, SourceId,
};
use proptest::prelude::*;

fn arb_event() -> impl Strategy<Value = Event> {
    (
        any::<u64>(),
        prop_oneof![Just(Opcode::Upsert), Just(Opcode::Delete)],
        any::<u16>(),
        any::<u16>(),
        any::<u64>(),
        any::<u64>(),
        prop_oneof![
            any::<i64>().prop_map(Key::Int),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Key::Bytes),
        ],
        proptest::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(
            |(scn, opcode, source, partition, ts, schema, key, payload)| Event {
                scn: Scn::new(scn),
                opcode,
                source: SourceId::new(source),
                partition: PartitionId::new(partition),
                timestamp_ns: ts,
                schema: SchemaId::new(schema),
                key,
                payload,
            },
        )
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = EventView::parse(&bytes);
        let _ = FrameHeader::parse(&bytes);
        let _ = EventView::parse_all(&bytes);
    }

    #[test]
    fn built_frames_round_trip(event in arb_event()) {
        let frame = event.to_frame();
        let (view, used) = EventView::parse(&frame).unwrap();
        prop_assert_eq!(used, frame.len());
        prop_assert_eq!(Event::from(view), event);
    }

    #[test]
    fn corrupted_frames_are_errors_not_panics(event in arb_event(), at in any::<usize>(), xor in 1u8..) {
        let mut frame = event.to_frame();
        let at = at % frame.len();
        frame[at] ^= xor;
        prop_assert!(EventView::parse(&frame).is_err());
    }
}
