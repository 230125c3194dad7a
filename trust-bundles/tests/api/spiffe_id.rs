//! Table-driven SPIFFE ID and trust domain vectors.
//!
//! The vectors live in `tests/data/spiffe_ids.json` (taken from the SPIFFE-ID standard and
//! the test suites of go-spiffe, java-spiffe, py-spiffe and rust-spiffe; each records its
//! `source`). Length-limit cases are built here instead, since they are thousands of bytes.
//!
//! Every test collects all failures and reports them in one assertion, so a broken parser
//! shows the whole picture at once.

use serde_json::Value;
use trust_bundles::{SpiffeId, SpiffeIdError, TrustDomain};

const VECTORS: &str = include_str!("../data/spiffe_ids.json");

/// Minimum sizes of each table, so the file cannot silently shrink.
const MIN_VALID_IDS: usize = 30;
const MIN_INVALID_IDS: usize = 45;
const MIN_VALID_TRUST_DOMAINS: usize = 10;
const MIN_INVALID_TRUST_DOMAINS: usize = 15;

/// Every `SpiffeIdError` variant name an `error` field may hold.
const VARIANTS: &[&str] = &[
    "Empty",
    "TooLong",
    "WrongScheme",
    "MissingTrustDomain",
    "TrustDomainTooLong",
    "BadTrustDomainChar",
    "BadPathChar",
    "EmptySegment",
    "DotSegment",
    "TrailingSlash",
];

fn vectors() -> Value {
    serde_json::from_str(VECTORS).expect("tests/data/spiffe_ids.json is not valid JSON")
}

fn table<'a>(doc: &'a Value, name: &str) -> &'a [Value] {
    doc.get(name)
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("spiffe_ids.json: `{name}` is missing or not an array"))
}

/// A string field of a vector; a missing field is recorded as a failure and yields `None`.
fn field<'a>(
    entry: &'a Value,
    key: &str,
    table: &str,
    index: usize,
    failures: &mut Vec<String>,
) -> Option<&'a str> {
    let value = entry.get(key).and_then(Value::as_str);
    if value.is_none() {
        failures.push(format!("{table}[{index}]: missing string field `{key}`"));
    }
    value
}

/// The variant name of an error, taken from its `Debug` form (`BadPathChar { .. }` gives
/// `BadPathChar`). Compared exactly, not as a prefix: `Empty` is a prefix of `EmptySegment`.
fn variant_name(err: &SpiffeIdError) -> String {
    format!("{err:?}")
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn report(what: &str, failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} {what} failure(s):\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}

