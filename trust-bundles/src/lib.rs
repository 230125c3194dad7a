//! The lowest layer of trustbroker: who a workload is and which keys speak for its trust
//! domain.
//!
//! - [`SpiffeId`] and [`TrustDomain`]: SPIFFE identities, parsed exactly per the standard.
//! - [`SpiffeBundle`]: the SPIFFE bundle format, with the refusals of SPEC §7 and §11.
//! - [`verify_x509_svid`]: X.509-SVID chain verification against a bundle (rustls-webpki).
//! - [`Jwk`]: public JWKs, RFC 7638 thumbprints, and verifying keys for the JWS algorithms
//!   we accept.
//! - [`Clock`]: injected time; [`SystemClock`] is the only wall-clock read in the workspace.
//! - [`jws::UnverifiedJws`]: compact JWS parsing with budgets and verification.
//! - [`json::parse_strict`]: JSON that refuses duplicate member names.
//!
//! What it will not do: any I/O (no files, sockets, or environment), fetching of bundles,
//! JWT claim validation, or policy. Those belong to `federation` and `token-exchange`.

pub mod bundle;
pub mod clock;
pub mod json;
pub mod jwk;
pub mod jws;
pub mod spiffe_id;
pub mod x509;

pub use bundle::{BundleError, SpiffeBundle, TrustBundles};
pub use clock::{Clock, ManualClock, Stopwatch, SystemClock, UnixTime};
pub use jwk::{Jwk, JwsAlgorithm, Kid, PublicKey, VerifyingKey, VerifyingKeys};
pub use spiffe_id::{SpiffeId, SpiffeIdError, TrustDomain};
pub use x509::{SvidError, SvidUsage, verify_x509_svid};
