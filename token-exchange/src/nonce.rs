//! Broker nonces (SPEC §4, §6) that cost nothing to hand out.
//!
//! `POST /attest/challenge` answers anyone, so whatever it stores, anyone can fill. A nonce
//! here carries its own expiry and a MAC under a key only the broker holds: handing one
//! out writes nothing, and checking one reads nothing. Shared state is touched only to
//! spend it, once the request around it has passed every check that needs no state (a
//! valid subject token, and evidence signed by a node certificate where the boundary asks
//! for it): only a caller holding a valid subject token makes the broker store anything,
//! and then a mark per request, kept about 90 s.
//!
//! Layout, 32 bytes, base64url without padding: the expiry (Unix seconds, 4 bytes, big
//! endian), 12 random bytes, and the first 16 bytes of HMAC-SHA256 over those 16.

use aws_lc_rs::{hkdf, hmac, rand};
use base64::Engine as _;
use trust_bundles::UnixTime;

use crate::types::Nonce;

const PAYLOAD: usize = 16;
const TAG: usize = 16;

/// The key nonces are minted and checked under. Replicas that share state must share it.
pub struct NonceKey(hmac::Key);

impl std::fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NonceKey(…)")
    }
}

impl NonceKey {
    /// A key of this process's own, from the system CSPRNG: for a broker that shares its
    /// nonces with no one.
    pub fn generate() -> Result<Self, aws_lc_rs::error::Unspecified> {
        let rng = rand::SystemRandom::new();
        Ok(Self(hmac::Key::generate(hmac::HMAC_SHA256, &rng)?))
    }

