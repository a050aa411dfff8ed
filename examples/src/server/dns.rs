//! A small DNS stub resolver for custom-domain checks: asks one recursive server for
//! a name's CNAME or TXT records (RFC 1035), over UDP, and again over TCP when the
//! answer is truncated. It reads only what the checks need; anything malformed is an
//! error, never a guess.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Record types the checks ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordType {
    /// A canonical name (5).
    Cname,
    /// Text strings (16).
    Txt,
}

impl RecordType {
    fn code(self) -> u16 {
        match self {
            RecordType::Cname => 5,
            RecordType::Txt => 16,
        }
    }
}

/// One answer record of the asked type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A CNAME's target, lower case, without the trailing dot.
    Cname(String),
    /// A TXT record's strings joined (as RFC 7208 joins them).
    Txt(String),
}

/// Why a lookup failed (a name that does not exist is not a failure: no records).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DnsError(pub String);

fn err(msg: impl Into<String>) -> DnsError {
    DnsError(msg.into())
}

/// How long one attempt may take.
const TIMEOUT: Duration = Duration::from_secs(3);

/// The first `nameserver` of `/etc/resolv.conf`, on port 53.
pub fn system_server() -> Option<SocketAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").ok()?;
    text.lines().find_map(|l| {
        let mut words = l.split_whitespace();
        (words.next() == Some("nameserver"))
            .then(|| words.next())
            .flatten()
            .and_then(|ip| ip.parse::<std::net::IpAddr>().ok())
            .map(|ip| SocketAddr::new(ip, 53))
    })
}

/// Asks `server` for the `rtype` records of `name` (following no CNAME chain: the
/// answer's records of that type, owned by any name). An unknown name gives none.
pub async fn lookup(
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
) -> Result<Vec<Record>, DnsError> {
    let id = u16::from_be_bytes(uuid::Uuid::new_v4().as_bytes()[..2].try_into().unwrap());
    let query = encode_query(id, name, rtype.code())?;
    let mut last = err("no attempt");
    for _ in 0..2 {
        match tokio::time::timeout(TIMEOUT, udp(server, &query)).await {
            Ok(Ok(resp)) => {
                let resp = if resp.len() > 2 && resp[2] & 0x02 != 0 {
                    // Truncated: ask again over TCP.
                    tokio::time::timeout(TIMEOUT, tcp(server, &query))
                        .await
                        .map_err(|_| err(format!("DNS server {server} timed out over TCP")))??
                } else {
                    resp
                };
                return parse_response(&resp, id, rtype.code());
            }
            Ok(Err(e)) => last = e,
            Err(_) => last = err(format!("DNS server {server} did not answer in {TIMEOUT:?}")),
        }
    }
    Err(last)
}

