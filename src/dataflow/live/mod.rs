//! The live path of the dataflow.

pub mod decode;
pub mod durable_sink;
pub mod sink;
pub mod stream;
pub mod verify_checksums;
pub mod window;
