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

/// A secret written as hex (`what` names where it came from).
fn decode(text: &str, what: &str) -> std::io::Result<Vec<u8>> {
    hex::decode(text.trim())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{what} is not hex: {e}")))
}

pub struct UrlSigner {
    secret: Vec<u8>,
    pub ttl_secs: u64,
}

impl UrlSigner {
    /// The configured secret (hex), or else the data dir's, generated on first start.
    pub fn from_config(configured: Option<&str>, data_dir: &Path, ttl_secs: u64) -> std::io::Result<UrlSigner> {
        match configured {
            Some(text) => UrlSigner::new(decode(text, "signing_key")?, ttl_secs),
            None => UrlSigner::load_or_create(data_dir, ttl_secs),
        }
    }

    fn new(secret: Vec<u8>, ttl_secs: u64) -> std::io::Result<UrlSigner> {
        if secret.len() < 16 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the signing secret is shorter than 16 bytes",
            ));
        }
        Ok(UrlSigner { secret, ttl_secs })
    }

    /// Loads the data dir's signing secret, generating it on first start.
    pub fn load_or_create(data_dir: &Path, ttl_secs: u64) -> std::io::Result<UrlSigner> {
        let path = data_dir.join("signing.key");
        let secret = match std::fs::read_to_string(&path) {
            Ok(text) => decode(&text, "signing.key")?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let secret: [u8; 32] = rand::random();
                write_private(&path, &hex::encode(secret))?;
                secret.to_vec()
            }
            Err(e) => return Err(e),
        };
        UrlSigner::new(secret, ttl_secs)
    }

    fn mac(&self, stream_id: &str, expires: u64) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(format!("{stream_id}:{expires}").as_bytes());
        mac
    }

    pub fn sign(&self, stream_id: &str, expires: u64) -> String {
        hex::encode(self.mac(stream_id, expires).finalize().into_bytes())
    }

    /// Constant-time check of a signature, in its one form: 64 lower-case hex digits.
    pub fn verify(&self, stream_id: &str, expires: u64, signature: &str) -> bool {
        let canonical = signature.len() == 64 && signature.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        match hex::decode(signature) {
            Ok(bytes) if canonical => self.mac(stream_id, expires).verify_slice(&bytes).is_ok(),
            _ => false,
        }
    }

    /// A signed URL's fields as its path carries them: a canonical expiry ([`parse_expiry`])
    /// not before `now_s`, and its signature.
    pub fn check(&self, stream_id: &str, expires: &str, signature: &str, now_s: u64) -> bool {
        parse_expiry(expires).is_some_and(|expires| expires >= now_s && self.verify(stream_id, expires, signature))
    }

    /// A signed URL of `file` in the stream's playback folder, and when it expires (s).
    pub fn url(&self, base: &str, stream_id: &str, file: &str, now_s: u64) -> (String, u64) {
        let expires = now_s + self.ttl_secs;
        let signature = self.sign(stream_id, expires);
        (format!("{}/play/{expires}/{signature}/{stream_id}/{file}", base.trim_end_matches('/')), expires)
    }
}

/// An expiry in its one form, as [`UrlSigner::url`] writes it: decimal digits, no sign, no
/// leading zero. `u64::from_str` would also take `+1` and `01`.
pub fn parse_expiry(text: &str) -> Option<u64> {
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    if !digits || (text.len() > 1 && text.starts_with('0')) {
        return None;
    }
    text.parse().ok()
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
    use proptest::prelude::*;

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
        assert!(signer.check("live-a", "1000", &sig, 1000));
        assert!(!signer.check("live-a", "1000", &sig, 1001), "expired");
        for expires in ["01000", "+1000", " 1000", "1000 ", "1e3", "", "-1000", "1000.0"] {
            assert!(!signer.check("live-a", expires, &sig, 0), "{expires:?}");
        }
        assert!(!signer.check("live-a", "1000", &sig.to_uppercase(), 0));
        assert_eq!(parse_expiry("0"), Some(0));
        assert_eq!(parse_expiry("18446744073709551616"), None);
    }

    fn signer() -> &'static UrlSigner {
        static SIGNER: std::sync::OnceLock<(tempfile::TempDir, UrlSigner)> = std::sync::OnceLock::new();
        let (_, signer) = SIGNER.get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let signer = UrlSigner::load_or_create(dir.path(), 60).unwrap();
            (dir, signer)
        });
        signer
    }

    proptest! {
        #[test]
        fn a_url_verifies_in_its_own_form(stream_id in "[a-z0-9-]{1,40}", now_s in 0..u64::MAX / 2) {
            let (url, expires) = signer().url("http://h", &stream_id, "live.m3u8", now_s);
            let fields: Vec<&str> = url.strip_prefix("http://h/play/").unwrap().splitn(4, '/').collect();
            prop_assert_eq!(fields[0], expires.to_string());
            prop_assert!(signer().check(fields[2], fields[0], fields[1], now_s));
        }

        #[test]
        fn any_other_form_is_refused(
            stream_id in "[a-z0-9-]{1,40}",
            expires in any::<u64>(),
            flip in 0..64usize,
            prefix in "[+0 ]{1,3}",
        ) {
            let signature = signer().sign(&stream_id, expires);
            let text = expires.to_string();
            prop_assert!(signer().check(&stream_id, &text, &signature, 0));
            let (prefixed, spaced) = (format!("{prefix}{text}"), format!("{text} "));
            prop_assert!(!signer().check(&stream_id, &prefixed, &signature, 0));
            prop_assert!(!signer().check(&stream_id, &spaced, &signature, 0));
            let mut upper = signature.clone().into_bytes();
            if upper[flip].is_ascii_lowercase() {
                upper[flip] = upper[flip].to_ascii_uppercase();
                prop_assert!(!signer().check(&stream_id, &text, std::str::from_utf8(&upper).unwrap(), 0));
            }
            prop_assert!(!signer().check(&stream_id, &text, &signature[..63], 0));
            let longer = format!("{signature}0");
            prop_assert!(!signer().check(&stream_id, &text, &longer, 0));
        }

        #[test]
        fn arbitrary_fields_never_panic(
            expires in prop_oneof!["\\PC{0,30}", "[0-9+ -]{0,22}"],
            signature in "\\PC{0,70}", now_s in any::<u64>()) {
            let _ = signer().check("live-a", &expires, &signature, now_s);
            if let Some(value) = parse_expiry(&expires) {
                prop_assert_eq!(value.to_string(), expires);
            }
        }
    }
}
