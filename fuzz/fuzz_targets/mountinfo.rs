#![no_main]
//! Fuzzes ocimux::testing::fuzzing::mountinfo (see src/fuzzing.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| ocimux::testing::fuzzing::mountinfo(data));
