//! Who may do what: API tokens with scopes for people and programs, a key per live stream for
//! its encoder, and each stream's and video's playback policy. segflow keeps only SHA-256
//! hashes of tokens and keys; their text is shown once, when made.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a token may do. `admin` may do everything; `publish` (start and end streams, upload
/// videos) includes `read` (documents, playback URLs of `signed` streams and videos).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Admin,
    Publish,
    Read,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Admin, Scope::Publish, Scope::Read];

    /// Whether holding `self` grants `needed`.
    pub fn grants(self, needed: Scope) -> bool {
        self == needed || self == Scope::Admin || (self == Scope::Publish && needed == Scope::Read)
    }

    pub fn parse(text: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::Publish => "publish",
            Scope::Read => "read",
        }
    }
}

/// One API token (`api_tokens`), by its public id; the secret part is kept as a hash.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenDoc {
    pub token_id: String,
    pub name: String,
    pub scopes: Vec<Scope>,
    /// SHA-256 (hex) of the whole token text.
    pub sha256: String,
    pub created_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at_ms: Option<u64>,
}

impl TokenDoc {
    /// Whether this token, unrevoked, grants `needed`.
    pub fn grants(&self, needed: Scope) -> bool {
        self.revoked_at_ms.is_none() && self.scopes.iter().any(|s| s.grants(needed))
    }
}

/// Tokens read `sft_<id>_<secret>`: the id finds the document, the hash of the whole text
/// must match it.
const TOKEN_PREFIX: &str = "sft_";
/// Stream keys read `sk_<secret>`.
pub const STREAM_KEY_PREFIX: &str = "sk_";

/// A new secret: its text (shown once) and the hash that is kept.
pub struct NewSecret {
    pub text: String,
    pub sha256: String,
}

/// A new API token and its id.
pub fn new_token() -> (String, NewSecret) {
    let id = hex::encode(rand::random::<[u8; 6]>());
    let text = format!("{TOKEN_PREFIX}{id}_{}", hex::encode(rand::random::<[u8; 32]>()));
    (id, secret(text))
}

/// A new stream key.
pub fn new_stream_key() -> NewSecret {
    secret(format!("{STREAM_KEY_PREFIX}{}", hex::encode(rand::random::<[u8; 32]>())))
}

fn secret(text: String) -> NewSecret {
    let sha256 = sha256_hex(&text);
    NewSecret { text, sha256 }
}

/// The id of a token's text, `None` when it is not one.
pub fn token_id(text: &str) -> Option<&str> {
    let (id, secret) = text.strip_prefix(TOKEN_PREFIX)?.split_once('_')?;
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(id, 12) && hex(secret, 64)).then_some(id)
}

pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Whether `text` hashes to `sha256` (hex), compared in constant time.
pub fn matches(text: &str, sha256: &str) -> bool {
    sha256_hex(text).as_bytes().ct_eq(sha256.as_bytes()).into()
}

/// Who may get a playback URL of a stream or video.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlaybackPolicy {
    /// Anyone: a page can embed it and mint fresh URLs without a token.
    Public,
    /// Holders of a `read` token; viewers get the signed URLs they mint.
    #[default]
    Signed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_found_by_id_and_checked_by_hash() {
        let (id, token) = new_token();
        assert_eq!(token_id(&token.text), Some(id.as_str()));
        assert!(matches(&token.text, &token.sha256));
        let mut other = token.text.clone();
        other.replace_range(other.len() - 1.., if other.ends_with('0') { "1" } else { "0" });
        assert!(!matches(&other, &token.sha256));
        for bad in ["", "sft_", "sft_abc_def", "sk_00", &token.text.to_uppercase(), &format!("{}0", token.text)] {
            assert_eq!(token_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn admin_grants_all_and_publish_grants_read() {
        assert!(Scope::ALL.iter().all(|s| Scope::Admin.grants(*s)));
        assert!(Scope::Publish.grants(Scope::Read) && !Scope::Publish.grants(Scope::Admin));
        assert!(!Scope::Read.grants(Scope::Publish));
        let doc = TokenDoc {
            token_id: "a".into(),
            name: "n".into(),
            scopes: vec![Scope::Publish],
            sha256: String::new(),
            created_at_ms: 0,
            revoked_at_ms: Some(1),
        };
        assert!(!doc.grants(Scope::Read), "a revoked token grants nothing");
    }
}
