//! How long a fetched response stays fresh, from its HTTP cache headers (RFC 9111 §4.2.1):
//! OIDC providers say when their JWKS should be fetched again this way.

use std::time::{Duration, SystemTime};

/// The headers that decide freshness, as received.
#[derive(Debug, Clone, Copy, Default)]
pub struct CacheHeaders<'a> {
    pub cache_control: Option<&'a str>,
    pub expires: Option<&'a str>,
    pub date: Option<&'a str>,
    pub age: Option<&'a str>,
}

/// The remaining freshness lifetime the headers give, or `None` when they give none.
///
/// `no-store` and `no-cache` mean "fetch again at once" (zero; the caller's floor applies).
/// `max-age` wins over `Expires`, which counts from the response's own `Date` so that the
/// two hosts' clocks never need to agree. `Age` is subtracted. Malformed directives are
/// ignored rather than guessed at.
pub fn freshness(h: CacheHeaders<'_>) -> Option<Duration> {
    let lifetime = h
        .cache_control
        .and_then(directives)
        .or_else(|| expires_lifetime(h.expires?, h.date?))?;
    let age = h
        .age
        .and_then(|a| a.trim().parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_secs);
    Some(lifetime.saturating_sub(age))
}

fn directives(cc: &str) -> Option<Duration> {
    let mut max_age = None;
    for d in cc.split(',') {
        let d = d.trim();
        let (name, value) = d.split_once('=').unwrap_or((d, ""));
        match name.trim().to_ascii_lowercase().as_str() {
            "no-store" | "no-cache" => return Some(Duration::ZERO),
            "max-age" if max_age.is_none() => {
                max_age = value
                    .trim()
                    .trim_matches('"')
                    .parse::<u64>()
                    .ok()
                    .map(Duration::from_secs);
            }
            _ => {}
        }
    }
    max_age
}

fn expires_lifetime(expires: &str, date: &str) -> Option<Duration> {
    // An invalid Expires (often "0" or "-1") means already expired (RFC 9111 §5.3).
    let Ok(expires) = httpdate::parse_http_date(expires.trim()) else {
        return Some(Duration::ZERO);
    };
    let date: SystemTime = httpdate::parse_http_date(date.trim()).ok()?;
    Some(expires.duration_since(date).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cc(v: &str) -> Option<Duration> {
        freshness(CacheHeaders {
            cache_control: Some(v),
            ..CacheHeaders::default()
        })
    }

    #[test]
    fn max_age_is_read_among_other_directives() {
        assert_eq!(
            cc("public, max-age=22004, must-revalidate, no-transform"),
            Some(Duration::from_secs(22004))
        );
        assert_eq!(cc("MAX-AGE=\"60\""), Some(Duration::from_secs(60)));
        assert_eq!(cc("public"), None);
        assert_eq!(cc("max-age=soon"), None);
    }

    #[test]
    fn no_store_and_no_cache_mean_now() {
        assert_eq!(cc("no-store"), Some(Duration::ZERO));
        assert_eq!(cc("max-age=600, no-cache"), Some(Duration::ZERO));
    }

    #[test]
    fn age_is_subtracted() {
        let h = CacheHeaders {
            cache_control: Some("max-age=600"),
            age: Some("100"),
            ..CacheHeaders::default()
        };
        assert_eq!(freshness(h), Some(Duration::from_secs(500)));
        let h = CacheHeaders {
            age: Some("9000"),
            ..h
        };
        assert_eq!(freshness(h), Some(Duration::ZERO));
    }

    #[test]
    fn expires_counts_from_the_response_date() {
        let h = CacheHeaders {
            expires: Some("Sun, 06 Nov 1994 09:49:37 GMT"),
            date: Some("Sun, 06 Nov 1994 08:49:37 GMT"),
            ..CacheHeaders::default()
        };
        assert_eq!(freshness(h), Some(Duration::from_secs(3600)));
        // max-age wins.
        let h2 = CacheHeaders {
            cache_control: Some("max-age=5"),
            ..h
        };
        assert_eq!(freshness(h2), Some(Duration::from_secs(5)));
        // An invalid Expires is already stale; without Date nothing can be said.
        let h3 = CacheHeaders {
            expires: Some("0"),
            ..h
        };
        assert_eq!(freshness(h3), Some(Duration::ZERO));
        let h4 = CacheHeaders { date: None, ..h };
        assert_eq!(freshness(h4), None);
    }
}
