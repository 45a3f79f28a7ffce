//! Checkpoint JSON from arbitrary bytes: parsing never panics, and a checkpoint that parses renders to
//! JSON that parses back to the same checkpoint.

#![no_main]

use databus_core::Checkpoint;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(checkpoint) = Checkpoint::from_json(text) {
        let json = checkpoint.to_json();
        let again = Checkpoint::from_json(&json).expect("a rendered checkpoint parses");
        assert_eq!(again, checkpoint);
    }
});
