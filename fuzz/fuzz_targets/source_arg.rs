#![no_main]
//! Fuzzes ocimux::fuzzing::source_arg (see src/fuzzing.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| ocimux::fuzzing::source_arg(data));
