//! Encryption at rest: a codec wrapper with XChaCha20-Poly1305, keyed by the app, with key
//! rotation.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use scs_core::{Codec, Error, ErrorKind, MsgPackCodec, Result, SessionData};

/// Format byte of the encrypted layout: `[1][key id][24-byte nonce][ciphertext + tag]`.
const FORMAT: u8 = 1;
const NONCE_LEN: usize = 24;

/// Encrypts what another codec makes (MessagePack by default) with XChaCha20-Poly1305, so
/// the store holds no readable session data. Keys have a one-byte id: the newest key
/// encrypts, any configured key decrypts, so keys rotate without signing anyone out
/// (add the new key, then drop the old one after a lifetime).
///
/// The nonce is 24 random bytes per write; the format byte and key id are authenticated.
/// Tampered, truncated or foreign bytes are a [`ErrorKind::Codec`] error. `Debug` never
/// shows a key.
///
/// ```
/// use scs::{AeadCodec, Codec, SessionData};
/// use scs::time::OffsetDateTime;
///
/// let old = AeadCodec::new(1, [7; 32]);
/// let bytes = old.encode(&SessionData::new(OffsetDateTime::UNIX_EPOCH)).unwrap();
///
/// // Rotation: key 2 encrypts from now on, key 1 still decrypts.
/// let rotated = AeadCodec::new(1, [7; 32]).with_key(2, [9; 32]);
/// assert!(rotated.decode(&bytes).is_ok());
/// let fresh = rotated.encode(&SessionData::new(OffsetDateTime::UNIX_EPOCH)).unwrap();
/// assert!(old.decode(&fresh).is_err()); // key 2 unknown to the old codec
/// ```
pub struct AeadCodec<C = MsgPackCodec> {
    inner: C,
    /// Newest last.
    keys: Vec<(u8, XChaCha20Poly1305)>,
}

impl AeadCodec<MsgPackCodec> {
    /// Encrypts MessagePack with `key` (id `key_id`).
    pub fn new(key_id: u8, key: [u8; 32]) -> Self {
        Self::wrap(MsgPackCodec, key_id, key)
    }
}

impl<C: Codec> AeadCodec<C> {
    /// Encrypts what `inner` encodes, with `key` (id `key_id`).
    pub fn wrap(inner: C, key_id: u8, key: [u8; 32]) -> Self {
        Self {
            inner,
            keys: Vec::new(),
        }
        .with_key(key_id, key)
    }

    /// Adds a newer key: it encrypts from now on; the earlier keys still decrypt. A key
    /// id given again replaces that key.
    #[must_use]
    pub fn with_key(mut self, key_id: u8, key: [u8; 32]) -> Self {
        self.keys.retain(|(id, _)| *id != key_id);
        self.keys
            .push((key_id, XChaCha20Poly1305::new(&key.into())));
        self
    }

    fn error(message: &'static str) -> Error {
        Error::new(ErrorKind::Codec, message)
    }
}

impl<C> std::fmt::Debug for AeadCodec<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<u8> = self.keys.iter().map(|(id, _)| *id).collect();
        f.debug_struct("AeadCodec")
            .field("key_ids", &ids)
            .finish_non_exhaustive()
    }
}

impl<C: Codec> Codec for AeadCodec<C> {
    fn name(&self) -> &'static str {
        "xchacha20poly1305"
    }

    fn encode(&self, data: &SessionData) -> Result<Vec<u8>> {
        let plain = self.inner.encode(data)?;
        let (id, cipher) = self
            .keys
            .last()
            .ok_or_else(|| Self::error("no encryption key configured"))?;
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| Self::error("reading the OS random source"))?;
        let header = [FORMAT, *id];
        let sealed = cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: &plain,
                    aad: &header,
                },
            )
            .map_err(|_| Self::error("encrypting the session"))?;
        let mut out = Vec::with_capacity(2 + NONCE_LEN + sealed.len());
        out.extend_from_slice(&header);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn decode(&self, bytes: &[u8]) -> Result<SessionData> {
        let (header, rest) = bytes
            .split_at_checked(2)
            .ok_or_else(|| Self::error("the stored session is too short to be encrypted"))?;
        if header[0] != FORMAT {
            return Err(Self::error(
                "the stored session is not in the encrypted format",
            ));
        }
        let (nonce, sealed) = rest
            .split_at_checked(NONCE_LEN)
            .ok_or_else(|| Self::error("the stored session is too short to be encrypted"))?;
        let (_, cipher) = self
            .keys
            .iter()
            .find(|(id, _)| *id == header[1])
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Codec,
                    format!(
                        "the stored session was encrypted with key {}, which is not configured",
                        header[1]
                    ),
                )
            })?;
        let nonce: [u8; NONCE_LEN] = nonce
            .try_into()
            .map_err(|_| Self::error("bad nonce length"))?;
        let plain = cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: sealed,
                    aad: header,
                },
            )
            .map_err(|_| {
                Self::error("the stored session does not authenticate (tampered, or another key)")
            })?;
        self.inner.decode(&plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scs_core::Value;
    use scs_core::time::OffsetDateTime;

    fn data() -> SessionData {
        let mut d = SessionData::new(OffsetDateTime::UNIX_EPOCH);
        d.values.insert(
            "secret".into(),
            Value::from_serialize("the plaintext").unwrap(),
        );
        d
    }

    #[test]
    fn round_trips_and_hides_the_plaintext() {
        let c = AeadCodec::new(1, [1; 32]);
        let bytes = c.encode(&data()).unwrap();
        assert!(!bytes.windows(13).any(|w| w == b"the plaintext"));
        assert_eq!(c.decode(&bytes).unwrap(), data());
        // Two encodings differ (random nonce).
        assert_ne!(bytes, c.encode(&data()).unwrap());
    }

    #[test]
    fn tampering_truncation_and_wrong_keys_are_codec_errors() {
        let c = AeadCodec::new(1, [1; 32]);
        let bytes = c.encode(&data()).unwrap();
        for i in [0, 1, 2, 30, bytes.len() - 1] {
            let mut t = bytes.clone();
            t[i] ^= 1;
            assert_eq!(
                c.decode(&t).unwrap_err().kind(),
                ErrorKind::Codec,
                "flip at {i}"
            );
        }
        for n in [0, 1, 2, 10, 26, bytes.len() - 1] {
            assert_eq!(c.decode(&bytes[..n]).unwrap_err().kind(), ErrorKind::Codec);
        }
        let other = AeadCodec::new(1, [2; 32]);
        assert_eq!(other.decode(&bytes).unwrap_err().kind(), ErrorKind::Codec);
    }

    #[test]
    fn rotation_encrypts_with_the_newest_and_decrypts_with_any() {
        let v1 = AeadCodec::new(1, [1; 32]);
        let old = v1.encode(&data()).unwrap();
        let v2 = AeadCodec::new(1, [1; 32]).with_key(2, [2; 32]);
        assert_eq!(v2.decode(&old).unwrap(), data());
        let new = v2.encode(&data()).unwrap();
        assert_eq!(new[1], 2);
        let only_new = AeadCodec::new(2, [2; 32]);
        assert!(only_new.decode(&new).is_ok());
        assert!(
            only_new.decode(&old).is_err(),
            "a dropped key must no longer decrypt"
        );
    }

    #[test]
    fn debug_shows_no_key() {
        let c = AeadCodec::new(7, [0xAB; 32]);
        let s = format!("{c:?}");
        assert!(s.contains("key_ids: [7]") && !s.contains("171"), "{s}");
    }
}
