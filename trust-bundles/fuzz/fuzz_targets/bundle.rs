//! Any bytes either parse to a bundle that survives a serialize/parse round trip, or are
//! refused with an error; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trust_bundles::SpiffeBundle;

fuzz_target!(|data: &[u8]| {
    if let Ok(bundle) = SpiffeBundle::parse(data) {
        let json = bundle.to_json();
        let again = SpiffeBundle::parse(&json).expect("a serialized bundle parses");
        assert_eq!(again.to_json(), json);
        assert_eq!(again.jwt_authorities(), bundle.jwt_authorities());
        assert_eq!(again.x509_authorities(), bundle.x509_authorities());
    }
});
