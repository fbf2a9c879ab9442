#![no_main]
//! Fuzzes ocimux::fuzzing::platform (see src/fuzzing.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| ocimux::fuzzing::platform(data));
