//! Arbitrary valid ops: transform, compose, invert (see `tandem::fuzzing`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tandem::fuzzing::op_algebra(data));
