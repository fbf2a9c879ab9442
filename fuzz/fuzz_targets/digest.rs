#![no_main]
//! Fuzzes ocimux::testing::fuzzing::digest (see src/fuzzing.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| ocimux::testing::fuzzing::digest(data));
