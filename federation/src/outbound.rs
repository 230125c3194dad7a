//! Outbound safety (SPEC §7, §11): which addresses the broker may fetch keys from. The
//! broker resolves a host, checks every address here, and connects only to a checked one,
//! so DNS cannot steer a fetch to the cloud metadata service or an internal network.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address may not be fetched from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AddressRefused {
    #[error("link-local or cloud metadata address")]
    LinkLocalOrMetadata,
    #[error("private-range address (allow it per trust domain)")]
    Private,
    #[error("unspecified, multicast, broadcast or reserved address")]
    NotUnicast,
}

/// The AWS IPv6 metadata endpoint, named by SPEC §7.
const AWS_METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254);

/// Whether `ip` may be fetched from. Loopback is allowed (tests and sidecars; plain http
/// to it still needs `[danger] allow_http_fetch_to_loopback`); private ranges only when the
/// trust domain allows them; link-local and metadata addresses never.
pub fn check_address(ip: IpAddr, allow_private: bool) -> Result<(), AddressRefused> {
    match ip {
        IpAddr::V4(v4) => check_v4(v4, allow_private),
        IpAddr::V6(v6) => {
            // IPv4-mapped and -compatible addresses are judged as the IPv4 they carry.
            if let Some(v4) = v6.to_ipv4_mapped() {
                return check_v4(v4, allow_private);
            }
            if v6 == AWS_METADATA_V6 || (v6.segments()[0] & 0xffc0) == 0xfe80 {
                return Err(AddressRefused::LinkLocalOrMetadata);
            }
            if v6.is_loopback() {
                return Ok(());
            }
            if v6.is_unspecified() || v6.is_multicast() {
                return Err(AddressRefused::NotUnicast);
            }
            // fc00::/7 unique local.
            if (v6.segments()[0] & 0xfe00) == 0xfc00 && !allow_private {
                return Err(AddressRefused::Private);
            }
            Ok(())
        }
    }
}

fn check_v4(v4: Ipv4Addr, allow_private: bool) -> Result<(), AddressRefused> {
    let [a, b, ..] = v4.octets();
    if v4.is_link_local() {
        // 169.254.0.0/16, including 169.254.169.254 (every cloud's metadata service).
        return Err(AddressRefused::LinkLocalOrMetadata);
    }
    if v4.is_loopback() {
        return Ok(());
    }
    if v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast() || a == 0 || a >= 240 {
        return Err(AddressRefused::NotUnicast);
    }
    // 100.64.0.0/10 (shared address space) counts as private: it is someone's inside.
    let shared = a == 100 && (64..128).contains(&b);
    if (v4.is_private() || shared) && !allow_private {
        return Err(AddressRefused::Private);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(s: &str, allow_private: bool) -> Result<(), AddressRefused> {
        check_address(s.parse().unwrap(), allow_private)
    }

    #[test]
    fn metadata_and_link_local_are_never_reachable() {
        for a in [
            "169.254.169.254",
            "169.254.0.1",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:169.254.169.254",
        ] {
            assert_eq!(
                check(a, true),
                Err(AddressRefused::LinkLocalOrMetadata),
                "{a}"
            );
        }
    }

    #[test]
    fn private_ranges_need_the_domain_to_allow_them() {
        for a in [
            "10.0.0.1",
            "172.16.5.4",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "fd12::1",
            "::ffff:10.1.2.3",
        ] {
            assert_eq!(check(a, false), Err(AddressRefused::Private), "{a}");
            assert_eq!(check(a, true), Ok(()), "{a}");
        }
        assert_eq!(check("172.32.0.1", false), Ok(()));
        assert_eq!(check("100.128.0.1", false), Ok(()));
    }

    #[test]
    fn loopback_and_public_unicast_are_allowed() {
        for a in [
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "93.184.216.34",
            "2606:2800:220:1::1",
        ] {
            assert_eq!(check(a, false), Ok(()), "{a}");
        }
    }

    #[test]
    fn non_unicast_is_refused() {
        for a in [
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "240.0.0.1",
            "::",
            "ff02::1",
        ] {
            assert_eq!(check(a, true), Err(AddressRefused::NotUnicast), "{a}");
        }
    }
}
