//! The module's settings: storage, validation, and the older positional
//! load form (`id=1 addr=... raftlog=...`).
//!
//! Settings live in statics so any thread can read them; Redis's config
//! system (`--raft.<name>`, redis.conf, CONFIG GET/SET) writes them through
//! the `ConfigurationValue` impls below, and the positional form through
//! [`apply_arg`]. Both paths share one validation.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use redis_module::configuration::{ConfigurationContext, ConfigurationValue};
use redis_module::{enum_configuration, RedisError, RedisString};

/// A boolean setting with an optional validation.
pub struct BoolSetting {
    value: AtomicBool,
    check: fn(bool) -> Result<(), String>,
}

impl BoolSetting {
    pub const fn new(default: bool, check: fn(bool) -> Result<(), String>) -> Self {
        BoolSetting {
            value: AtomicBool::new(default),
            check,
        }
    }
    pub fn get(&self) -> bool {
        self.value.load(Ordering::Relaxed)
    }
    pub fn set(&self, v: bool) -> Result<(), String> {
        (self.check)(v)?;
        self.value.store(v, Ordering::Relaxed);
        Ok(())
    }
}

impl ConfigurationValue<bool> for BoolSetting {
    fn get(&self, _: &ConfigurationContext) -> bool {
        BoolSetting::get(self)
    }
    fn set(&self, _: &ConfigurationContext, v: bool) -> Result<(), RedisError> {
        BoolSetting::set(self, v).map_err(RedisError::String)
    }
}

/// A string setting with a validation.
pub struct StrSetting {
    value: Mutex<String>,
    check: fn(&str) -> Result<(), String>,
}

impl StrSetting {
    pub const fn new(check: fn(&str) -> Result<(), String>) -> Self {
        StrSetting {
            value: Mutex::new(String::new()),
            check,
        }
    }
    pub fn get(&self) -> String {
        self.value.lock().clone()
    }
    pub fn set(&self, v: &str) -> Result<(), String> {
        // Redis reads configs back as C strings: a NUL would abort it.
        if v.contains('\0') {
            return Err("value contains a NUL byte".into());
        }
        (self.check)(v)?;
        *self.value.lock() = v.to_string();
        Ok(())
    }
}

impl ConfigurationValue<RedisString> for StrSetting {
    fn get(&self, _: &ConfigurationContext) -> RedisString {
        RedisString::create(None, StrSetting::get(self).as_str())
    }
    fn set(&self, _: &ConfigurationContext, v: RedisString) -> Result<(), RedisError> {
        let s = v
            .try_as_str()
            .map_err(|_| RedisError::Str("value is not valid UTF-8"))?;
        StrSetting::set(self, s).map_err(RedisError::String)
    }
}

enum_configuration! {
    /// Lower-case variants: Redis shows and accepts these names.
    #[allow(non_camel_case_types)]
    #[derive(PartialEq, Eq, Debug)]
    pub enum LogLevel {
        debug = 0,
        verbose = 1,
        notice = 2,
        warning = 3,
    }
}

fn any_str(_: &str) -> Result<(), String> {
    Ok(())
}
fn any_bool(_: bool) -> Result<(), String> {
    Ok(())
}

/// `host:port` with a numeric port; empty means "derive at init".
pub fn check_addr(v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Ok(());
    }
    parse_addr(v).map(|_| ())
}

/// Splits `host:port`, refusing anything else with a one-line reason.
pub fn parse_addr(v: &str) -> Result<(String, u16), String> {
    let (host, port) = v
        .rsplit_once(':')
        .ok_or_else(|| format!("invalid address '{v}': expected host:port"))?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("invalid address '{v}': bad port"))?;
    // Addresses end up in INFO, which Redis takes as C strings: no NUL or
    // other control characters.
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(format!("invalid address '{v}': bad host"));
    }
    Ok((host.to_string(), port))
}

fn check_log_filename(v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Err("log-filename must not be empty".into());
    }
    Ok(())
}

const TRACE_AREAS: &[&str] = &[
    "off", "node", "conn", "raftlib", "raftlog", "generic", "all",
];

