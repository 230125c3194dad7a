//! The RFC 8693 protocol core of trustbroker.
//!
//! The pipeline, one module per stage: [`request`] (parse) → [`subject`] (validate the
//! foreign token) → [`policy`] (boundary, scope, lifetime) → attestation → [`dpop`] →
//! [`mint`]. [`error`] holds the one mapping from internal reasons to RFC error codes.
//!
//! What it will not do: network I/O, reading files or the environment, or logging. State
//! lives behind narrow traits the broker implements; time comes from a `Clock`.

pub mod attestation;
pub mod audit;
pub mod dpop;
pub mod error;
pub mod exchange;
pub mod glob;
pub mod introspect;
pub mod keys;
pub mod mint;
pub mod nonce;
pub mod policy;
pub mod request;
pub mod revocation;
pub mod state;
pub mod subject;
pub mod types;

pub use error::{ErrorCode, ExchangeError};
pub use exchange::{Exchanger, Inbound, Outcome, TokenResponse};
