//! Where bytes and documents live: the object store and the metadata store, each behind a
//! trait with an embedded backend and a shared-service one.

pub mod metadata;
pub mod object;

/// The cause of a backend's error, kept for whoever inspects the chain.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