async fn udp(server: SocketAddr, query: &[u8]) -> Result<Vec<u8>, DnsError> {
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    let sock = tokio::net::UdpSocket::bind(bind)
        .await
        .map_err(|e| err(format!("cannot open a UDP socket: {e}")))?;
    sock.connect(server)
        .await
        .map_err(|e| err(format!("cannot reach DNS server {server}: {e}")))?;
    sock.send(query)
        .await
        .map_err(|e| err(format!("cannot send to DNS server {server}: {e}")))?;
    let mut buf = vec![0u8; 4096];
    loop {
        let n = sock
            .recv(&mut buf)
            .await
            .map_err(|e| err(format!("DNS server {server}: {e}")))?;
        // Ignore datagrams that are not the answer to this query.
        if n >= 2 && buf[..2] == query[..2] {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn tcp(server: SocketAddr, query: &[u8]) -> Result<Vec<u8>, DnsError> {
    let mut s = tokio::net::TcpStream::connect(server)
        .await
        .map_err(|e| err(format!("cannot reach DNS server {server} over TCP: {e}")))?;
    let mut msg = (query.len() as u16).to_be_bytes().to_vec();
    msg.extend_from_slice(query);
    let io = |e: std::io::Error| err(format!("DNS server {server} over TCP: {e}"));
    s.write_all(&msg).await.map_err(io)?;
    let len = s.read_u16().await.map_err(io)?;
    let mut buf = vec![0u8; usize::from(len)];
    s.read_exact(&mut buf).await.map_err(io)?;
    Ok(buf)
}

/// A standard query with recursion desired.
fn encode_query(id: u16, name: &str, qtype: u16) -> Result<Vec<u8>, DnsError> {
    let mut q = Vec::with_capacity(18 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00]); // RD
    q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // one question
    let name = name.trim_end_matches('.');
    if name.is_empty() || name.len() > 253 {
        return Err(err(format!("{name:?} is not a DNS name")));
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(err(format!("{name:?} is not a DNS name")));
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes()); // IN
    Ok(q)
}

fn u16_at(b: &[u8], at: usize) -> Result<u16, DnsError> {
    b.get(at..at + 2)
        .map(|s| u16::from_be_bytes([s[0], s[1]]))
        .ok_or_else(|| err("DNS answer cut short"))
}

/// Reads the (possibly compressed) name at `at`; returns it and the offset after it
/// in the record (not after any pointer's target).
fn read_name(b: &[u8], mut at: usize) -> Result<(String, usize), DnsError> {
    let mut labels: Vec<String> = Vec::new();
    let mut end = None;
    for _ in 0..128 {
        let len = *b.get(at).ok_or_else(|| err("DNS name cut short"))?;
        match len {
            0 => {
                let name = labels.join(".").to_ascii_lowercase();
                return Ok((name, end.unwrap_or(at + 1)));
            }
            l if l & 0xC0 == 0xC0 => {
                let ptr = usize::from(u16_at(b, at)? & 0x3FFF);
                end.get_or_insert(at + 2);
                at = ptr;
            }
            l if l & 0xC0 == 0 => {
                let l = usize::from(l);
                let label = b
                    .get(at + 1..at + 1 + l)
                    .ok_or_else(|| err("DNS label cut short"))?;
                labels.push(String::from_utf8_lossy(label).into_owned());
                at += 1 + l;
            }
            _ => return Err(err("DNS name with an unknown label type")),
        }
    }
    Err(err("DNS name with a compression loop"))
}

fn parse_response(b: &[u8], id: u16, qtype: u16) -> Result<Vec<Record>, DnsError> {
    if u16_at(b, 0)? != id {
        return Err(err("DNS answer to another query"));
    }
    let flags = u16_at(b, 2)?;
    if flags & 0x8000 == 0 {
        return Err(err("DNS server sent a query, not an answer"));
    }
    match flags & 0x000F {
        0 => {}
        3 => return Ok(Vec::new()), // NXDOMAIN
        2 => return Err(err("DNS server failure (SERVFAIL)")),
        5 => return Err(err("DNS server refused the query")),
        code => return Err(err(format!("DNS error code {code}"))),
    }
    let (qd, an) = (u16_at(b, 4)?, u16_at(b, 6)?);
    let mut at = 12;
    for _ in 0..qd {
        at = read_name(b, at)?.1 + 4;
    }
    let mut out = Vec::new();
    for _ in 0..an {
        let (_, next) = read_name(b, at)?;
        let rtype = u16_at(b, next)?;
        let rdlen = usize::from(u16_at(b, next + 8)?);
        let start = next + 10;
        let rdata = b
            .get(start..start + rdlen)
            .ok_or_else(|| err("DNS record cut short"))?;
        if rtype == qtype {
            match qtype {
                5 => out.push(Record::Cname(read_name(b, start)?.0)),
                16 => {
                    let mut text = Vec::new();
                    let mut i = 0;
                    while i < rdata.len() {
                        let l = usize::from(rdata[i]);
                        let s = rdata
                            .get(i + 1..i + 1 + l)
                            .ok_or_else(|| err("TXT string cut short"))?;
                        text.extend_from_slice(s);
                        i += 1 + l;
                    }
                    out.push(Record::Txt(String::from_utf8_lossy(&text).into_owned()));
                }
                _ => {}
            }
        }
        at = start + rdlen;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A response as a server builds it: the question, then answers whose names
    /// point back at it (compression).
    fn response(id: u16, rcode: u8, answers: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut b = encode_query(id, "www.example.com", 5).unwrap();
        b[2] = 0x81;
        b[3] = 0x80 | rcode;
        b[6..8].copy_from_slice(&(answers.len() as u16).to_be_bytes());
        for (rtype, rdata) in answers {
            b.extend_from_slice(&[0xC0, 12]);
            b.extend_from_slice(&rtype.to_be_bytes());
            b.extend_from_slice(&[0, 1, 0, 0, 1, 0]);
            b.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            b.extend_from_slice(rdata);
        }
        b
    }

    #[test]
    fn reads_compressed_cnames_and_split_txt_strings() {
        // CNAME target "app.Wharf.example" + pointer to "example.com"? Build by hand:
        // labels "app", "wharf" then a pointer to offset 16 ("example.com").
        let mut cname = vec![3];
        cname.extend_from_slice(b"app");
        cname.push(5);
        cname.extend_from_slice(b"WHARF");
        cname.extend_from_slice(&[0xC0, 16]);
        let resp = response(7, 0, &[(5, cname)]);
        assert_eq!(
            parse_response(&resp, 7, 5).unwrap(),
            [Record::Cname("app.wharf.example.com".into())]
        );
        let mut txt = vec![6];
        txt.extend_from_slice(b"wharf-");
        txt.push(6);
        txt.extend_from_slice(b"verify");
        let resp = response(9, 0, &[(16, txt), (5, vec![0])]);
        assert_eq!(
            parse_response(&resp, 9, 16).unwrap(),
            [Record::Txt("wharf-verify".into())]
        );
    }

    #[test]
    fn nxdomain_is_empty_and_errors_are_errors() {
        assert_eq!(parse_response(&response(1, 3, &[]), 1, 5).unwrap(), []);
        assert!(parse_response(&response(1, 2, &[]), 1, 5).is_err());
        assert!(parse_response(&response(1, 0, &[]), 2, 5).is_err());
        // Cut short, and a pointer loop.
        let full = response(1, 0, &[(5, vec![0xC0, 12])]);
        assert!(parse_response(&full[..full.len() - 1], 1, 5).is_err());
        let mut looped = response(1, 0, &[(5, vec![0xC0, 0])]);
        let n = looped.len();
        looped[n - 2..].copy_from_slice(&[0xC0, (n - 2) as u8]);
        assert!(parse_response(&looped, 1, 5).is_err());
        assert!(encode_query(1, "a..b", 5).is_err());
    }
}
