//! The one error type of the module, and its mapping to Redis error replies.

use std::fmt;

/// Why a request was not served. `Display` gives the Redis error text
/// without the leading '-'.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// Not the leader; the leader is at this address.
    Moved(String),
    /// No leader known now.
    NoLeader,
    /// Neither initialized nor joined.
    NoCluster,
    /// Transient; the request was not applied.
    TryAgain(String),
    /// The node is loading (replaying its log or a snapshot).
    Loading,
    /// This node was removed from the cluster.
    Removed,
    /// The command cannot be made consistent (yet).
    Unsupported(String),
    /// The outcome is unknown: the command may or may not have been applied.
    Unknown(String),
    /// Anything else, as an `ERR` reply.
    Other(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Moved(addr) => write!(f, "MOVED 0 {addr}"),
            Error::NoLeader => write!(f, "CLUSTERDOWN No Raft leader"),
            Error::NoCluster => write!(f, "NOCLUSTER No Raft cluster"),
            Error::TryAgain(why) => write!(f, "TRYAGAIN {why}"),
            Error::Loading => write!(f, "LOADING Raft log is being loaded"),
            Error::Removed => write!(f, "ERR This node was removed from the Raft cluster"),
            Error::Unsupported(why) => write!(f, "ERR {why}"),
            Error::Unknown(why) => write!(f, "TIMEOUT {why}"),
            Error::Other(why) => write!(f, "ERR {why}"),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_render_as_the_contract_says() {
        assert_eq!(
            Error::Moved("127.0.0.1:5002".into()).to_string(),
            "MOVED 0 127.0.0.1:5002"
        );
        assert_eq!(Error::NoLeader.to_string(), "CLUSTERDOWN No Raft leader");
        assert_eq!(Error::NoCluster.to_string(), "NOCLUSTER No Raft cluster");
        assert!(Error::TryAgain("x".into())
            .to_string()
            .starts_with("TRYAGAIN "));
    }
}
