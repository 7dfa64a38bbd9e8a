//! Which webhook targets may be called: URL rules at registration, and the address policy that
//! refuses internal networks, applied to literal addresses and again to every address DNS
//! returns at delivery time (so a name cannot be re-pointed at an internal address after it was
//! registered).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Longest accepted webhook URL.
pub const MAX_URL_LEN: usize = 2048;

/// Why an address is refused, or `None` when it is a public address.
pub fn refused_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => refused_v6(v6),
    }
}

fn refused_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    let why = match (a, b, c) {
        (0, _, _) => "\"this network\" (0.0.0.0/8)",
        (10, _, _) => "private (10.0.0.0/8)",
        (100, 64..=127, _) => "carrier-grade NAT (100.64.0.0/10)",
        (127, _, _) => "loopback (127.0.0.0/8)",
        (169, 254, _) => "link-local or cloud metadata (169.254.0.0/16)",
        (172, 16..=31, _) => "private (172.16.0.0/12)",
        (192, 0, 0) => "IETF protocol assignments (192.0.0.0/24)",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (192, 168, _) => "private (192.168.0.0/16)",
        (198, 18..=19, _) => "benchmarking (198.18.0.0/15)",
        (224..=239, _, _) => "multicast (224.0.0.0/4)",
        (240..=255, _, _) => "reserved or broadcast (240.0.0.0/4)",
        _ => return None,
    };
    Some(why)
}

fn refused_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return refused_v4(v4);
    }
    let s = ip.segments();
    // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) carry an IPv4 address that decides.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return refused_v4(Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8));
    }
    if s[0] == 0x2002 {
        return refused_v4(Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8));
    }
    let why = if ip.is_unspecified() {
        "unspecified (::)"
    } else if ip.is_loopback() {
        "loopback (::1)"
    } else if s[0] & 0xfe00 == 0xfc00 {
        "unique local (fc00::/7)"
    } else if s[0] & 0xffc0 == 0xfe80 {
        "link-local (fe80::/10)"
    } else if s[0] & 0xff00 == 0xff00 {
        "multicast (ff00::/8)"
    } else if s[0] == 0x2001 && s[1] == 0x0db8 {
        "documentation (2001:db8::/32)"
    } else if s[..4] == [0x100, 0, 0, 0] {
        "discard (100::/64)"
    } else if s[..6] == [0, 0, 0, 0, 0, 0] {
        "IPv4-compatible (::/96)"
    } else {
        return None;
    };
    Some(why)
}

/// Parses and checks a webhook URL: http or https, a host, no credentials, at most
/// [`MAX_URL_LEN`] characters, and (unless `allow_private`) no literal internal address or
/// `localhost` name. Names are checked again when resolved; see [`check_resolved`].
pub fn parse_url(raw: &str, allow_private: bool) -> Result<Url, String> {
    if raw.len() > MAX_URL_LEN {
        return Err(format!("must be at most {MAX_URL_LEN} characters"));
    }
    let url = Url::parse(raw).map_err(|e| format!("is not a valid URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must be an http or https URL".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain credentials; authenticate deliveries by their signature".into());
    }
    let Some(host) = url.host() else {
        return Err("must name a host".into());
    };
    if !allow_private {
        let ip = match host {
            url::Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
            url::Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
            url::Host::Domain(name) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                if name == "localhost" || name.ends_with(".localhost") {
                    return Err("must not point at this machine (localhost)".into());
                }
                None
            }
        };
        if let Some(why) = ip.and_then(refused_range) {
            return Err(format!("points at a {why} address; set webhooks.allow_private_targets to allow it"));
        }
    }
    Ok(url)
}

/// At registration: resolves a host name (briefly) and refuses it when any address it has is
/// internal. A name that does not resolve yet is accepted; delivery checks it again.
pub async fn check_resolved(url: &Url, allow_private: bool) -> Result<(), String> {
    let Some(url::Host::Domain(name)) = url.host() else { return Ok(()) };
    if allow_private {
        return Ok(());
    }
    let port = url.port_or_known_default().unwrap_or(443);
    let lookup = tokio::net::lookup_host((name.to_owned(), port));
    let Ok(Ok(addrs)) = tokio::time::timeout(Duration::from_secs(2), lookup).await else {
        return Ok(());
    };
    for addr in addrs {
        if let Some(why) = refused_range(addr.ip()) {
            return Err(format!(
                "resolves to a {why} address ({}); set webhooks.allow_private_targets to allow it",
                addr.ip()
            ));
        }
    }
    Ok(())
}

/// The resolver deliveries use when private targets are refused: it drops internal addresses
/// from every answer and fails when none is left, so the connection can only go to an address
/// that passed the check.
#[derive(Debug, Default)]
pub struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> =
                addrs.iter().copied().filter(|a| refused_range(a.ip()).is_none()).collect();
            if public.is_empty() {
                let first = addrs.first().map(|a| a.ip().to_string()).unwrap_or_default();
                return Err(format!("{host} resolves only to internal addresses ({first}); refused").into());
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_ranges_are_refused_and_public_ones_pass() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00:ec2::254",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:c0a8:0101::1",
        ] {
            assert!(refused_range(ip.parse().unwrap()).is_some(), "{ip} should be refused");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert_eq!(refused_range(ip.parse().unwrap()), None, "{ip} should pass");
        }
    }

    #[test]
    fn urls_are_checked() {
        assert!(parse_url("https://example.com/hook", false).is_ok());
        assert!(parse_url("http://93.184.216.34:8080/x?y=1", false).is_ok());
        for bad in [
            "ftp://example.com/",
            "example.com/hook",
            "https://user:pw@example.com/",
            "http://127.0.0.1:9000/",
            "http://[::1]/",
            "http://localhost:3000/",
            "http://api.localhost./",
            "http://169.254.169.254/latest/meta-data/",
            "http://0x7f000001/",
            "http://2130706433/",
            "file:///etc/passwd",
        ] {
            assert!(parse_url(bad, false).is_err(), "{bad} should be refused");
        }
        assert!(parse_url("http://127.0.0.1:9000/", true).is_ok());
        assert!(parse_url(&format!("https://example.com/{}", "a".repeat(MAX_URL_LEN)), true).is_err());
    }
}
