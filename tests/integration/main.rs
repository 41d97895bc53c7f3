//! segflow's integration tests, one binary: end to end through the API with real FFmpeg output
//! on the embedded backends and on real Kafka, S3 and MongoDB servers, the live dataflow
//! against a plain recomputation, crash and restart of the real binary, bad input, the
//! bounds on what a client may take, damage to the data dir, the backends against their
//! servers, and the deployment files.
//!
//! Tests that need the test servers are ignored unless the `real-services` feature is on:
//! `scripts/test.sh` starts the servers and runs them all.

#[macro_use]
mod common;

mod auth;
mod bad_input;
mod bounds;
mod cluster;
mod damage;
mod deploy_files;
mod jobs;
mod kafka;
mod library;
mod live;
mod oracle;
mod recording;
mod restart;
mod startup;
mod storage_mongodb;
mod storage_s3;
mod vod;
