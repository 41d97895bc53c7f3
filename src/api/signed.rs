//! Signed playback URLs: an HMAC-SHA256 of the stream id and the expiry, with a secret kept in
//! the data dir.
//!
//! The signature sits in the path, `/play/{expires}/{sig}/{stream_id}/live.m3u8`, and covers
//! the stream id and expiry: the playlist's relative segment URIs resolve under the same
//! signed prefix, so the manifest URL works in a player by itself.

use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

pub struct UrlSigner {
    secret: Vec<u8>,
    pub ttl_secs: u64,
}

impl UrlSigner {
    /// Loads the data dir's signing secret, generating it on first start.
    pub fn load_or_create(data_dir: &Path, ttl_secs: u64) -> std::io::Result<UrlSigner> {
        let path = data_dir.join("signing.key");
        let secret = match std::fs::read_to_string(&path) {
            Ok(text) => {
                hex::decode(text.trim()).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let secret: [u8; 32] = rand::random();
                write_private(&path, &hex::encode(secret))?;
                secret.to_vec()
            }
            Err(e) => return Err(e),
        };
        if secret.len() < 16 {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "signing.key is too short"));
        }
        Ok(UrlSigner { secret, ttl_secs })
    }

    fn mac(&self, stream_id: &str, expires: u64) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(format!("{stream_id}:{expires}").as_bytes());
        mac
    }

    pub fn sign(&self, stream_id: &str, expires: u64) -> String {
        hex::encode(self.mac(stream_id, expires).finalize().into_bytes())
    }

    /// Constant-time check of a signature.
    pub fn verify(&self, stream_id: &str, expires: u64, signature: &str) -> bool {
        match hex::decode(signature) {
            Ok(bytes) => self.mac(stream_id, expires).verify_slice(&bytes).is_ok(),
            Err(_) => false,
        }
    }

    /// A signed URL of `file` in the stream's playback folder, and when it expires (s).
    pub fn url(&self, base: &str, stream_id: &str, file: &str, now_s: u64) -> (String, u64) {
        let expires = now_s + self.ttl_secs;
        let signature = self.sign(stream_id, expires);
        (format!("{}/play/{expires}/{signature}/{stream_id}/{file}", base.trim_end_matches('/')), expires)
    }
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(text.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_bind_stream_and_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let signer = UrlSigner::load_or_create(dir.path(), 60).unwrap();
        let sig = signer.sign("live-a", 1000);
        assert!(signer.verify("live-a", 1000, &sig));
        assert!(!signer.verify("live-b", 1000, &sig));
        assert!(!signer.verify("live-a", 1001, &sig));
        assert!(!signer.verify("live-a", 1000, "zz"));
        // The secret persists across restarts.
        let again = UrlSigner::load_or_create(dir.path(), 60).unwrap();
        assert!(again.verify("live-a", 1000, &sig));
    }
}
