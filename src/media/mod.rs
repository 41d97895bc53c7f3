//! Media handling: HLS playlist writing (FFmpeg transcoding joins here with VOD).

pub mod live_playlist;
