//! Any string is a parsed compact JWS or a refusal; parsed ones never carry `none`/HMAC or
//! `crit`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trust_bundles::jws::UnverifiedJws;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data)
        && let Ok(jws) = UnverifiedJws::parse(s, 16 * 1024)
    {
        assert!(!jws.header().contains_key("crit"));
        assert_eq!(jws.compact(), s);
    }
});
