//! Authenticated encryption of everything the Safe writes to disk.
//!
//! The 32-byte root key never encrypts data directly: an AES-256-GCM data key is derived
//! from it with HKDF-SHA256 under a fixed label, so a future format can derive other keys
//! (or rotate) without reusing one key for two purposes. Every seal uses a fresh 96-bit
//! random nonce from the operating system; callers bind the record's identity (file, position,
//! kind) as associated data. Key material is zeroized on drop and never printed.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

/// Length of the root key in bytes.
pub const ROOT_KEY_LEN: usize = 32;
/// Length of the AES-GCM tag appended to every ciphertext.
pub const TAG_LEN: usize = 16;
/// Length of a nonce.
pub const NONCE_BYTES: usize = NONCE_LEN;

/// HKDF salt and info: changing either is a format change (see docs/file-format.md).
const HKDF_SALT: &[u8] = b"aegis-safe";
const HKDF_INFO_RECORD_KEY: &[u8] = b"aegis-safe v1 record key";

/// Errors of the crypto layer. None of them carries key or plaintext bytes.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The root key material does not have the required shape.
    #[error("root key must be exactly 32 bytes (raw) or their base64 encoding; got {0} bytes")]
    BadRootKey(usize),
    /// The operating system's random number generator failed.
    #[error("the system random number generator failed")]
    Random,
    /// Authentication of a ciphertext failed: wrong key, or the bytes were modified.
    #[error("authentication failed (wrong root key or modified data)")]
    Open,
    /// Sealing failed (only possible for absurd lengths).
    #[error("encryption failed")]
    Seal,
}

/// The root key. `Debug` is redacted; bytes are zeroed on drop.
pub struct RootKey(Zeroizing<[u8; ROOT_KEY_LEN]>);

impl std::fmt::Debug for RootKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RootKey([REDACTED])")
    }
}

impl RootKey {
    /// Wraps exactly 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let arr: [u8; ROOT_KEY_LEN] = bytes
            .try_into()
            .map_err(|_| CryptoError::BadRootKey(bytes.len()))?;
        Ok(Self(Zeroizing::new(arr)))
    }

    /// Parses the contents of a root key file: 32 raw bytes, or their standard base64
    /// encoding (surrounding whitespace ignored), which is what `kubectl` and
    /// `openssl rand -base64 32` produce.
    pub fn from_file_contents(contents: &[u8]) -> Result<Self, CryptoError> {
        if contents.len() == ROOT_KEY_LEN {
            return Self::from_bytes(contents);
        }
        use base64::Engine as _;
        let text = String::from_utf8_lossy(contents);
        let decoded = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|_| CryptoError::BadRootKey(contents.len()))?,
        );
        Self::from_bytes(&decoded)
    }

    /// 32 fresh random bytes.
    pub fn generate() -> Result<Self, CryptoError> {
        let mut k = Zeroizing::new([0u8; ROOT_KEY_LEN]);
        SystemRandom::new()
            .fill(&mut k[..])
            .map_err(|_| CryptoError::Random)?;
        Ok(Self(k))
    }

    /// The raw bytes, for writing the key to its store (file or Kubernetes Secret).
    pub fn expose(&self) -> &[u8; ROOT_KEY_LEN] {
        &self.0
    }
}

/// Seals and opens records under the data key derived from a [`RootKey`].
pub struct Sealer {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer([REDACTED])")
    }
}

impl Sealer {
    /// Derives the record key from the root key.
    pub fn new(root: &RootKey) -> Self {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT).extract(&root.0[..]);
        let info = [HKDF_INFO_RECORD_KEY];
        // Both calls only fail for output lengths above 255*32 bytes; ours is 32.
        let okm = prk
            .expand(&info, &AES_256_GCM)
            .expect("HKDF output length 32 is valid");
        let key = LessSafeKey::new(UnboundKey::from(okm));
        Self {
            key,
            rng: SystemRandom::new(),
        }
    }

    /// A fresh random nonce.
    pub fn random_nonce(&self) -> Result<[u8; NONCE_BYTES], CryptoError> {
        let mut n = [0u8; NONCE_BYTES];
        self.rng.fill(&mut n).map_err(|_| CryptoError::Random)?;
        Ok(n)
    }

    /// Encrypts `buf` in place under `nonce` and appends the tag. Callers use
    /// [`Sealer::random_nonce`]; a fixed nonce is only for known-answer tests.
    pub fn seal_in_place(
        &self,
        nonce: [u8; NONCE_BYTES],
        aad: &[u8],
        buf: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), buf)
            .map_err(|_| CryptoError::Seal)
    }

    /// Encrypts the tail of `buf` starting at `start` in place and appends the tag, so a
    /// batch of records is built in one buffer without copying plaintext elsewhere.
    pub fn seal_tail(
        &self,
        nonce: [u8; NONCE_BYTES],
        aad: &[u8],
        buf: &mut Vec<u8>,
        start: usize,
    ) -> Result<(), CryptoError> {
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut buf[start..],
            )
            .map_err(|_| CryptoError::Seal)?;
        buf.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// Decrypts `ciphertext_and_tag` in place; returns the plaintext slice.
    pub fn open_in_place<'a>(
        &self,
        nonce: [u8; NONCE_BYTES],
        aad: &[u8],
        ciphertext_and_tag: &'a mut [u8],
    ) -> Result<&'a mut [u8], CryptoError> {
        self.key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                ciphertext_and_tag,
            )
            .map_err(|_| CryptoError::Open)
    }
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// `sha256:<lowercase hex>`, the fingerprint format of the API.
pub fn fingerprint_string(digest: &[u8; 32]) -> String {
    let mut s = String::with_capacity(7 + 64);
    s.push_str("sha256:");
    for b in digest {
        s.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
        s.push(char::from_digit(u32::from(b & 0xf), 16).unwrap_or('0'));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> RootKey {
        RootKey::from_bytes(&[7u8; 32]).unwrap()
    }

    #[test]
    fn root_key_accepts_raw_and_base64() {
        assert!(RootKey::from_file_contents(&[1u8; 32]).is_ok());
        let b64 = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\n";
        assert_eq!(
            RootKey::from_file_contents(b64.as_bytes())
                .unwrap()
                .expose(),
            &[1u8; 32]
        );
        assert!(matches!(
            RootKey::from_file_contents(b"short"),
            Err(CryptoError::BadRootKey(5))
        ));
    }

    #[test]
    fn root_key_debug_is_redacted() {
        assert_eq!(format!("{:?}", key()), "RootKey([REDACTED])");
    }

    #[test]
    fn seal_then_open_round_trips_and_binds_aad() {
        let s = Sealer::new(&key());
        let nonce = s.random_nonce().unwrap();
        let mut buf = b"hello".to_vec();
        s.seal_in_place(nonce, b"aad", &mut buf).unwrap();
        assert_eq!(buf.len(), 5 + TAG_LEN);
        let mut c = buf.clone();
        assert_eq!(s.open_in_place(nonce, b"aad", &mut c).unwrap(), b"hello");
        let mut c = buf.clone();
        assert!(s.open_in_place(nonce, b"other", &mut c).is_err());
    }

    #[test]
    fn nonces_are_fresh() {
        let s = Sealer::new(&key());
        assert_ne!(s.random_nonce().unwrap(), s.random_nonce().unwrap());
    }

    #[test]
    fn fingerprint_is_sha256_hex() {
        assert_eq!(
            fingerprint_string(&sha256(b"abc")),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