fn check_trace(v: &str) -> Result<(), String> {
    for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if !TRACE_AREAS.contains(&part) {
            return Err(format!(
                "invalid trace area '{part}': expected a comma list of {}",
                TRACE_AREAS.join(", ")
            ));
        }
    }
    Ok(())
}

fn check_read_mode(v: &str) -> Result<(), String> {
    match v {
        // Live: the leader stops serving from its lease at once.
        "readindex" => Ok(()),
        // At load the timing may be set after this: `check_loaded` checks
        // them together.
        "lease" if !LOADED.load(Ordering::Relaxed) => Ok(()),
        // Setting the value it has changes nothing.
        "lease" if lease_reads() => Ok(()),
        "lease" => Err(LEASE_AT_LOAD.into()),
        _ => Err(format!(
            "invalid read-mode '{v}': expected readindex or lease"
        )),
    }
}

/// Why CONFIG SET refuses read-mode lease: a lease is safe only if every
/// voter withholds its vote after a restart, and a node decides that when
/// it starts, from its own read-mode.
pub const LEASE_AT_LOAD: &str = "read-mode lease is set at load only, on every node (a node withholds its vote after a restart, which keeps leases safe, only if it loaded with lease); readindex can be set at any time";

/// Settings fixed when the node starts (raft-rs takes the timing once;
/// the id, address and log path name the node): CONFIG SET refuses them.
pub const AT_LOAD: &[&str] = &[
    "id",
    "addr",
    "log-filename",
    "periodic-interval",
    "request-timeout",
    "election-timeout",
    "tls-enabled",
];

/// The one-line refusal of CONFIG SET for a setting fixed at load
/// (`name` without the `raft.` prefix), or None if it changes live.
pub fn set_at_load(name: &str) -> Option<String> {
    AT_LOAD.contains(&name).then(|| {
        format!(
            "raft.{name} is set at load: change it in the configuration file and restart the node"
        )
    })
}

/// Set once the load-time settings are all in (see [`check_loaded`]).
static LOADED: AtomicBool = AtomicBool::new(false);

/// read-mode lease is safe only with enough election ticks: see
/// `node::LEASE_MIN_ELECTION_TICKS` for why.
pub fn check_lease_timing(s: &Settings) -> Result<(), String> {
    let min = crate::node::LEASE_MIN_ELECTION_TICKS;
    let e = s.election_ticks();
    if e >= min {
        return Ok(());
    }
    let tick = s.periodic_interval.as_millis();
    Err(format!(
        "read-mode lease needs an election-timeout of at least {min} periodic-intervals ({} ms with periodic-interval {tick} ms), not {e}: a follower may vote again {} ms after a heartbeat while the lease lasts {} ms; use read-mode readindex or a longer election-timeout",
        tick * min as u128,
        tick * (e as u128 - 1),
        tick * e as u128 * 4 / 5,
    ))
}

/// Checks the settings that depend on each other once all load-time values
/// are set (Redis applies them in its own order); from then on CONFIG SET
/// checks each change.
pub fn check_loaded() -> Result<(), String> {
    if lease_reads() {
        check_lease_timing(&Settings::current())?;
    }
    LOADED.store(true, Ordering::Relaxed);
    Ok(())
}

// RedisRaft's sharding settings. We have no sharding: they load at
// RedisRaft's defaults so its configuration files carry over, a value that
// needs the feature is refused, and any other value is logged as unused.

fn check_sharding(v: bool) -> Result<(), String> {
    if v {
        return Err("sharding yes is not supported: this RedisRaft has no sharding; run one cluster per dataset".into());
    }
    Ok(())
}

fn check_external_sharding(v: bool) -> Result<(), String> {
    if v {
        return Err(
            "external-sharding yes is not supported: this RedisRaft has no sharding".into(),
        );
    }
    Ok(())
}

