//! google-auth's external-account (identity_pool) credentials as a real RFC 8693 client.
