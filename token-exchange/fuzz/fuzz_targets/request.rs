//! Any form body parses to a request or a typed refusal; a parsed request re-validates.
#![no_main]

use libfuzzer_sys::fuzz_target;
use token_exchange::request::{ExchangeRequest, MAX_TOKEN_BYTES};

fuzz_target!(|data: &[u8]| {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(data).into_owned().collect();
    if let Ok(req) = ExchangeRequest::from_form(&pairs) {
        assert!(req.subject.secret().len() <= MAX_TOKEN_BYTES);
        assert!(!req.audience.as_str().is_empty());
        if let Some(scope) = &req.scope {
            assert_eq!(scope.to_string().parse().as_ref(), Ok(scope));
        }
    }
});