#[test]
fn vector_file_is_well_formed() {
    let doc = vectors();
    let mut failures = Vec::new();
    let tables = [
        ("valid_ids", "id", MIN_VALID_IDS, false),
        ("invalid_ids", "id", MIN_INVALID_IDS, true),
        (
            "valid_trust_domains",
            "name",
            MIN_VALID_TRUST_DOMAINS,
            false,
        ),
        (
            "invalid_trust_domains",
            "name",
            MIN_INVALID_TRUST_DOMAINS,
            true,
        ),
    ];
    for (name, key, min, has_error) in tables {
        let entries = table(&doc, name);
        if entries.len() < min {
            failures.push(format!(
                "`{name}` has {} vectors; at least {min} are required",
                entries.len()
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, entry) in entries.iter().enumerate() {
            if let Some(input) = field(entry, key, name, i, &mut failures)
                && !seen.insert(input)
            {
                failures.push(format!("{name}[{i}]: duplicate {key} {input:?}"));
            }
            match field(entry, "source", name, i, &mut failures) {
                Some(source) if source.trim().is_empty() => {
                    failures.push(format!("{name}[{i}]: empty `source`"));
                }
                _ => {}
            }
            if has_error
                && let Some(error) = field(entry, "error", name, i, &mut failures)
                && !VARIANTS.contains(&error)
            {
                failures.push(format!(
                    "{name}[{i}]: `error` {error:?} is not a SpiffeIdError variant"
                ));
            }
        }
    }
    // No input may be listed as both valid and invalid.
    for (valid, invalid, key) in [
        ("valid_ids", "invalid_ids", "id"),
        ("valid_trust_domains", "invalid_trust_domains", "name"),
    ] {
        let good: std::collections::HashSet<_> = table(&doc, valid)
            .iter()
            .filter_map(|e| e.get(key).and_then(Value::as_str))
            .collect();
        for entry in table(&doc, invalid) {
            let input = entry.get(key).and_then(Value::as_str);
            if let Some(input) = input.filter(|input| good.contains(input)) {
                failures.push(format!("{input:?} is in both `{valid}` and `{invalid}`"));
            }
        }
    }
    report("vector-file", &failures);
}

#[test]
fn valid_ids_parse_and_round_trip() {
    let doc = vectors();
    let mut failures = Vec::new();
    for (i, entry) in table(&doc, "valid_ids").iter().enumerate() {
        let (Some(input), Some(want_td), Some(want_path)) = (
            field(entry, "id", "valid_ids", i, &mut failures),
            field(entry, "trust_domain", "valid_ids", i, &mut failures),
            field(entry, "path", "valid_ids", i, &mut failures),
        ) else {
            continue;
        };
        let id = match input.parse::<SpiffeId>() {
            Ok(id) => id,
            Err(err) => {
                failures.push(format!("valid_ids[{i}] {input:?}: refused with {err:?}"));
                continue;
            }
        };
        let mut check = |ok: bool, what: String| {
            if !ok {
                failures.push(format!("valid_ids[{i}] {input:?}: {what}"));
            }
        };
        check(
            id.to_string() == input,
            format!("to_string() gave {:?}", id.to_string()),
        );
        check(
            id.as_str() == input,
            format!("as_str() gave {:?}", id.as_str()),
        );
        check(
            id.trust_domain_str() == want_td,
            format!(
                "trust_domain_str() gave {:?}, want {want_td:?}",
                id.trust_domain_str()
            ),
        );
        check(
            id.trust_domain().as_str() == want_td,
            format!(
                "trust_domain() gave {:?}, want {want_td:?}",
                id.trust_domain().as_str()
            ),
        );
        check(
            id.path() == want_path,
            format!("path() gave {:?}, want {want_path:?}", id.path()),
        );

        // Serde: a plain JSON string, byte-exact both ways.
        let want_json = serde_json::to_string(input).unwrap();
        match serde_json::to_string(&id) {
            Ok(json) => check(
                json == want_json,
                format!("serialised as {json}, want {want_json}"),
            ),
            Err(err) => check(false, format!("serialising failed: {err}")),
        }
        match serde_json::from_str::<SpiffeId>(&want_json) {
            Ok(back) => check(back == id, format!("deserialised to {:?}", back.as_str())),
            Err(err) => check(false, format!("deserialising {want_json} failed: {err}")),
        }

        // The parts rebuild the same ID, and the ID is a member of its trust domain.
        match want_td.parse::<TrustDomain>() {
            Ok(td) => {
                check(id.is_member_of(&td), format!("not a member of {want_td:?}"));
                match SpiffeId::from_parts(&td, want_path) {
                    Ok(rebuilt) => check(
                        rebuilt == id,
                        format!("from_parts gave {:?}", rebuilt.as_str()),
                    ),
                    Err(err) => check(false, format!("from_parts refused with {err:?}")),
                }
                if want_path.is_empty() {
                    check(
                        td.id() == id,
                        format!("TrustDomain::id() gave {:?}", td.id()),
                    );
                }
            }
            Err(err) => check(
                false,
                format!("its trust domain {want_td:?} does not parse alone: {err:?}"),
            ),
        }
    }
    report("valid-ID", &failures);
}

#[test]
fn invalid_ids_are_refused_with_the_listed_error() {
    let doc = vectors();
    let mut failures = Vec::new();
    for (i, entry) in table(&doc, "invalid_ids").iter().enumerate() {
        let (Some(input), Some(want)) = (
            field(entry, "id", "invalid_ids", i, &mut failures),
            field(entry, "error", "invalid_ids", i, &mut failures),
        ) else {
            continue;
        };
        match input.parse::<SpiffeId>() {
            Ok(id) => failures.push(format!(
                "invalid_ids[{i}] {input:?}: accepted (trust domain {:?}, path {:?}), want {want}",
                id.trust_domain_str(),
                id.path()
            )),
            Err(err) if variant_name(&err) != want => failures.push(format!(
                "invalid_ids[{i}] {input:?}: refused with {err:?}, want {want}"
            )),
            Err(_) => {}
        }
        let json = serde_json::to_string(input).unwrap();
        if serde_json::from_str::<SpiffeId>(&json).is_ok() {
            failures.push(format!(
                "invalid_ids[{i}] {input:?}: serde deserialisation accepted it"
            ));
        }
    }
    report("invalid-ID", &failures);
}

#[test]
fn valid_trust_domains_parse_and_round_trip() {
    let doc = vectors();
    let mut failures = Vec::new();
    for (i, entry) in table(&doc, "valid_trust_domains").iter().enumerate() {
        let Some(name) = field(entry, "name", "valid_trust_domains", i, &mut failures) else {
            continue;
        };
        let td = match name.parse::<TrustDomain>() {
            Ok(td) => td,
            Err(err) => {
                failures.push(format!(
                    "valid_trust_domains[{i}] {name:?}: refused with {err:?}"
                ));
                continue;
            }
        };
        let mut check = |ok: bool, what: String| {
            if !ok {
                failures.push(format!("valid_trust_domains[{i}] {name:?}: {what}"));
            }
        };
        check(
            td.to_string() == name,
            format!("to_string() gave {:?}", td.to_string()),
        );
        check(
            td.as_str() == name,
            format!("as_str() gave {:?}", td.as_str()),
        );
        let want_json = serde_json::to_string(name).unwrap();
        match serde_json::to_string(&td) {
            Ok(json) => check(
                json == want_json,
                format!("serialised as {json}, want {want_json}"),
            ),
            Err(err) => check(false, format!("serialising failed: {err}")),
        }
        match serde_json::from_str::<TrustDomain>(&want_json) {
            Ok(back) => check(back == td, format!("deserialised to {:?}", back.as_str())),
            Err(err) => check(false, format!("deserialising {want_json} failed: {err}")),
        }
        let want_id = format!("spiffe://{name}");
        check(
            td.id().as_str() == want_id,
            format!("id() gave {:?}", td.id().as_str()),
        );
        match want_id.parse::<SpiffeId>() {
            Ok(id) => check(
                id.trust_domain() == td && id.path().is_empty(),
                format!("{want_id:?} parsed to a different trust domain or a path"),
            ),
            Err(err) => check(false, format!("{want_id:?} refused with {err:?}")),
        }
    }
    report("valid-trust-domain", &failures);
}

#[test]
fn invalid_trust_domains_are_refused_with_the_listed_error() {
    let doc = vectors();
    let mut failures = Vec::new();
    for (i, entry) in table(&doc, "invalid_trust_domains").iter().enumerate() {
        let (Some(name), Some(want)) = (
            field(entry, "name", "invalid_trust_domains", i, &mut failures),
            field(entry, "error", "invalid_trust_domains", i, &mut failures),
        ) else {
            continue;
        };
        match name.parse::<TrustDomain>() {
            Ok(td) => failures.push(format!(
                "invalid_trust_domains[{i}] {name:?}: accepted as {:?}, want {want}",
                td.as_str()
            )),
            Err(err) if variant_name(&err) != want => failures.push(format!(
                "invalid_trust_domains[{i}] {name:?}: refused with {err:?}, want {want}"
            )),
            Err(_) => {}
        }
        let json = serde_json::to_string(name).unwrap();
        if serde_json::from_str::<TrustDomain>(&json).is_ok() {
            failures.push(format!(
                "invalid_trust_domains[{i}] {name:?}: serde deserialisation accepted it"
            ));
        }
    }
    report("invalid-trust-domain", &failures);
}

/// SPIFFE-ID §2.3: IDs up to 2048 bytes and trust domains up to 255 bytes; lengths are in
/// bytes, and the length limit is checked before anything else.
#[test]
fn length_limits() {
    const MAX_ID: usize = 2048;
    const MAX_TD: usize = 255;
    let mut failures = Vec::new();
    let mut expect = |label: &str, input: &str, want: Result<(), &str>| {
        let got = input
            .parse::<SpiffeId>()
            .map(|_| ())
            .map_err(|e| variant_name(&e));
        if got != want.map_err(str::to_owned) {
            failures.push(format!(
                "{label} ({} bytes): got {got:?}, want {want:?}",
                input.len()
            ));
        }
    };

    // IDs at and over 2048 bytes, with a short trust domain.
    let head = "spiffe://example.org/";
    let at_limit = format!("{head}{}", "p".repeat(MAX_ID - head.len()));
    assert_eq!(at_limit.len(), MAX_ID);
    expect("2048-byte ID", &at_limit, Ok(()));
    expect("2049-byte ID", &format!("{at_limit}p"), Err("TooLong"));

    // 2048 bytes with a maximal trust domain and many segments.
    let td_max = "a".repeat(MAX_TD);
    let mut many = format!("spiffe://{td_max}");
    while many.len() + 2 <= MAX_ID {
        many.push_str("/s");
    }
    if many.len() < MAX_ID {
        many.push('s');
    }
    assert_eq!(many.len(), MAX_ID);
    expect("2048-byte ID, 255-byte td, many segments", &many, Ok(()));
    expect(
        "2049-byte ID, 255-byte td, many segments",
        &format!("{many}s"),
        Err("TooLong"),
    );

    // Length is checked first: an over-long input is TooLong even if otherwise malformed.
    expect(
        "2049 bytes, wrong scheme",
        &format!("http://{}", "x".repeat(MAX_ID + 1 - "http://".len())),
        Err("TooLong"),
    );
    expect(
        "2049 bytes, bad trust domain",
        &format!("spiffe://{}", "X".repeat(MAX_ID + 1 - "spiffe://".len())),
        Err("TooLong"),
    );
    expect(
        "2049 bytes, trailing slash",
        &format!("{}/", &at_limit),
        Err("TooLong"),
    );

    // Length is in bytes, not chars: 2047 ASCII bytes + a 2-byte char is 2049 bytes.
    let near = &at_limit[..MAX_ID - 1];
    expect("2047 bytes + 'é'", &format!("{near}é"), Err("TooLong"));
    expect(
        "2046 bytes + 'é'",
        &format!("{}é", &near[..MAX_ID - 2]),
        Err("BadPathChar"),
    );

    // Trust domains at and over 255 bytes, inside an ID.
    expect("255-byte td ID", &format!("spiffe://{td_max}"), Ok(()));
    expect(
        "255-byte td ID with path",
        &format!("spiffe://{td_max}/p"),
        Ok(()),
    );
    let td_over = "a".repeat(MAX_TD + 1);
    expect(
        "256-byte td ID",
        &format!("spiffe://{td_over}"),
        Err("TrustDomainTooLong"),
    );
    expect(
        "256-byte td ID with path",
        &format!("spiffe://{td_over}/p"),
        Err("TrustDomainTooLong"),
    );
    // Characters are checked before the trust-domain length.
    expect(
        "256-byte td with a bad char at the end",
        &format!("spiffe://{}A/p", "a".repeat(MAX_TD)),
        Err("BadTrustDomainChar"),
    );
    report("length-limit", &failures);

    // The same limits on bare trust domain names.
    let mut failures = Vec::new();
    let mut expect_td = |label: &str, input: &str, want: Result<(), &str>| {
        let got = input
            .parse::<TrustDomain>()
            .map(|_| ())
            .map_err(|e| variant_name(&e));
        if got != want.map_err(str::to_owned) {
            failures.push(format!(
                "{label} ({} bytes): got {got:?}, want {want:?}",
                input.len()
            ));
        }
    };
    expect_td("255-byte td", &td_max, Ok(()));
    let mixed = format!("{}.-_9", "a".repeat(MAX_TD - 4));
    expect_td("255-byte td, mixed chars", &mixed, Ok(()));
    expect_td("256-byte td", &td_over, Err("TrustDomainTooLong"));
    expect_td(
        "256-byte td with a bad char at the end",
        &format!("{td_max}A"),
        Err("BadTrustDomainChar"),
    );
    // A bare name has no 2048-byte check of its own: the 255-byte rule refuses it first.
    expect_td(
        "2049-byte bare name",
        &"a".repeat(MAX_ID + 1),
        Err("TrustDomainTooLong"),
    );
    report("trust-domain length-limit", &failures);
}
