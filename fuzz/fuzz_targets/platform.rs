#![no_main]
//! Fuzzes ocimux::testing::fuzzing::platform (see src/fuzzing.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| ocimux::testing::fuzzing::platform(data));