fn check_migration_debug(v: &str) -> Result<(), String> {
    match v {
        "none" => Ok(()),
        "fail-connect" | "fail-import" | "fail-unlock" => Err(format!(
            "migration-debug {v} is not supported: this RedisRaft has no slot migration"
        )),
        _ => Err(format!(
            "invalid migration-debug '{v}': expected none, fail-connect, fail-import or fail-unlock"
        )),
    }
}

/// RedisRaft's sharding settings that we accept and ignore, with their
/// RedisRaft defaults (bools as yes/no, as CONFIG GET shows them).
pub const UNUSED_SHARDING: &[(&str, &str)] = &[
    ("sharding", "no"),
    ("external-sharding", "no"),
    ("slot-config", "0:16383"),
    ("shardgroup-update-interval", "5000"),
    ("scan-size", "1000"),
    ("migration-debug", "none"),
];

/// The warning for an accepted sharding setting set away from its default
/// (`name` without the `raft.` prefix), or None.
pub fn unused_setting_warning(name: &str, value: &str) -> Option<String> {
    let (_, default) = UNUSED_SHARDING.iter().find(|(n, _)| *n == name)?;
    (!value.eq_ignore_ascii_case(default)).then(|| {
        format!("raft.{name} '{value}' has no effect: this RedisRaft has no sharding (RedisRaft's default is '{default}')")
    })
}

/// Logs a warning for each sharding setting loaded away from its default.
pub fn warn_unused_settings() {
    let values = [
        ("slot-config", SLOT_CONFIG.get()),
        (
            "shardgroup-update-interval",
            get(&SHARDGROUP_UPDATE_INTERVAL).to_string(),
        ),
        ("scan-size", get(&SCAN_SIZE).to_string()),
    ];
    for (name, value) in values {
        if let Some(w) = unused_setting_warning(name, &value) {
            crate::logging::warning(&w);
        }
    }
}

pub static ID: AtomicI64 = AtomicI64::new(0);
pub static ADDR: StrSetting = StrSetting::new(check_addr);
pub static LOG_FILENAME: StrSetting = StrSetting::new(check_log_filename);
pub static LOG_FSYNC: BoolSetting = BoolSetting::new(true, any_bool);
pub static LOG_MAX_FILE_SIZE: AtomicI64 = AtomicI64::new(128_000_000);
pub static LOG_MAX_CACHE_SIZE: AtomicI64 = AtomicI64::new(64_000_000);
pub static PERIODIC_INTERVAL: AtomicI64 = AtomicI64::new(100);
pub static REQUEST_TIMEOUT: AtomicI64 = AtomicI64::new(200);
pub static ELECTION_TIMEOUT: AtomicI64 = AtomicI64::new(1000);
pub static CONNECTION_TIMEOUT: AtomicI64 = AtomicI64::new(3000);
pub static JOIN_TIMEOUT: AtomicI64 = AtomicI64::new(120_000);
pub static RESPONSE_TIMEOUT: AtomicI64 = AtomicI64::new(1000);
pub static RECONNECT_INTERVAL: AtomicI64 = AtomicI64::new(100);
pub static FOLLOWER_PROXY: BoolSetting = BoolSetting::new(false, any_bool);
pub static QUORUM_READS: BoolSetting = BoolSetting::new(true, any_bool);
pub static IGNORED_COMMANDS: StrSetting = StrSetting::new(any_str);
pub static APPEND_REQ_MAX_COUNT: AtomicI64 = AtomicI64::new(2);
pub static APPEND_REQ_MAX_SIZE: AtomicI64 = AtomicI64::new(2_097_152);
pub static SNAPSHOT_REQ_MAX_SIZE: AtomicI64 = AtomicI64::new(65_536);
pub static SNAPSHOT_REQ_MAX_COUNT: AtomicI64 = AtomicI64::new(32);
pub static CLUSTER_USER: StrSetting = StrSetting::new(any_str);
pub static CLUSTER_PASSWORD: StrSetting = StrSetting::new(any_str);
pub static LOGLEVEL: std::sync::Mutex<LogLevel> = std::sync::Mutex::new(LogLevel::notice);