    /// The key every holder of `secret` derives alike (HKDF-SHA256), so that replicas
    /// sharing a secret accept each other's nonces. No other use of `secret` yields it.
    pub fn derive(secret: &[u8]) -> Result<Self, aws_lc_rs::error::Unspecified> {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"trustbroker").extract(secret);
        let okm = prk.expand(&[b"trustbroker nonce key v1"], hmac::HMAC_SHA256)?;
        Ok(Self(hmac::Key::from(okm)))
    }

    /// A fresh nonce good until `expires_at`.
    pub fn mint(&self, expires_at: UnixTime) -> Result<Nonce, aws_lc_rs::error::Unspecified> {
        let mut bytes = [0u8; PAYLOAD + TAG];
        let (payload, tag) = bytes.split_at_mut(PAYLOAD);
        let (expiry, random) = payload.split_at_mut(4);
        // Past 2106 the expiry saturates: such a nonce never expires by its own clock,
        // and a clock that far off is not one this broker would run on.
        expiry.copy_from_slice(
            &u32::try_from(expires_at.as_secs())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        rand::fill(random)?;
        let mac = hmac::sign(&self.0, payload);
        tag.copy_from_slice(
            mac.as_ref()
                .get(..TAG)
                .ok_or(aws_lc_rs::error::Unspecified)?,
        );
        Ok(Nonce::from_bytes(&bytes))
    }

    /// When `nonce` expires, if this key minted it and it has not expired at `now`.
    pub fn open(&self, nonce: &str, now: UnixTime) -> Option<UnixTime> {
        // 43 characters are 32 bytes; the buffer has room for the decoder's estimate.
        if nonce.len() != 43 {
            return None;
        }
        let mut buf = [0u8; PAYLOAD + TAG + 4];
        let n = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode_slice(nonce, &mut buf)
            .ok()?;
        let (payload, tag) = buf.get(..n)?.split_at_checked(PAYLOAD)?;
        if tag.len() != TAG {
            return None;
        }
        let mac = hmac::sign(&self.0, payload);
        aws_lc_rs::constant_time::verify_slices_are_equal(mac.as_ref().get(..TAG)?, tag).ok()?;
        let expiry: [u8; 4] = payload.get(..4)?.try_into().ok()?;
        let expires_at = UnixTime::from_secs(u64::from(u32::from_be_bytes(expiry)));
        (expires_at > now).then_some(expires_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: u64) -> UnixTime {
        UnixTime::from_secs(s)
    }

    #[test]
    fn a_nonce_opens_under_its_key_until_it_expires() {
        let key = NonceKey::generate().unwrap();
        let n = key.mint(t(1_000_060)).unwrap();
        assert_eq!(n.as_str().len(), 43, "32 bytes, as before");
        assert_eq!(n.as_str().parse::<Nonce>(), Ok(n.clone()));
        assert_eq!(key.open(n.as_str(), t(1_000_000)), Some(t(1_000_060)));
        assert_eq!(key.open(n.as_str(), t(1_000_059)), Some(t(1_000_060)));
        assert_eq!(key.open(n.as_str(), t(1_000_060)), None, "expired");
        assert_ne!(key.mint(t(1_000_060)).unwrap(), n, "each one fresh");
    }

    #[test]
    fn a_nonce_from_another_key_or_altered_does_not_open() {
        let key = NonceKey::generate().unwrap();
        let other = NonceKey::generate().unwrap();
        let n = other.mint(t(2_000_000)).unwrap();
        assert_eq!(key.open(n.as_str(), t(1)), None, "another broker's");
        assert!(other.open(n.as_str(), t(1)).is_some());

        let mine = key.mint(t(2_000_000)).unwrap();
        let mut raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(mine.as_str())
            .unwrap();
        // Every byte matters: the expiry, the random part and the tag.
        for i in 0..raw.len() {
            raw[i] ^= 1;
            let altered = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&raw);
            assert_eq!(key.open(&altered, t(1)), None, "byte {i} altered");
            raw[i] ^= 1;
        }
        // A later expiry cannot be written in.
        raw[0] = 0xff;
        let extended = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&raw);
        assert_eq!(key.open(&extended, t(1)), None);
    }

    #[test]
    fn malformed_nonces_do_not_open() {
        let key = NonceKey::generate().unwrap();
        let n = key.mint(t(2_000_000)).unwrap();
        let s = n.as_str();
        for bad in [
            "",
            "short",
            &s[..42],
            &format!("{s}A"),
            &format!("{s}{s}"),
            &s.replace(|c: char| c.is_ascii_alphanumeric(), "+"),
            &"A".repeat(43),
        ] {
            assert_eq!(key.open(bad, t(1)), None, "{bad:?}");
        }
    }

    /// A nonce is spent under its text: no other text may open as the same bytes. 43
    /// characters hold 258 bits, and the last one's two spare bits must be zero.
    #[test]
    fn only_one_spelling_of_a_nonce_opens() {
        let key = NonceKey::generate().unwrap();
        let n = key.mint(t(2_000_000)).unwrap();
        let (head, _) = n.as_str().split_at(42);
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let opening: Vec<char> = alphabet
            .chars()
            .filter(|c| key.open(&format!("{head}{c}"), t(1)).is_some())
            .collect();
        assert_eq!(opening.len(), 1, "{opening:?}");
        assert_eq!(Some(opening[0]), n.as_str().chars().last());
    }

    #[test]
    fn replicas_deriving_from_one_secret_share_nonces_and_others_do_not() {
        let a = NonceKey::derive(b"a shared secret of the replicas").unwrap();
        let b = NonceKey::derive(b"a shared secret of the replicas").unwrap();
        let c = NonceKey::derive(b"another secret").unwrap();
        let n = a.mint(t(2_000_000)).unwrap();
        assert!(b.open(n.as_str(), t(1)).is_some());
        assert_eq!(c.open(n.as_str(), t(1)), None);
        // The derived key is not the secret itself used as an HMAC key.
        let raw = NonceKey(hmac::Key::new(
            hmac::HMAC_SHA256,
            b"a shared secret of the replicas",
        ));
        assert_eq!(raw.open(n.as_str(), t(1)), None);
    }
}
