//! Where the server listens, written as docker-registry's `addr` and
//! meta-virtualization's `CONTAINER_REGISTRY_URL` are: `HOST:PORT` with an
//! address, `[v6]:PORT`, `:PORT` (every IPv4 interface, as `addr: :5000`),
//! or a name whose addresses are all loopback (`localhost:5000`), listened
//! on at each of them. A name that resolves elsewhere is refused: which
//! network a server is open to is given as an address, never left to a
//! resolver.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::str::FromStr;

/// A `--listen` value: as written, and the addresses it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    written: String,
    addrs: Vec<SocketAddr>,
}

impl Listen {
    /// One address.
    pub fn at(addr: SocketAddr) -> Listen {
        Listen {
            written: addr.to_string(),
            addrs: vec![addr],
        }
    }

    /// The addresses to listen on, first the one announced; never empty.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Whether only this machine can connect.
    pub fn is_loopback(&self) -> bool {
        self.addrs.iter().all(|a| a.ip().is_loopback())
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.written)
    }
}

impl Default for Listen {
    /// `127.0.0.1:5000`, docker-registry's port on loopback.
    fn default() -> Listen {
        Listen::at(SocketAddr::from(([127, 0, 0, 1], 5000)))
    }
}

impl FromStr for Listen {
    type Err = String;

    fn from_str(text: &str) -> Result<Listen, String> {
        let (host, port) = text
            .rsplit_once(':')
            .ok_or("not HOST:PORT, [ADDRESS]:PORT or :PORT")?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("port {port:?} is not a number from 0 to 65535"))?;
        let host = match host.strip_prefix('[') {
            Some(v6) => v6
                .strip_suffix(']')
                .ok_or("an IPv6 address is written [ADDRESS]:PORT")?,
            None => host,
        };
        let addrs = if host.is_empty() {
            vec![SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))]
        } else if let Ok(ip) = host.parse::<IpAddr>() {
            vec![SocketAddr::new(ip, port)]
        } else {
            loopback_addresses(host, port)?
        };
        Ok(Listen {
            written: text.to_owned(),
            addrs,
        })
    }
}

/// The addresses `name` resolves to, if every one is loopback.
fn loopback_addresses(name: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    if name.len() > 253 || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("not a host name".into());
    }
    let resolved = (name, port)
        .to_socket_addrs()
        .map_err(|e| format!("{name:?} does not resolve: {e}"))?;
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for addr in resolved {
        if !addr.ip().is_loopback() {
            return Err(format!(
                "{name:?} resolves to {}, not a loopback address: give the address to listen on",
                addr.ip()
            ));
        }
        if !addrs.contains(&addr) {
            addrs.push(addr);
        }
    }
    // IPv4 first: what is announced is what most clients reach.
    addrs.sort_by_key(|a| a.is_ipv6());
    match addrs.is_empty() {
        true => Err(format!("{name:?} resolves to no address")),
        false => Ok(addrs),
    }
}

/// For serde: a `listen` setting read as `--listen` is.
pub fn deserialize<'de, D>(d: D) -> Result<Option<Listen>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let text: Option<String> = serde::Deserialize::deserialize(d)?;
    text.map(|t| t.parse().map_err(serde::de::Error::custom))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_users_write() {
        let v4 = |a: [u8; 4], p: u16| SocketAddr::from((a, p));
        let cases: &[(&str, Option<Vec<SocketAddr>>)] = &[
            ("127.0.0.1:5000", Some(vec![v4([127, 0, 0, 1], 5000)])),
            (":5000", Some(vec![v4([0, 0, 0, 0], 5000)])),
            ("0.0.0.0:0", Some(vec![v4([0, 0, 0, 0], 0)])),
            ("[::1]:5000", Some(vec!["[::1]:5000".parse().unwrap()])),
            ("[::]:80", Some(vec!["[::]:80".parse().unwrap()])),
            ("5000", None),
            ("localhost", None),
            ("127.0.0.1:65536", None),
            ("127.0.0.1:-1", None),
            ("[::1:5000", None),
            ("", None),
            ("a b:5000", None),
        ];
        for (text, want) in cases {
            let got = text.parse::<Listen>().map(|l| l.addrs().to_vec());
            match want {
                Some(addrs) => assert_eq!(got.as_ref(), Ok(addrs), "{text}"),
                None => assert!(got.is_err(), "{text}: {got:?}"),
            }
        }
    }

    #[test]
    fn localhost_is_each_of_its_loopback_addresses() {
        let l: Listen = "localhost:5000".parse().unwrap();
        assert!(l.is_loopback() && !l.addrs().is_empty());
        assert!(l.addrs().iter().all(|a| a.port() == 5000));
        assert!(l.addrs()[0].is_ipv4(), "{:?}", l.addrs());
        assert_eq!(l.to_string(), "localhost:5000");
        assert!(!":5000".parse::<Listen>().unwrap().is_loopback());
        assert_eq!(Listen::default().to_string(), "127.0.0.1:5000");
    }
}
