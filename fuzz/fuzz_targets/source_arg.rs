#![no_main]
//! Fuzzes ocimux::testing::fuzzing::source_arg (see src/fuzzing.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| ocimux::testing::fuzzing::source_arg(data));
