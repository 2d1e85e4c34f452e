//! Secret values sealed at rest: AES-256-GCM (ring) under the operator's keys.
//!
//! The keys come from the file the setting `secret_key_file` names: one key per line, 32
//! bytes as 64 hex characters (`openssl rand -hex 32`); blank lines and `#` comments are
//! skipped. The **last** key seals new values; every key in the file opens what it
//! sealed, so a key is rotated by appending a new one (and restarting), and retired only
//! once nothing sealed under it is left (replacing a secret's value seals it anew).
//!
//! A sealed value is `key id (8 bytes) ‖ nonce (12) ‖ ciphertext and tag`: the key id is
//! the first 8 bytes of the key's SHA-256, so opening picks its key without trying each.
//! The additional data binds a value to its secret's id and version, so a sealed value
//! copied onto another row (or an older version put back) does not open.

use std::fmt;
use std::path::Path;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

const KEY_ID_LEN: usize = 8;

/// The operator's keys. `Debug` shows only how many there are and their ids.
#[derive(Clone)]
pub struct SecretKeys {
    /// In file order: the last seals.
    keys: Vec<([u8; KEY_ID_LEN], std::sync::Arc<LessSafeKey>)>,
}

/// Why a sealed value does not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("the value was sealed under key {0}, which is not in the manager's secret_key_file")]
    UnknownKey(String),
    #[error("the value does not open under its key (it was changed, or belongs to another secret)")]
    Corrupt,
}

impl SecretKeys {
    /// Reads the keys file (see the module documentation).
    pub fn load(path: &Path) -> Result<SecretKeys, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Keys from the text of a keys file.
    pub fn parse(text: &str) -> Result<SecretKeys, String> {
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bytes = hex::decode(line).ok().filter(|b| b.len() == 32).ok_or_else(|| {
                format!(
                    "line {}: a key is 64 hex characters (32 bytes; `openssl rand -hex 32`)",
                    n + 1
                )
            })?;
            let id: [u8; KEY_ID_LEN] = ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref()[..KEY_ID_LEN]
                .try_into()
                .map_err(|_| "cannot derive a key id".to_owned())?;
            if keys.iter().any(|(other, _)| *other == id) {
                return Err(format!("line {}: the same key appears twice", n + 1));
            }
            let key = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| "cannot use the key".to_owned())?;
            keys.push((id, std::sync::Arc::new(LessSafeKey::new(key))));
        }
        if keys.is_empty() {
            return Err("holds no key: add one line of 64 hex characters (`openssl rand -hex 32`)".into());
        }
        Ok(SecretKeys { keys })
    }

    /// The id of the key that seals, in hex (shown by `/api/v1/status`).
    pub fn sealing_key_id(&self) -> String {
        self.keys.last().map(|(id, _)| hex::encode(id)).unwrap_or_default()
    }

    /// How many keys open values.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Seals `value` for the secret whose id and version `context` names.
    pub fn seal(&self, value: &[u8], context: &[u8]) -> Result<Vec<u8>, String> {
        let (id, key) = self.keys.last().ok_or("no key")?;
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| "the system's random source failed".to_owned())?;
        let mut body = value.to_vec();
        key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(context), &mut body)
            .map_err(|_| "sealing failed".to_owned())?;
        let mut sealed = Vec::with_capacity(KEY_ID_LEN + NONCE_LEN + body.len());
        sealed.extend_from_slice(id);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&body);
        Ok(sealed)
    }

    /// Opens what [`SecretKeys::seal`] sealed with the same `context`.
    pub fn open(&self, sealed: &[u8], context: &[u8]) -> Result<Vec<u8>, OpenError> {
        if sealed.len() < KEY_ID_LEN + NONCE_LEN {
            return Err(OpenError::Corrupt);
        }
        let (id, rest) = sealed.split_at(KEY_ID_LEN);
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let (_, key) = self
            .keys
            .iter()
            .find(|(k, _)| k.as_slice() == id)
            .ok_or_else(|| OpenError::UnknownKey(hex::encode(id)))?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| OpenError::Corrupt)?;
        let mut body = body.to_vec();
        let plain = key
            .open_in_place(nonce, Aad::from(context), &mut body)
            .map_err(|_| OpenError::Corrupt)?;
        Ok(plain.to_vec())
    }
}

impl fmt::Debug for SecretKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<String> = self.keys.iter().map(|(id, _)| hex::encode(id)).collect();
        f.debug_struct("SecretKeys").field("key_ids", &ids).finish()
    }
}

impl PartialEq for SecretKeys {
    fn eq(&self, other: &Self) -> bool {
        self.keys
            .iter()
            .map(|(id, _)| id)
            .eq(other.keys.iter().map(|(id, _)| id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    const B: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

    #[test]
    fn a_value_opens_under_its_context_only_and_is_not_its_clear_text() {
        let keys = SecretKeys::parse(A).unwrap();
        let sealed = keys.seal(b"hunter2", b"secret-1:v1").unwrap();
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(keys.open(&sealed, b"secret-1:v1").unwrap(), b"hunter2");
        assert_eq!(keys.open(&sealed, b"secret-2:v1"), Err(OpenError::Corrupt));
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(keys.open(&flipped, b"secret-1:v1"), Err(OpenError::Corrupt));
        assert_eq!(keys.open(&sealed[..10], b"secret-1:v1"), Err(OpenError::Corrupt));
        // Two seals of one value differ (fresh nonces).
        assert_ne!(sealed, keys.seal(b"hunter2", b"secret-1:v1").unwrap());
    }

    #[test]
    fn the_last_key_seals_and_every_key_opens() {
        let old = SecretKeys::parse(A).unwrap();
        let sealed_old = old.seal(b"v", b"c").unwrap();
        let rotated = SecretKeys::parse(&format!("# rotated 2026-12\n{A}\n\n{B}\n")).unwrap();
        assert_eq!(rotated.len(), 2);
        assert_eq!(rotated.open(&sealed_old, b"c").unwrap(), b"v");
        let sealed_new = rotated.seal(b"w", b"c").unwrap();
        assert_eq!(&sealed_new[..KEY_ID_LEN], &SecretKeys::parse(B).unwrap().keys[0].0);
        assert!(matches!(old.open(&sealed_new, b"c"), Err(OpenError::UnknownKey(_))));
    }

    #[test]
    fn a_keys_file_says_what_is_wrong_with_it() {
        assert!(SecretKeys::parse("").unwrap_err().contains("no key"));
        assert!(SecretKeys::parse("abc").unwrap_err().contains("line 1"));
        assert!(SecretKeys::parse(&format!("{A}\n{A}")).unwrap_err().contains("twice"));
        let debug = format!("{:?}", SecretKeys::parse(A).unwrap());
        assert!(!debug.contains(A) && debug.contains("key_ids"), "{debug}");
    }
}
