//! Where a detached daemon's log goes without `--log-file`: the system log
//! (journald or a syslog daemon, through `/dev/log`), facility daemon,
//! tagged `ocimux[PID]`, one datagram per record.
//!
//! The socket is connected before the daemon detaches; once [`divert`]ed,
//! the binary's logger sends every record here instead of to stderr (which
//! is /dev/null then). Sends never block: a system log that does not keep
//! up loses records (counted), never stalls a request thread. A record is
//! cut at [`MAX_RECORD`] bytes.
//!
//! `OCIMUX_SYSLOG_SOCKET` names another socket (a container's relay, a
//! test's private receiver); it is the caller's own setting, read once.

use std::os::unix::net::UnixDatagram;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The system log's socket.
pub const SOCKET: &str = "/dev/log";
/// The environment variable that names another socket.
pub const SOCKET_ENV: &str = "OCIMUX_SYSLOG_SOCKET";
/// Longest record sent (journald takes more; classic syslog daemons less).
pub const MAX_RECORD: usize = 8192;
/// syslog's facility `daemon`, shifted as a priority carries it.
const FACILITY_DAEMON: u8 = 3 << 3;

static SINK: OnceLock<UnixDatagram> = OnceLock::new();
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Where the system log is, if it is there: a connected, non-blocking
/// socket.
pub fn connect() -> Option<UnixDatagram> {
    let path = std::env::var_os(SOCKET_ENV).unwrap_or_else(|| SOCKET.into());
    let sock = UnixDatagram::unbound().ok()?;
    sock.connect(&path).ok()?;
    sock.set_nonblocking(true).ok()?;
    Some(sock)
}

/// From now on, records go to `sock` ([`send`]); once per process.
pub fn divert(sock: UnixDatagram) {
    let _ = SINK.set(sock);
}

/// Whether records go to the system log.
pub fn diverted() -> bool {
    SINK.get().is_some()
}

/// Records the system log did not take (it was full or gone).
pub fn dropped() -> u64 {
    DROPPED.load(Relaxed)
}

/// Sends one record of `level`; `text` is one line (escaped by the caller).
pub fn send(level: log::Level, text: &str) {
    let Some(sock) = SINK.get() else {
        return;
    };
    let datagram = datagram(level, std::process::id(), text);
    if sock.send(datagram.as_bytes()).is_err() {
        DROPPED.fetch_add(1, Relaxed);
    }
}

/// `<PRI>ocimux[PID]: TEXT`, cut at [`MAX_RECORD`] bytes on a character
/// boundary.
fn datagram(level: log::Level, pid: u32, text: &str) -> String {
    let severity = match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    };
    let mut d = format!("<{}>ocimux[{pid}]: {text}", FACILITY_DAEMON + severity);
    if d.len() > MAX_RECORD {
        let mut cut = MAX_RECORD;
        while !d.is_char_boundary(cut) {
            cut -= 1;
        }
        d.truncate(cut);
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_table() {
        let cases = [
            (log::Level::Error, "bad", "<27>ocimux[42]: bad"),
            (log::Level::Warn, "w", "<28>ocimux[42]: w"),
            (log::Level::Info, "i", "<30>ocimux[42]: i"),
            (log::Level::Debug, "d", "<31>ocimux[42]: d"),
            (log::Level::Trace, "t", "<31>ocimux[42]: t"),
        ];
        for (level, text, want) in cases {
            assert_eq!(datagram(level, 42, text), want);
        }
        let long = "é".repeat(MAX_RECORD);
        let d = datagram(log::Level::Info, 1, &long);
        assert!(d.len() <= MAX_RECORD && d.len() > MAX_RECORD - 2);
    }

    #[test]
    fn a_full_receiver_loses_records_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let receiver = UnixDatagram::bind(&path).unwrap();
        let sock = UnixDatagram::unbound().unwrap();
        sock.connect(&path).unwrap();
        sock.set_nonblocking(true).unwrap();
        divert(sock);
        assert!(diverted());
        let start = std::time::Instant::now();
        for _ in 0..10_000 {
            send(log::Level::Info, "x");
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
        assert!(dropped() > 0, "a receiver that never reads fills up");
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).unwrap();
        let pid = std::process::id();
        assert_eq!(&buf[..n], format!("<30>ocimux[{pid}]: x").as_bytes());
    }
}
