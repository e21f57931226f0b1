//! redisraft-rs: a Redis module that turns several `redis-server` processes
//! into one strongly consistent Redis, replicated with Raft (raft-rs).
//!
//! Layout: `config` (settings), `storage` (the durable log, raft-engine),
//! `node` (Raft logic, no Redis calls), `driver` (the Raft thread),
//! `transport` + `resp` + `tls` (node-to-node connections), `apply` (committed
//! entries to the dataset, on the main thread), `machine` (what an entry
//! means to Redis: time, expiry, scripts, random commands), `intercept` (the command
//! filter and command classes), `commands` (RAFT.* commands), `join`,
//! `proxy`, `info`, `error`, `ffi` (raw module API calls).
//!
//! This file holds the `redis_module!` declaration and load only.

pub mod acl;
pub mod apply;
pub mod blocking;
pub mod commands;
pub mod config;
pub mod driver;
pub mod entry;
pub mod error;
pub mod failpoint;
pub mod ffi;
pub mod guard;
pub mod info;
pub mod intercept;
pub mod join;
pub mod log_writer;
pub mod logging;
pub mod machine;
pub mod netif;
pub mod node;
pub mod peer_check;
pub mod proxy;
pub mod resp;
pub mod snapshot;
pub mod storage;
pub mod tls;
pub mod transport;
pub mod txn;

use machine::script_cache::CACHE_TYPE;
use redis_module::configuration::ConfigurationFlags as F;
use redis_module::{redis_module, Context, InfoContext, RedisResult, RedisString, Status};
use snapshot::META_TYPE;

fn init(ctx: &Context, args: &[RedisString]) -> Status {
    guard::catch(
        "module load",
        || init_inner(ctx, args),
        |why| {
            ctx.log_warning(&format!("RedisRaft: refusing to load: {why}"));
            Status::Err
        },
    )
}

fn init_inner(ctx: &Context, args: &[RedisString]) -> Status {
    let args: Vec<String> = args.iter().map(|a| a.to_string_lossy()).collect();
    if let Err(e) = config::apply_args(&args).and_then(|()| config::check_loaded()) {
        ctx.log_warning(&format!("RedisRaft: refusing to load: {e}"));
        return Status::Err;
    }
    commands::log_loaded();
    config::warn_unused_settings();
    failpoint::arm_from_env();
    if let Err(e) = commands::check_redis_settings(ctx).and_then(|()| tls::init(ctx)) {
        ctx.log_warning(&format!("RedisRaft: refusing to load: {e}"));
        return Status::Err;
    }
    apply::init(ctx.ctx);
    if !machine::expiry::init(ctx.ctx) {
        ctx.log_warning("RedisRaft: refusing to load: cannot subscribe to keyspace events");
        return Status::Err;
    }
    if !machine::watch::init(ctx.ctx) {
        ctx.log_warning(
            "RedisRaft: refusing to load: cannot subscribe to keyspace and flush events",
        );
        return Status::Err;
    }
    if !blocking::init(ctx.ctx) {
        ctx.log_warning("RedisRaft: refusing to load: cannot subscribe to keyspace events");
        return Status::Err;
    }
    if !ffi::on_client_disconnect(ctx.ctx, txn::forget) {
        ctx.log_warning("RedisRaft: refusing to load: cannot subscribe to client events");
        return Status::Err;
    }
    snapshot::init(&commands::redis_config(ctx, "dbfilename"));
    if let Err(e) = intercept::build_table(ctx) {
        ctx.log_warning(&format!("RedisRaft: refusing to load: {e}"));
        return Status::Err;
    }
    // Once the server runs, rebuild the table to see commands of modules
    // loaded after this one.
    extern "C" fn rebuild(_: *mut std::ffi::c_void) {
        guard::catch(
            "the command table rebuild",
            || {
                let ctx = Context::new(apply::call_ctx());
                if let Err(e) = intercept::build_table(&ctx) {
                    logging::warning(&format!("command table rebuild failed: {e}"));
                }
                machine::expiry::stop_redis_expiry(apply::call_ctx());
                // Users from redis.conf and the ACL file exist only now.
                acl::grant_to_all_users(apply::call_ctx());
                acl::warn_if_open();
            },
            |_| (),
        )
    }
    ffi::run_on_main_thread(rebuild, std::ptr::null_mut());
    acl::set_categories(ctx.ctx);
    if !ffi::register_filter(ctx.ctx, intercept::filter) {
        ctx.log_warning("RedisRaft: refusing to load: cannot register the command filter");
        return Status::Err;
    }
    if let Err(e) = commands::start_existing(ctx) {
        ctx.log_warning(&format!("RedisRaft: refusing to load: {e}"));
        return Status::Err;
    }
    Status::Ok
}

