//! The hostile inputs of the exchange issue, each against the running broker: the exact
//! error code, never a 500, never a token.
