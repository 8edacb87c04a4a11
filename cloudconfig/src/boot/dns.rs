//! Just enough of a DNS client for etcd-member's `discovery-srv`: SRV and A questions over UDP
//! to the resolvers in `/etc/resolv.conf` (systemd-resolved's stub in the image). etcd 3.4.23
//! resolves the records itself but drops the plain `_etcd-server._tcp` answers when no
//! `_etcd-server-ssl._tcp` records exist, so etcd-member reads them and hands etcd the list.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

const TYPE_A: u16 = 1;
const TYPE_SRV: u16 = 33;
const CLASS_IN: u16 = 1;
const TIMEOUT: Duration = Duration::from_secs(2);
const TRIES: usize = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Srv {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    /// Without the trailing dot.
    pub target: String,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    #[error("no nameserver in /etc/resolv.conf")]
    NoResolver,
    #[error("{name}: no answer from {servers} after {TRIES} tries")]
    NoAnswer { name: String, servers: String },
    #[error("{name}: {server} answered {rcode}")]
    Rcode {
        name: String,
        server: SocketAddr,
        rcode: &'static str,
    },
    #[error("{name}: {server} sent a malformed answer ({why})")]
    Malformed {
        name: String,
        server: SocketAddr,
        why: &'static str,
    },
}