fn raft_info(ctx: &InfoContext, for_crash_report: bool) {
    guard::catch("INFO", || info::info_handler(ctx, for_crash_report), |_| ())
}

fn deinit(_ctx: &Context) -> Status {
    guard::catch(
        "module unload",
        || {
            driver::clear_node();
            Status::Ok
        },
        |_| Status::Err,
    )
}

/// Each command handler behind [`guard::catch`]: a panic answers an error
/// and fail-stops the node instead of aborting redis-server.
macro_rules! guarded_commands {
    ($($name:ident => $handler:path, $what:expr;)*) => {
        $(
            fn $name(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
                guard::catch($what, || $handler(ctx, args), |why| {
                    Err(redis_module::RedisError::String(format!(
                        "ERR {why}; this node stopped"
                    )))
                })
            }
        )*
    };
}

guarded_commands! {
    cmd_raft => commands::raft, "RAFT";
    cmd_script_call => commands::script_call, "a script's command";
    cmd_cluster => commands::cluster, "RAFT.CLUSTER";
    cmd_node => commands::node, "RAFT.NODE";
    cmd_info => commands::info, "RAFT.INFO";
    cmd_transfer_leader => commands::transfer_leader, "RAFT.TRANSFER_LEADER";
    cmd_timeout_now => commands::timeout_now, "RAFT.TIMEOUT_NOW";
    cmd_debug => commands::debug, "RAFT.DEBUG";
    cmd_peer_messages => commands::peer_messages, "RAFT.APPENDENTRIES";
    cmd_node_shutdown => commands::node_shutdown, "RAFT.NODESHUTDOWN";
    cmd_load_snapshot => commands::load_snapshot, "RAFT.LOADSNAPSHOT";
    cmd_error_call => commands::error_call, "RAFT._ERR";
}

