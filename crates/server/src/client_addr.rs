//! Who is on the other end: the client's address, which the sign-in limit is keyed
//! on and the log names. Behind a reverse proxy every request comes from the proxy,
//! so the address a trusted proxy puts in `X-Forwarded-For` is used instead; from
//! anyone else that header is ignored, since a client can write whatever it likes
//! there.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::HeaderMap;

use crate::state::Shared;

/// An address or a network (`10.0.0.0/8`, `fd00::/8`, `192.0.2.7`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or network"))?;
        let addr = addr.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(IpNet { addr, prefix })
    }
}

/// The proxies whose `X-Forwarded-For` is believed (none by default).
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parse a list of addresses and networks; the error names the bad entry.
    pub fn parse<S: AsRef<str>>(list: &[S]) -> Result<Self, String> {
        list.iter()
            .map(|s| s.as_ref().parse())
            .collect::<Result<Vec<_>, _>>()
            .map(TrustedProxies)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(ip))
    }

    /// The client's address: the peer's, unless the peer is a trusted proxy; then
    /// `X-Forwarded-For` is read from the right (each proxy appends the address it
    /// was sent from), skipping trusted hops, and the first address no trusted
    /// proxy vouches for beyond is the client. Entries left of it were written by
    /// the client itself and mean nothing.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.trusts(client) {
            return client;
        }
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        for hop in hops.iter().rev() {
            let Some(ip) = parse_hop(hop) else {
                // Garbage: the last proxy we trust is as far as we can see.
                break;
            };
            client = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry: an address, perhaps with a port (`[v6]:port` too).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .map(|ip| ip.to_canonical())
}

/// The calling client's address, per [`TrustedProxies::client`]; `None` without a
/// connection (only in tests that call the router directly).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub Option<IpAddr>);

impl ClientAddr {
    pub fn of(parts: &Parts, trusted: &TrustedProxies) -> ClientAddr {
        ClientAddr(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| trusted.client(c.0.ip(), &parts.headers)),
        )
    }
}

impl std::fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(ip) => ip.fmt(f),
            None => f.write_str("-"),
        }
    }
}

impl FromRequestParts<Shared> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Shared,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr::of(parts, &state.settings.trusted_proxies))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn networks() {
        let n: IpNet = "10.0.0.0/8".parse().unwrap();
        assert!(n.contains(ip("10.1.2.3")));
        assert!(!n.contains(ip("11.0.0.1")));
        assert!(n.contains(ip("::ffff:10.9.9.9")), "IPv4-mapped peers");
        let one: IpNet = "192.0.2.7".parse().unwrap();
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
        let v6: IpNet = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.1")));
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
        assert!("proxy.example".parse::<IpNet>().is_err());
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let none = TrustedProxies::default();
        let h = xff(&["203.0.113.9"]);
        assert_eq!(none.client(ip("198.51.100.1"), &h), ip("198.51.100.1"));

        let t = TrustedProxies::parse(&["10.0.0.0/8", "192.0.2.1"]).unwrap();
        // An untrusted peer's header is its own invention.
        assert_eq!(t.client(ip("198.51.100.1"), &h), ip("198.51.100.1"));
        // Through one trusted proxy.
        assert_eq!(t.client(ip("10.0.0.5"), &h), ip("203.0.113.9"));
        // A forged entry on the left is not the client: the rightmost untrusted is.
        let h = xff(&["1.1.1.1, 203.0.113.9, 192.0.2.1"]);
        assert_eq!(t.client(ip("10.0.0.5"), &h), ip("203.0.113.9"));
        // Several header lines are one list, in order.
        let h = xff(&["1.1.1.1", "203.0.113.9", "10.2.2.2"]);
        assert_eq!(t.client(ip("10.0.0.5"), &h), ip("203.0.113.9"));
        // Every hop trusted: the leftmost is as far as we can see.
        let h = xff(&["10.3.3.3, 10.2.2.2"]);
        assert_eq!(t.client(ip("10.0.0.5"), &h), ip("10.3.3.3"));
        // Garbage stops the walk at the last trusted hop.
        let h = xff(&["203.0.113.9, unknown"]);
        assert_eq!(t.client(ip("10.0.0.5"), &h), ip("10.0.0.5"));
        // No header: the proxy itself.
        assert_eq!(t.client(ip("10.0.0.5"), &HeaderMap::new()), ip("10.0.0.5"));
        // Ports and brackets.
        let h = xff(&["[2001:db8::1]:4711"]);
        assert_eq!(t.client(ip("10.0.0.5"), &h), ip("2001:db8::1"));
        let h = xff(&["203.0.113.9:4711"]);
        assert_eq!(t.client(ip("10.0.0.5"), &h), ip("203.0.113.9"));
    }
}
