//! Any string either parses to a SPIFFE ID that prints back byte for byte, or is refused
//! with an error; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trust_bundles::{SpiffeId, TrustDomain};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(id) = s.parse::<SpiffeId>() {
        assert_eq!(id.to_string(), s);
        assert!(s.len() <= 2048);
        let td = id.trust_domain();
        assert!(id.is_member_of(&td));
        assert_eq!(td.as_str().parse::<TrustDomain>().as_ref(), Ok(&td));
        assert_eq!(format!("spiffe://{}{}", td, id.path()), s);
    }
    if let Ok(td) = s.parse::<TrustDomain>() {
        assert_eq!(td.to_string(), s);
        assert_eq!(td.id().trust_domain(), td);
    }
});
