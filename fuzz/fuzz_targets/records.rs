//! Arbitrary bytes through the range aligner (framer) and the record reader (parser, renderer):
//! see fanout_core::fuzzing::exercise for the invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fanout_core::fuzzing::exercise(data);
});