pub fn loglevel() -> LogLevel {
    LOGLEVEL
        .lock()
        .map(|l| l.clone())
        .unwrap_or(LogLevel::notice)
}
pub static TRACE: StrSetting = StrSetting::new(check_trace);
/// How a leader confirms it may serve a read: `readindex` (a quorum round
/// per batch of reads, no clock assumption) or `lease` (opt-in: served at
/// once while a lease renewed by quorum heartbeats holds; assumes clocks
/// that tick at nearly the same rate).
pub static READ_MODE: StrSetting = StrSetting::new(check_read_mode);

pub fn lease_reads() -> bool {
    READ_MODE.get() == "lease"
}
/// Node-to-node connections over TLS (see `tls`). Load-time only: the
/// cluster's addresses are TLS ports or plain ones, not both.
pub static TLS_ENABLED: BoolSetting = BoolSetting::new(false, any_bool);
pub static PROXY_RESPONSE_TIMEOUT: AtomicI64 = AtomicI64::new(10_000);
pub static SHARDING: BoolSetting = BoolSetting::new(false, check_sharding);
pub static EXTERNAL_SHARDING: BoolSetting = BoolSetting::new(false, check_external_sharding);
pub static SLOT_CONFIG: StrSetting = StrSetting::new(any_str);
pub static SHARDGROUP_UPDATE_INTERVAL: AtomicI64 = AtomicI64::new(5000);
pub static SCAN_SIZE: AtomicI64 = AtomicI64::new(1000);
pub static MIGRATION_DEBUG: StrSetting = StrSetting::new(check_migration_debug);
// Hidden test knobs (fault injection).
pub static LOG_DISABLE_APPLY: BoolSetting = BoolSetting::new(false, any_bool);
pub static LOG_DELAY_APPLY: AtomicI64 = AtomicI64::new(0);
pub static SNAPSHOT_DISABLE: BoolSetting = BoolSetting::new(false, any_bool);
pub static SNAPSHOT_DELAY: AtomicI64 = AtomicI64::new(0);
pub static SNAPSHOT_FAIL: BoolSetting = BoolSetting::new(false, any_bool);
pub static SNAPSHOT_DISABLE_LOAD: BoolSetting = BoolSetting::new(false, any_bool);
/// The leader proposes no expiry entries (keys whose time has come are
/// still deleted when an entry touches them).
pub static EXPIRE_CYCLE_DISABLE: BoolSetting = BoolSetting::new(false, any_bool);
/// Loading a received snapshot fails (before the dataset is touched).
pub static SNAPSHOT_FAIL_LOAD: BoolSetting = BoolSetting::new(false, any_bool);
/// Hidden and unsafe, for testing the test suite: every node, leader or
/// not, serves reads from its own dataset at once (stale reads guaranteed
/// under a partition). Never set it in production.
/// Only the test build (feature `failpoints`, as the Jepsen suite and the
/// crash tests use) accepts `yes`.
pub static UNSAFE_LOCAL_READS: BoolSetting = BoolSetting::new(false, test_build_only);

fn test_build_only(v: bool) -> Result<(), String> {
    if v && !cfg!(feature = "failpoints") {
        return Err(
            "unsafe-local-reads exists only in test builds (cargo feature failpoints): it serves stale reads"
                .into(),
        );
    }
    Ok(())
}

/// Parses `yes`/`no` as Redis does.
fn parse_bool(name: &str, v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "yes" | "true" | "1" => Ok(true),
        "no" | "false" | "0" => Ok(false),
        _ => Err(format!(
            "invalid value '{v}' for {name}: expected yes or no"
        )),
    }
}

fn parse_int(name: &str, v: &str, min: i64, max: i64) -> Result<i64, String> {
    let n: i64 = v
        .parse()
        .map_err(|_| format!("invalid value '{v}' for {name}: expected an integer"))?;
    if n < min || n > max {
        return Err(format!(
            "invalid value '{v}' for {name}: must be between {min} and {max}"
        ));
    }
    Ok(n)
}