redis_module! {
    name: "raft",
    version: 1,
    // The system allocator: the Raft thread allocates outside Redis, and
    // unit and integration tests link this crate without a Redis.
    allocator: (std::alloc::System, std::alloc::System),
    // Aux data only: the snapshot's index, term and membership, saved
    // inside the RDB with the dataset they describe.
    data_types: [META_TYPE, CACHE_TYPE],
    init: init,
    deinit: deinit,
    info: raft_info,
    // No raft.* command runs from a script ("deny-script"); inside a
    // transaction each refuses itself (the module keeps MULTI state).
    // RAFT carries every client command: its rights are checked on the
    // command it carries (acl.rs).
    commands: [
        ["raft", cmd_raft, "deny-script", 0, 0, 0, ""],
        ["raft.cluster", cmd_cluster, "admin deny-script", 0, 0, 0, ""],
        ["raft.node", cmd_node, "admin deny-script", 0, 0, 0, ""],
        ["raft.info", cmd_info, "deny-script", 0, 0, 0, ""],
        ["raft.transfer_leader", cmd_transfer_leader, "admin deny-script", 0, 0, 0, ""],
        ["raft.timeout_now", cmd_timeout_now, "admin deny-script", 0, 0, 0, ""],
        ["raft.debug", cmd_debug, "admin deny-script", 0, 0, 0, ""],
        // Node-to-node: for the cluster user only (acl.rs).
        ["raft.appendentries", cmd_peer_messages, "deny-script", 0, 0, 0, ""],
        ["raft.requestvote", cmd_peer_messages, "deny-script", 0, 0, 0, ""],
        ["raft.nodeshutdown", cmd_node_shutdown, "deny-script", 0, 0, 0, ""],
        ["raft.loadsnapshot", cmd_load_snapshot, "deny-script", 0, 0, 0, ""],
        // Internal: a command of a script an entry runs (machine::script).
        ["raft._scriptw", cmd_script_call, "write", 0, 0, 0, ""],
        ["raft._scriptr", cmd_script_call, "readonly", 0, 0, 0, ""],
        // Internal: a MULTI block's command refused at EXEC (commands::ERROR_CALL).
        ["raft._err", cmd_error_call, "fast", 0, 0, 0, ""],
    ],
    configurations: [
        i64: [
            ["id", &config::ID, 0, 0, u32::MAX as i64, F::IMMUTABLE, None],
            ["log-max-file-size", &config::LOG_MAX_FILE_SIZE, 128_000_000, 0, i64::MAX, F::MEMORY, None],
            ["log-max-cache-size", &config::LOG_MAX_CACHE_SIZE, 64_000_000, 0, i64::MAX, F::MEMORY, None],
            ["periodic-interval", &config::PERIODIC_INTERVAL, 100, 1, 60_000, F::IMMUTABLE, None],
            ["request-timeout", &config::REQUEST_TIMEOUT, 200, 1, 86_400_000, F::IMMUTABLE, None],
            ["election-timeout", &config::ELECTION_TIMEOUT, 1000, 1, 86_400_000, F::IMMUTABLE, None],
            ["connection-timeout", &config::CONNECTION_TIMEOUT, 3000, 1, 86_400_000, F::DEFAULT, None],
            ["join-timeout", &config::JOIN_TIMEOUT, 120_000, 1, 86_400_000, F::DEFAULT, None],
            ["response-timeout", &config::RESPONSE_TIMEOUT, 1000, 1, 86_400_000, F::DEFAULT, None],
            ["reconnect-interval", &config::RECONNECT_INTERVAL, 100, 1, 86_400_000, F::DEFAULT, None],
            ["append-req-max-count", &config::APPEND_REQ_MAX_COUNT, 2, 1, 1_000_000, F::DEFAULT, None],
            ["append-req-max-size", &config::APPEND_REQ_MAX_SIZE, 2_097_152, 1, i64::MAX, F::MEMORY, None],
            ["snapshot-req-max-size", &config::SNAPSHOT_REQ_MAX_SIZE, 65_536, 1, i64::MAX, F::MEMORY, None],
            ["snapshot-req-max-count", &config::SNAPSHOT_REQ_MAX_COUNT, 32, 1, 1_000_000, F::DEFAULT, None],
            ["proxy-response-timeout", &config::PROXY_RESPONSE_TIMEOUT, 10_000, 1, 86_400_000, F::DEFAULT, None],
            // RedisRaft's sharding settings: accepted, unused (config.rs).
            ["shardgroup-update-interval", &config::SHARDGROUP_UPDATE_INTERVAL, 5000, 1, i32::MAX as i64, F::DEFAULT, None],
            ["scan-size", &config::SCAN_SIZE, 1000, 1, i64::MAX, F::DEFAULT, None],
            ["log-delay-apply", &config::LOG_DELAY_APPLY, 0, 0, 86_400_000, F::HIDDEN, None],
            ["snapshot-delay", &config::SNAPSHOT_DELAY, 0, 0, 86_400_000, F::HIDDEN, None],
        ],
        string: [
            ["addr", &config::ADDR, "", F::IMMUTABLE, None],
            ["log-filename", &config::LOG_FILENAME, "redisraft.db", F::IMMUTABLE, None],
            ["ignored-commands", &config::IGNORED_COMMANDS, "", F::DEFAULT, None],
            ["cluster-user", &config::CLUSTER_USER, "default", F::DEFAULT, None],
            ["cluster-password", &config::CLUSTER_PASSWORD, "", F::SENSITIVE, None],
            ["trace", &config::TRACE, "off", F::DEFAULT, None],
            ["read-mode", &config::READ_MODE, "readindex", F::DEFAULT, None],
            ["slot-config", &config::SLOT_CONFIG, "0:16383", F::DEFAULT, None],
            ["migration-debug", &config::MIGRATION_DEBUG, "none", F::HIDDEN, None],
        ],
        bool: [
            ["log-fsync", &config::LOG_FSYNC, true, F::DEFAULT, None],
            ["follower-proxy", &config::FOLLOWER_PROXY, false, F::DEFAULT, None],
            ["quorum-reads", &config::QUORUM_READS, true, F::DEFAULT, None],
            ["tls-enabled", &config::TLS_ENABLED, false, F::IMMUTABLE, None],
            ["sharding", &config::SHARDING, false, F::DEFAULT, None],
            ["external-sharding", &config::EXTERNAL_SHARDING, false, F::DEFAULT, None],
            ["log-disable-apply", &config::LOG_DISABLE_APPLY, false, F::HIDDEN, None],
            ["snapshot-disable", &config::SNAPSHOT_DISABLE, false, F::HIDDEN, None],
            ["snapshot-fail", &config::SNAPSHOT_FAIL, false, F::HIDDEN, None],
            ["snapshot-disable-load", &config::SNAPSHOT_DISABLE_LOAD, false, F::HIDDEN, None],
            ["expire-cycle-disable", &config::EXPIRE_CYCLE_DISABLE, false, F::HIDDEN, None],
            ["snapshot-fail-load", &config::SNAPSHOT_FAIL_LOAD, false, F::HIDDEN, None],
            ["unsafe-local-reads", &config::UNSAFE_LOCAL_READS, false, F::HIDDEN, None],
        ],
        enum: [
            ["loglevel", &config::LOGLEVEL, config::LogLevel::notice, F::DEFAULT, None],
        ],
        module_args_as_configuration: false,
    ]
}
