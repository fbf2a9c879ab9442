#![no_main]
//! Fuzzes ocimux::testing::fuzzing::tar_index (see src/fuzzing.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| ocimux::testing::fuzzing::tar_index(data));