/// The bounds of each integer setting, shared by Redis registration and the
/// positional form.
pub fn int_bounds(name: &str) -> Option<(&'static AtomicI64, i64, i64)> {
    const MS: i64 = 24 * 3600 * 1000;
    Some(match name {
        "id" => (&ID, 0, u32::MAX as i64),
        "log-max-file-size" => (&LOG_MAX_FILE_SIZE, 0, i64::MAX),
        "log-max-cache-size" => (&LOG_MAX_CACHE_SIZE, 0, i64::MAX),
        "periodic-interval" => (&PERIODIC_INTERVAL, 1, 60_000),
        "request-timeout" => (&REQUEST_TIMEOUT, 1, MS),
        "election-timeout" => (&ELECTION_TIMEOUT, 1, MS),
        "connection-timeout" => (&CONNECTION_TIMEOUT, 1, MS),
        "join-timeout" => (&JOIN_TIMEOUT, 1, MS),
        "response-timeout" => (&RESPONSE_TIMEOUT, 1, MS),
        "reconnect-interval" => (&RECONNECT_INTERVAL, 1, MS),
        "append-req-max-count" => (&APPEND_REQ_MAX_COUNT, 1, 1_000_000),
        "append-req-max-size" => (&APPEND_REQ_MAX_SIZE, 1, i64::MAX),
        "snapshot-req-max-size" => (&SNAPSHOT_REQ_MAX_SIZE, 1, i64::MAX),
        "snapshot-req-max-count" => (&SNAPSHOT_REQ_MAX_COUNT, 1, 1_000_000),
        "proxy-response-timeout" => (&PROXY_RESPONSE_TIMEOUT, 1, MS),
        "shardgroup-update-interval" => (&SHARDGROUP_UPDATE_INTERVAL, 1, i32::MAX as i64),
        "scan-size" => (&SCAN_SIZE, 1, i64::MAX),
        "log-delay-apply" => (&LOG_DELAY_APPLY, 0, MS),
        "snapshot-delay" => (&SNAPSHOT_DELAY, 0, MS),
        _ => return None,
    })
}

fn bool_setting(name: &str) -> Option<&'static BoolSetting> {
    Some(match name {
        "log-fsync" => &LOG_FSYNC,
        "follower-proxy" => &FOLLOWER_PROXY,
        "quorum-reads" => &QUORUM_READS,
        "tls-enabled" => &TLS_ENABLED,
        "sharding" => &SHARDING,
        "external-sharding" => &EXTERNAL_SHARDING,
        "log-disable-apply" => &LOG_DISABLE_APPLY,
        "snapshot-disable" => &SNAPSHOT_DISABLE,
        "snapshot-fail" => &SNAPSHOT_FAIL,
        "snapshot-disable-load" => &SNAPSHOT_DISABLE_LOAD,
        "expire-cycle-disable" => &EXPIRE_CYCLE_DISABLE,
        "snapshot-fail-load" => &SNAPSHOT_FAIL_LOAD,
        "unsafe-local-reads" => &UNSAFE_LOCAL_READS,
        _ => return None,
    })
}

fn str_setting(name: &str) -> Option<&'static StrSetting> {
    Some(match name {
        "addr" => &ADDR,
        "log-filename" | "raftlog" => &LOG_FILENAME,
        "ignored-commands" => &IGNORED_COMMANDS,
        "cluster-user" => &CLUSTER_USER,
        "cluster-password" => &CLUSTER_PASSWORD,
        "trace" => &TRACE,
        "read-mode" => &READ_MODE,
        "slot-config" => &SLOT_CONFIG,
        "migration-debug" => &MIGRATION_DEBUG,
        _ => return None,
    })
}