/// The nameservers of a resolv.conf text, port 53.
pub fn resolvers(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// A client asking `servers` in order.
pub struct Client {
    pub servers: Vec<SocketAddr>,
}

impl Client {
    /// From `/etc/resolv.conf`.
    pub fn from_system() -> Result<Client, DnsError> {
        let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let servers = resolvers(&text);
        if servers.is_empty() {
            return Err(DnsError::NoResolver);
        }
        Ok(Client { servers })
    }

    /// The SRV records of `name`, by priority then weight (heavier first). An empty list when
    /// the name has none (NXDOMAIN or no data).
    pub fn srv(&self, name: &str) -> Result<Vec<Srv>, DnsError> {
        let (msg, answers) = self.ask(name, TYPE_SRV)?;
        let mut out: Vec<Srv> = answers
            .iter()
            .filter(|r| r.rtype == TYPE_SRV)
            .filter_map(|r| srv_data(&msg, r))
            .collect();
        out.sort_by(|a, b| (a.priority, b.weight).cmp(&(b.priority, a.weight)));
        Ok(out)
    }

    /// The IPv4 addresses of `name` (empty when it has none).
    pub fn ipv4(&self, name: &str) -> Result<Vec<Ipv4Addr>, DnsError> {
        let (msg, answers) = self.ask(name, TYPE_A)?;
        Ok(answers
            .iter()
            .filter(|r| r.rtype == TYPE_A && r.data.len() == 4)
            .map(|r| {
                let d = &msg[r.data.clone()];
                Ipv4Addr::new(d[0], d[1], d[2], d[3])
            })
            .collect())
    }

    /// The reply and its answer records (names in SRV data may point anywhere in it).
    fn ask(&self, name: &str, qtype: u16) -> Result<(Vec<u8>, Vec<Record>), DnsError> {
        let id = (std::process::id() as u16) ^ (qtype << 8) ^ name.len() as u16;
        let query = encode_query(id, name, qtype);
        for _ in 0..TRIES {
            for &server in &self.servers {
                let Some(reply) = exchange(server, &query) else {
                    continue;
                };
                match parse_reply(&reply, id) {
                    Ok(records) => return Ok((reply, records)),
                    Err(Reply::Empty) => return Ok((reply, Vec::new())),
                    Err(Reply::Rcode(rcode)) => {
                        return Err(DnsError::Rcode {
                            name: name.into(),
                            server,
                            rcode,
                        })
                    }
                    Err(Reply::Malformed(why)) => {
                        return Err(DnsError::Malformed {
                            name: name.into(),
                            server,
                            why,
                        })
                    }
                    Err(Reply::NotOurs) => continue,
                }
            }
        }
        Err(DnsError::NoAnswer {
            name: name.into(),
            servers: self
                .servers
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        })
    }
}

fn exchange(server: SocketAddr, query: &[u8]) -> Option<Vec<u8>> {
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    let socket = UdpSocket::bind(bind).ok()?;
    socket.set_read_timeout(Some(TIMEOUT)).ok()?;
    socket.connect(server).ok()?;
    socket.send(query).ok()?;
    let mut buf = vec![0u8; 4096];
    let n = socket.recv(&mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// A standard query with recursion desired.
pub fn encode_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(name.len() + 18);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        let label = &label.as_bytes()[..label.len().min(63)];
        q.push(label.len() as u8);
        q.extend_from_slice(label);
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&CLASS_IN.to_be_bytes());
    q
}

#[derive(Debug, PartialEq)]
enum Reply {
    /// NXDOMAIN: the name does not exist, which for SRV means "no records".
    Empty,
    Rcode(&'static str),
    Malformed(&'static str),
    /// Another query's answer (a late reply to an earlier try).
    NotOurs,
}

/// One answer record: its type and where its data is in the message.
#[derive(Debug, PartialEq)]
struct Record {
    rtype: u16,
    data: std::ops::Range<usize>,
}

/// The answer section's records.
fn parse_reply(msg: &[u8], id: u16) -> Result<Vec<Record>, Reply> {
    if msg.len() < 12 {
        return Err(Reply::Malformed("shorter than a header"));
    }
    if u16::from_be_bytes([msg[0], msg[1]]) != id || msg[2] & 0x80 == 0 {
        return Err(Reply::NotOurs);
    }
    if msg[2] & 0x02 != 0 {
        return Err(Reply::Malformed("truncated (TC): too many records for UDP"));
    }
    match msg[3] & 0x0f {
        0 => {}
        3 => return Err(Reply::Empty),
        2 => return Err(Reply::Rcode("SERVFAIL")),
        5 => return Err(Reply::Rcode("REFUSED")),
        _ => return Err(Reply::Rcode("an error")),
    }
    let count = |at: usize| u16::from_be_bytes([msg[at], msg[at + 1]]) as usize;
    let (questions, answers) = (count(4), count(6));
    let mut at = 12;
    for _ in 0..questions {
        at = skip_name(msg, at).ok_or(Reply::Malformed("bad question name"))? + 4;
    }
    let mut out = Vec::new();
    for _ in 0..answers {
        at = skip_name(msg, at).ok_or(Reply::Malformed("bad answer name"))?;
        let fixed = msg
            .get(at..at + 10)
            .ok_or(Reply::Malformed("answer cut short"))?;
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let len = u16::from_be_bytes([fixed[8], fixed[9]]) as usize;
        let data = at + 10..at + 10 + len;
        if data.end > msg.len() {
            return Err(Reply::Malformed("answer data cut short"));
        }
        out.push(Record { rtype, data });
        at += 10 + len;
    }
    Ok(out)
}

/// Past a (possibly compressed) name at `at`.
fn skip_name(msg: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *msg.get(at)? as usize;
        match len {
            0 => return Some(at + 1),
            l if l & 0xc0 == 0xc0 => return Some(at + 2),
            l => at += 1 + l,
        }
    }
}

/// The name at `at`, following compression pointers (bounded, against loops).
fn read_name(msg: &[u8], mut at: usize) -> Option<String> {
    let mut labels = Vec::new();
    for _ in 0..64 {
        let len = *msg.get(at)? as usize;
        match len {
            0 => return Some(labels.join(".")),
            l if l & 0xc0 == 0xc0 => {
                at = ((l & 0x3f) << 8) | *msg.get(at + 1)? as usize;
            }
            l => {
                labels.push(String::from_utf8_lossy(msg.get(at + 1..at + 1 + l)?).into_owned());
                at += 1 + l;
            }
        }
    }
    None
}

/// An SRV record's priority, weight, port and target.
fn srv_data(msg: &[u8], record: &Record) -> Option<Srv> {
    let d = msg.get(record.data.clone())?;
    let field = |i: usize| Some(u16::from_be_bytes([*d.get(i)?, *d.get(i + 1)?]));
    Some(Srv {
        priority: field(0)?,
        weight: field(2)?,
        port: field(4)?,
        target: read_name(msg, record.data.start + 6)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers() {
        let conf =
            "# stub\nnameserver 127.0.0.53\noptions edns0\nsearch keel.test\nnameserver ::1\n";
        assert_eq!(
            resolvers(conf),
            vec![
                "127.0.0.53:53".parse().unwrap(),
                "[::1]:53".parse().unwrap()
            ]
        );
    }

    #[test]
    fn query_wire_format() {
        let q = encode_query(0x1234, "_etcd-server._tcp.keel.test.", TYPE_SRV);
        let mut want = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in ["_etcd-server", "_tcp", "keel", "test"] {
            want.push(l.len() as u8);
            want.extend_from_slice(l.as_bytes());
        }
        want.extend_from_slice(&[0, 0, 33, 0, 1]);
        assert_eq!(q, want);
    }

    /// A reply as a server writes it: the question, then one SRV answer whose owner name is a
    /// pointer to the question and whose target ends in a pointer too.
    fn srv_reply(id: u16) -> Vec<u8> {
        let mut m = encode_query(id, "_etcd-server._tcp.keel.test", TYPE_SRV);
        m[2] = 0x81;
        m[3] = 0x80;
        m[7] = 1; // one answer
        m.extend_from_slice(&[0xc0, 12]); // owner: the question's name
        m.extend_from_slice(&[0, 33, 0, 1, 0, 0, 0, 60]);
        let target: &[u8] = &[7, b'c', b'o', b'r', b'e', b'-', b'0', b'2', 0xc0, 30];
        m.extend_from_slice(&((6 + target.len()) as u16).to_be_bytes());
        m.extend_from_slice(&[0, 10, 0, 5, 0x09, 0x4c]); // priority 10, weight 5, port 2380
        m.extend_from_slice(target);
        m
    }

    #[test]
    fn srv_answer_with_compressed_names() {
        let m = srv_reply(7);
        // "keel.test" starts at offset 12 + 1 + 12 + 1 + 4 = 30 in the question.
        assert_eq!(m[30], 4);
        let answers = parse_reply(&m, 7).unwrap();
        assert_eq!(answers.len(), 1);
        assert_eq!(
            srv_data(&m, &answers[0]),
            Some(Srv {
                priority: 10,
                weight: 5,
                port: 2380,
                target: "core-02.keel.test".into()
            })
        );
    }

    #[test]
    fn replies_that_are_not_answers() {
        let mut m = srv_reply(7);
        assert_eq!(parse_reply(&m, 8), Err(Reply::NotOurs));
        m[3] = 0x83;
        assert_eq!(parse_reply(&m, 7), Err(Reply::Empty));
        m[3] = 0x82;
        assert_eq!(parse_reply(&m, 7), Err(Reply::Rcode("SERVFAIL")));
        m[3] = 0x80;
        let cut = &m[..m.len() - 3];
        assert_eq!(
            parse_reply(cut, 7),
            Err(Reply::Malformed("answer data cut short"))
        );
        let mut looped = srv_reply(7);
        let n = looped.len();
        looped[n - 2] = 0xc0;
        looped[n - 1] = (n - 2) as u8; // a pointer to itself
        let answers = parse_reply(&looped, 7).unwrap();
        assert_eq!(srv_data(&looped, &answers[0]), None);
    }
}
