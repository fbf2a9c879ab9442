#![no_main]
//! Fuzzes ocimux::fuzzing::tar_index (see src/fuzzing.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| ocimux::fuzzing::tar_index(data));
