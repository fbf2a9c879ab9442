#![no_main]
//! Fuzzes ocimux::testing::fuzzing::mount_options (see src/fuzzing.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| ocimux::testing::fuzzing::mount_options(data));
