//! The crypto ceiling: the bare cryptography one attested exchange needs — verify the
//! subject token, verify the evidence, verify the DPoP proof, sign the new token — with
//! keys already parsed, on as many threads as the machine has cores. Nothing a broker
//! does can be faster; the ratio to it is what a run on a noisy machine can compare.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair, ParsedPublicKey};

struct Signed {
    key: ParsedPublicKey,
    message: Vec<u8>,
    signature: Vec<u8>,
}

fn signed(len: usize) -> Signed {
    let kp = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let message = vec![b'e'; len];
    let signature = kp
        .sign(&SystemRandom::new(), &message)
        .unwrap()
        .as_ref()
        .to_vec();
    let key = ParsedPublicKey::new(
        &signature::ECDSA_P256_SHA256_FIXED,
        kp.public_key().as_ref(),
    )
    .unwrap();
    Signed {
        key,
        message,
        signature,
    }
}

/// Exchanges' worth of cryptography per second, on `threads` threads for `duration`.
pub fn measure(threads: usize, duration: Duration) -> f64 {
    // Sizes of the real inputs: a JWT-SVID, evidence, a DPoP proof, an issued token.
    let subject = Arc::new(signed(420));
    let evidence = Arc::new(signed(900));
    let dpop = Arc::new(signed(380));
    let signer =
        Arc::new(EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap());
    let claims = Arc::new(vec![b'c'; 700]);
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (subject, evidence, dpop, signer, claims, stop, count) = (
                subject.clone(),
                evidence.clone(),
                dpop.clone(),
                signer.clone(),
                claims.clone(),
                stop.clone(),
                count.clone(),
            );
            std::thread::spawn(move || {
                let rng = SystemRandom::new();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for s in [&subject, &evidence, &dpop] {
                        s.key.verify_sig(&s.message, &s.signature).unwrap();
                    }
                    std::hint::black_box(signer.sign(&rng, &claims).unwrap());
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
