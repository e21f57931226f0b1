//! The machine's first non-loopback IPv4 address, for the default
//! `raft.addr`. Read from /proc, so no packet is sent to find it.

use std::net::Ipv4Addr;

pub fn first_non_loopback_ipv4() -> Option<String> {
    // /proc/net/fib_trie lists local addresses as "/32 host LOCAL" entries.
    let trie = std::fs::read_to_string("/proc/net/fib_trie").ok()?;
    let lines: Vec<&str> = trie.lines().collect();
    for w in lines.windows(2) {
        if w[1].contains("/32 host LOCAL") {
            let ip = w[0].trim().trim_start_matches("|-- ").trim();
            if let Ok(a) = ip.parse::<Ipv4Addr>() {
                if !a.is_loopback() && !a.is_unspecified() {
                    return Some(a.to_string());
                }
            }
        }
    }
    None
}