/// Sets one setting from its text form (the positional load arguments).
pub fn apply_arg(name: &str, value: &str) -> Result<(), String> {
    let name = name.trim_start_matches("raft.").to_ascii_lowercase();
    if let Some((cell, min, max)) = int_bounds(&name) {
        cell.store(parse_int(&name, value, min, max)?, Ordering::Relaxed);
        return Ok(());
    }
    if let Some(b) = bool_setting(&name) {
        return b.set(parse_bool(&name, value)?);
    }
    if let Some(s) = str_setting(&name) {
        return s.set(value);
    }
    if name == "loglevel" {
        *LOGLEVEL
            .lock()
            .map_err(|_| "loglevel lock poisoned".to_string())? =
            match value.to_ascii_lowercase().as_str() {
                "debug" => LogLevel::debug,
                "verbose" => LogLevel::verbose,
                "notice" => LogLevel::notice,
                "warning" => LogLevel::warning,
                _ => {
                    return Err(format!(
                        "invalid loglevel '{value}': expected debug, verbose, notice or warning"
                    ))
                }
            };
        return Ok(());
    }
    Err(format!("unknown argument '{name}'"))
}

/// Parses the module's load arguments: `name=value` tokens (RedisRaft's
/// form) and `name value` pairs, in any mix.
pub fn apply_args(args: &[String]) -> Result<(), String> {
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if let Some((k, v)) = a.split_once('=') {
            apply_arg(k, v)?;
            i += 1;
        } else {
            let v = args.get(i + 1).ok_or_else(|| {
                format!("argument '{a}' has no value (use name=value or name value)")
            })?;
            apply_arg(a, v)?;
            i += 2;
        }
    }
    Ok(())
}

fn ms(a: &AtomicI64) -> Duration {
    Duration::from_millis(a.load(Ordering::Relaxed).max(0) as u64)
}

pub fn get(a: &AtomicI64) -> i64 {
    a.load(Ordering::Relaxed)
}

/// A typed snapshot of the settings, for threads that read many at once.
#[derive(Clone, Debug)]
pub struct Settings {
    pub id: u64,
    pub addr: String,
    pub log_filename: String,
    pub log_fsync: bool,
    pub periodic_interval: Duration,
    pub request_timeout: Duration,
    pub election_timeout: Duration,
    pub connection_timeout: Duration,
    pub join_timeout: Duration,
    pub response_timeout: Duration,
    pub reconnect_interval: Duration,
    pub proxy_response_timeout: Duration,
    pub follower_proxy: bool,
    pub quorum_reads: bool,
    pub append_req_max_count: usize,
    pub append_req_max_size: u64,
    pub cluster_user: String,
    pub cluster_password: String,
}

impl Settings {
    pub fn current() -> Settings {
        let user = CLUSTER_USER.get();
        Settings {
            id: get(&ID) as u64,
            addr: ADDR.get(),
            log_filename: LOG_FILENAME.get(),
            log_fsync: LOG_FSYNC.get(),
            periodic_interval: ms(&PERIODIC_INTERVAL),
            request_timeout: ms(&REQUEST_TIMEOUT),
            election_timeout: ms(&ELECTION_TIMEOUT),
            connection_timeout: ms(&CONNECTION_TIMEOUT),
            join_timeout: ms(&JOIN_TIMEOUT),
            response_timeout: ms(&RESPONSE_TIMEOUT),
            reconnect_interval: ms(&RECONNECT_INTERVAL),
            proxy_response_timeout: ms(&PROXY_RESPONSE_TIMEOUT),
            follower_proxy: FOLLOWER_PROXY.get(),
            quorum_reads: QUORUM_READS.get(),
            append_req_max_count: get(&APPEND_REQ_MAX_COUNT) as usize,
            append_req_max_size: get(&APPEND_REQ_MAX_SIZE) as u64,
            cluster_user: if user.is_empty() {
                "default".into()
            } else {
                user
            },
            cluster_password: CLUSTER_PASSWORD.get(),
        }
    }

    /// Credentials for node-to-node connections, when a password is set.
    pub fn auth(&self) -> Option<(String, String)> {
        if self.cluster_password.is_empty() {
            None
        } else {
            Some((self.cluster_user.clone(), self.cluster_password.clone()))
        }
    }

    /// Election and heartbeat timeouts expressed in ticks.
    pub fn election_ticks(&self) -> usize {
        ticks(self.election_timeout, self.periodic_interval).max(2)
    }
    pub fn heartbeat_ticks(&self) -> usize {
        ticks(self.request_timeout, self.periodic_interval).max(1)
    }
}

