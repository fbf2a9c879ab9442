#![no_main]
//! Fuzzes ocimux::fuzzing::digest (see src/fuzzing.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| ocimux::fuzzing::digest(data));
