//! The crypto ceiling: the bare cryptography one attested exchange needs — verify the
//! subject token, verify the evidence, verify the DPoP proof, sign the new token — with
//! keys already parsed, over inputs as fresh as a broker's (see [`DISTINCT`]), on as many
//! threads as the machine has cores. Nothing a broker does can be faster; the ratio to it
//! is what a run on a noisy machine can compare.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair, ParsedPublicKey};

/// How many distinct signatures each verify cycles through. A broker never verifies the
/// same signature twice (every proof, evidence and subject token it accepts is fresh, and
/// replays are refused), and ECDSA verification branches on its input: verifying one
/// signature over and over lets the CPU learn those branches. Measured here
/// (2026-12-03, one core, 200 blocks of 200 verifies each way): one signature repeated,
/// 49.0–51.0 µs at the best block and 54.7–65.0 µs at the median; 1 024 distinct ones,
/// 52.9–55.0 µs and 61.5–71.1 µs. A ceiling of repeated signatures was about 8 % higher
/// than any exchange could reach.
///
/// The signatures are all over one message, so that what the ceiling reads stays as hot
/// in the cache as a request the broker has just received (64 KiB of signatures in all):
/// ECDSA's random nonce makes each signature, and so each verify's arithmetic, different.
const DISTINCT: usize = 1024;

/// One key, one message, and [`DISTINCT`] signatures of it by that key.
struct Signed {
    key: ParsedPublicKey,
    message: Vec<u8>,
    signatures: Vec<Vec<u8>>,
}

impl Signed {
    fn new(len: usize) -> Self {
        let rng = SystemRandom::new();
        let kp = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let message = vec![b'e'; len];
        let signatures: Vec<Vec<u8>> = (0..DISTINCT)
            .map(|_| kp.sign(&rng, &message).unwrap().as_ref().to_vec())
            .collect();
        let distinct: std::collections::HashSet<&Vec<u8>> = signatures.iter().collect();
        assert_eq!(distinct.len(), DISTINCT, "ECDSA signatures repeated");
        let key = ParsedPublicKey::new(
            &signature::ECDSA_P256_SHA256_FIXED,
            kp.public_key().as_ref(),
        )
        .unwrap();
        Self {
            key,
            message,
            signatures,
        }
    }

    fn verify(&self, i: usize) {
        self.key
            .verify_sig(&self.message, &self.signatures[i % DISTINCT])
            .unwrap();
    }
}

/// What every measurement verifies and signs with, made once per run: 3 × 1 024
/// signatures take longer to make than a ceiling slice lasts to measure.
struct Inputs {
    subject: Signed,
    evidence: Signed,
    dpop: Signed,
    signer: EcdsaKeyPair,
}

static INPUTS: OnceLock<Inputs> = OnceLock::new();

impl Inputs {
    fn new() -> Self {
        // Sizes of the real inputs: a JWT-SVID, evidence, a DPoP proof.
        Self {
            subject: Signed::new(420),
            evidence: Signed::new(900),
            dpop: Signed::new(380),
            signer: EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap(),
        }
    }
}

/// Exchanges' worth of cryptography per second, on `threads` threads for `duration`.
pub fn measure(threads: usize, duration: Duration) -> f64 {
    let inputs: &'static Inputs = INPUTS.get_or_init(Inputs::new);
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (stop, count) = (stop.clone(), count.clone());
            std::thread::spawn(move || {
                let rng = SystemRandom::new();
                // Threads start apart in the ring, and every token signed is new (the
                // size of an issued token).
                let mut claims = vec![b'c'; 700];
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let i = t * DISTINCT / threads + n as usize;
                    for s in [&inputs.subject, &inputs.evidence, &inputs.dpop] {
                        s.verify(i);
                    }
                    claims[..8].copy_from_slice(&n.to_le_bytes());
                    std::hint::black_box(inputs.signer.sign(&rng, &claims).unwrap());
                    n += 1;
                }
                count.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}