fn ticks(d: Duration, tick: Duration) -> usize {
    let t = tick.as_millis().max(1);
    (d.as_millis().div_ceil(t)) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    // Settings are process-wide statics: one test touches them.
    #[test]
    fn positional_and_pair_forms_set_values_and_bad_values_are_refused() {
        apply_args(&[
            "id=7".into(),
            "addr=127.0.0.1:5001".into(),
            "raftlog=raftlog7.db".into(),
            "election-timeout".into(),
            "1500".into(),
            "quorum-reads=no".into(),
            "loglevel=debug".into(),
        ])
        .unwrap();
        assert_eq!(get(&ID), 7);
        assert_eq!(ADDR.get(), "127.0.0.1:5001");
        assert_eq!(LOG_FILENAME.get(), "raftlog7.db");
        assert_eq!(get(&ELECTION_TIMEOUT), 1500);
        assert!(!QUORUM_READS.get());
        assert_eq!(loglevel(), LogLevel::debug);

        let err = apply_args(&["bogus=1".into()]).unwrap_err();
        assert!(err.contains("unknown argument 'bogus'"), "{err}");
        assert!(apply_args(&["id=abc".into()])
            .unwrap_err()
            .contains("expected an integer"));
        assert!(apply_args(&["id=-1".into()])
            .unwrap_err()
            .contains("between"));
        assert!(apply_args(&["addr=nohost".into()])
            .unwrap_err()
            .contains("host:port"));
        assert!(apply_args(&["addr=h:0".into()])
            .unwrap_err()
            .contains("bad port"));
        assert!(apply_args(&["follower-proxy=maybe".into()])
            .unwrap_err()
            .contains("yes or no"));
        assert!(apply_args(&["trace=node,bogus".into()])
            .unwrap_err()
            .contains("bogus"));
        assert!(apply_args(&["periodic-interval".into()])
            .unwrap_err()
            .contains("no value"));
        // A refused value leaves the old one in place.
        assert_eq!(get(&ID), 7);
        assert_eq!(ADDR.get(), "127.0.0.1:5001");

        // read-mode lease and Raft's timing are checked together.
        apply_args(&["read-mode=lease".into()]).unwrap();
        assert!(check_loaded().is_ok(), "15 election ticks are enough");
        ELECTION_TIMEOUT.store(400, Ordering::Relaxed);
        let err = check_lease_timing(&Settings::current()).unwrap_err();
        assert!(
            err.contains("at least 5 periodic-intervals (500 ms"),
            "{err}"
        );
        assert!(err.contains("vote again 300 ms after"), "{err}");
        assert!(err.contains("lease lasts 320 ms"), "{err}");
        // After load, a switch to lease is refused whatever the timing
        // (lease to lease changes nothing); readindex is live.
        ELECTION_TIMEOUT.store(1500, Ordering::Relaxed);
        READ_MODE.set("lease").unwrap();
        READ_MODE.set("readindex").unwrap();
        assert_eq!(READ_MODE.set("lease").unwrap_err(), LEASE_AT_LOAD);

        assert!(set_at_load("election-timeout")
            .unwrap()
            .contains("set at load"));
        assert_eq!(set_at_load("follower-proxy"), None);
        assert!(apply_args(&["sharding=yes".into()])
            .unwrap_err()
            .contains("no sharding"));
        assert!(apply_args(&["migration-debug=fail-import".into()])
            .unwrap_err()
            .contains("no slot migration"));
        apply_args(&["sharding=no".into(), "scan-size=500".into()]).unwrap();
        assert!(unused_setting_warning("scan-size", "500").is_some());
        assert_eq!(unused_setting_warning("scan-size", "1000"), None);
        assert_eq!(unused_setting_warning("follower-proxy", "yes"), None);
        ELECTION_TIMEOUT.store(1500, Ordering::Relaxed);

        let s = Settings::current();
        assert_eq!(s.election_ticks(), 15);
        assert_eq!(s.heartbeat_ticks(), 2);
        assert_eq!(s.auth(), None);
    }
}
