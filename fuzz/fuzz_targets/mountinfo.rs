#![no_main]
//! Fuzzes ocimux::fuzzing::mountinfo (see src/fuzzing.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| ocimux::fuzzing::mountinfo(data));
