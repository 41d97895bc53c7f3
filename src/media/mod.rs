//! Media handling: HLS playlist writing, and FFmpeg probing, transcoding and remuxing for VOD.

pub mod jobs;
pub mod ladder;
pub mod live_playlist;
pub mod probe;
pub mod remux;
pub mod transcode;
pub mod vod_playlist;
