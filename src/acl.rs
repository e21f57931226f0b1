//! Who may run what. A client's rights through RedisRaft are exactly those
//! it has on plain Redis, and RAFT itself grants nothing.
//!
//! The command filter turns a client's `SET k v` into `RAFT SET k v`, so
//! Redis itself checks only the right to run RAFT. Hence:
//! - every user may run RAFT: `+raft` is granted to every user after start
//!   and after ACL LOAD, and appended to every ACL SETUSER;
//! - RAFT checks the original command (command, keys by their key specs,
//!   channels) before anything is proposed, queued or forwarded, and refuses
//!   with Redis's own -NOPERM text and an ACL LOG entry.
//!
//! Why not flag RAFT `no-auth`, so that no grant is needed: that flag also
//! skips Redis's authentication check, and Redis 7.0's module API cannot
//! tell a client that never authenticated from one authenticated as
//! `default`: unauthenticated clients could then write.
//!
//! The node-to-node commands (RAFT.APPENDENTRIES, ...) are for the cluster
//! user only (`raft.cluster-user`), whatever rights other users have.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use redis_module::{raw, RedisError};

use crate::config;
use crate::entry::Rights;
use crate::ffi::{self, AclCheck, AclDenial};
use crate::logging;

type Ctx = *mut raw::RedisModuleCtx;

/// The right every user is given so that the filter's RAFT prefix passes
/// Redis's own check; RAFT then checks the command it carries.
const GRANT: &[u8] = b"+raft";

/// Checks the calling client's rights for `argv`, the command a client
/// sent (not RAFT), as Redis would before running it. The module's own
/// calls run as root and pass.
pub fn check(ctx: Ctx, argv: &[Vec<u8>]) -> Result<(), RedisError> {
    let Some(user) = ffi::current_user(ctx) else {
        return Ok(());
    };
    match ffi::acl_check(&user, argv) {
        AclCheck::Allowed | AclCheck::UnknownCommand => Ok(()),
        AclCheck::NoUser => Err(RedisError::Str(
            "NOPERM this connection's user no longer exists",
        )),
        AclCheck::Denied => {
            let (why, object) = explain(ctx, &user, argv);
            ffi::acl_log(ctx, &user, &object, why);
            Err(RedisError::String(noperm_text(
                ffi::server_version(),
                why,
                &user,
                &object,
            )))
        }
    }
}

/// Which right is missing, and its object (the command's full name, the
/// key or the channel), from ACL DRYRUN. Only runs for a refused command.
fn explain(ctx: Ctx, user: &[u8], argv: &[Vec<u8>]) -> (AclDenial, Vec<u8>) {
    let mut dry = vec![b"ACL".to_vec(), b"DRYRUN".to_vec(), user.to_vec()];
    dry.extend(argv.iter().cloned());
    let text = ffi::call(ctx, &dry)
        .ok()
        .and_then(|r| r.as_bytes())
        .unwrap_or_default();
    parse_dryrun(&text).unwrap_or_else(|| (AclDenial::Command, argv[0].to_ascii_lowercase()))
}

/// Parses ACL DRYRUN's refusal: "... to run the 'set' command", "... to
/// access the 'k' key", "... the 'ch' channel" (7.0 and 7.2+ alike).
fn parse_dryrun(text: &[u8]) -> Option<(AclDenial, Vec<u8>)> {
    let s = String::from_utf8_lossy(text);
    let start = s.find('\'')? + 1;
    let end = start + s[start..].rfind('\'')?;
    let object = s[start..end].as_bytes().to_vec();
    let why = if s.ends_with("command") {
        AclDenial::Command
    } else if s.ends_with("key") {
        AclDenial::Key
    } else if s.ends_with("channel") {
        AclDenial::Channel
    } else {
        return None;
    };
    Some((why, object))
}

/// Redis's own -NOPERM text for a refused command: it changed in 7.2
/// (Valkey 8 keeps the 7.2 texts).
fn noperm_text(version: u32, why: AclDenial, user: &[u8], object: &[u8]) -> String {
    let user = String::from_utf8_lossy(user);
    let object = String::from_utf8_lossy(object);
    if version >= 0x0007_0200 {
        match why {
            AclDenial::Command => {
                format!("NOPERM User {user} has no permissions to run the '{object}' command")
            }
            AclDenial::Key => "NOPERM No permissions to access a key".into(),
            AclDenial::Channel => "NOPERM No permissions to access a channel".into(),
        }
    } else {
        match why {
            AclDenial::Command => {
                format!("NOPERM this user has no permissions to run the '{object}' command")
            }
            AclDenial::Key => {
                "NOPERM this user has no permissions to access one of the keys used as arguments"
                    .into()
            }
            AclDenial::Channel => {
                "NOPERM this user has no permissions to access one of the channels used as arguments"
                    .into()
            }
        }
    }
}

/// Redis's error for a script's command its user may not run
/// (`command`: the command itself, else one of its keys).
pub fn script_denied_text(user: &[u8], argv: &[Vec<u8>], why: AclDenial) -> String {
    let name = crate::intercept::full_name(argv);
    if ffi::server_version() >= 0x0007_0200 {
        let why = match why {
            AclDenial::Command => format!(
                "User {} has no permissions to run the '{name}' command",
                String::from_utf8_lossy(user)
            ),
            AclDenial::Key => "No permissions to access a key".into(),
            AclDenial::Channel => "No permissions to access a channel".into(),
        };
        format!("ERR ACL failure in script: {why}")
    } else {
        let why = match why {
            AclDenial::Command => "can't run this command or subcommand",
            AclDenial::Key => {
                "can't access at least one of the keys mentioned in the command arguments"
            }
            AclDenial::Channel => "can't publish to the channel mentioned in the command",
        };
        format!("ERR The user executing the script {why}")
    }
}

/// At EXEC, a queued command its user may no longer run: Redis's reply in
/// its place (the same on 7.0 and 7.2), with an ACL LOG entry; None if it
/// may still run.
pub fn exec_recheck(ctx: Ctx, argv: &[Vec<u8>]) -> Option<String> {
    let user = ffi::current_user(ctx)?;
    let why = match ffi::acl_check(&user, argv) {
        AclCheck::Allowed | AclCheck::UnknownCommand => return None,
        AclCheck::NoUser => return Some("NOPERM this connection's user no longer exists".into()),
        AclCheck::Denied => {
            let (why, object) = explain(ctx, &user, argv);
            ffi::acl_log(ctx, &user, &object, why);
            why
        }
    };
    let reason = match why {
        AclDenial::Command => "no permission to execute the command or subcommand",
        AclDenial::Key => "no permission to touch the specified keys",
        AclDenial::Channel => "no permission to access one of the channels used as arguments",
    };
    Some(format!(
        "NOPERM ACLs rules changed between the moment the transaction was accumulated and the EXEC call. This command is no longer allowed for the following reason: {reason}"
    ))
}

/// The cluster user's name (`default` when the setting is empty).
pub fn cluster_user() -> Vec<u8> {
    let u = config::CLUSTER_USER.get();
    if u.is_empty() {
        b"default".to_vec()
    } else {
        u.into_bytes()
    }
}

/// Node-to-node commands: only a connection authenticated as the cluster
/// user may send them; a forged message from anyone else changes nothing.
pub fn require_cluster_user(ctx: Ctx) -> Result<(), RedisError> {
    match ffi::current_user(ctx) {
        Some(u) if u != cluster_user() => Err(RedisError::Str(
            "NOPERM node-to-node commands are for the cluster user only (raft.cluster-user)",
        )),
        _ => Ok(()),
    }
}

/// Bumped for every ACL command a client runs: cached rules are then
/// read again.
static ACL_GENERATION: AtomicU64 = AtomicU64::new(0);

/// user -> (the ACL generation it was read at, its rights).
type RulesCache = HashMap<Vec<u8>, (u64, Option<Rights>)>;

thread_local! {
    /// Users' rules read from ACL LIST (main thread).
    static RULES: RefCell<RulesCache> = RefCell::new(HashMap::new());
}

/// The rights a script of the calling client must run with: None when the
/// user may run every command on every key and channel (nothing to check),
/// or for the module's own calls.
pub fn script_rights(ctx: Ctx) -> Option<Rights> {
    let user = ffi::current_user(ctx)?;
    let generation = ACL_GENERATION.load(Ordering::Acquire);
    if let Some(hit) = RULES.with(|r| {
        r.borrow()
            .get(&user)
            .filter(|(g, _)| *g == generation)
            .map(|(_, rights)| rights.clone())
    }) {
        return hit;
    }
    let rights = read_rights(ctx, &user);
    RULES.with(|r| {
        let mut r = r.borrow_mut();
        if r.len() > 1024 {
            r.clear();
        }
        r.insert(user, (generation, rights.clone()));
    });
    rights
}

/// A user's rules from ACL LIST: `user <name> on #<hash> ~app:* +get`.
fn read_rights(ctx: Ctx, user: &[u8]) -> Option<Rights> {
    let lines = ffi::call(ctx, &[b"ACL".to_vec(), b"LIST".to_vec()])
        .ok()?
        .as_strings()?;
    let mut prefix = b"user ".to_vec();
    prefix.extend_from_slice(user);
    prefix.push(b' ');
    let Some(line) = lines.iter().find(|l| l.starts_with(&prefix)) else {
        // Not found (a name with spaces, ...): allow nothing beyond what
        // the script's own command was checked for.
        return Some(Rights {
            user: user.to_vec(),
            rules: vec![b"resetkeys".to_vec(), b"-@all".to_vec()],
        });
    };
    let rules = rules_of(&line[prefix.len()..]);
    let everything = |r: &[u8]| {
        matches!(
            r,
            b"~*" | b"&*" | b"+@all" | b"allkeys" | b"allchannels" | b"allcommands"
        )
    };
    let unlimited = ["~*", "&*", "+@all"]
        .iter()
        .all(|w| rules.iter().any(|r| r == w.as_bytes()))
        && rules.iter().all(|r| everything(r));
    (!unlimited).then(|| Rights {
        user: user.to_vec(),
        rules,
    })
}

/// The rules of an ACL LIST line after the name: words, a parenthesized
/// selector as one rule; passwords and on/off left out (they grant nothing
/// to a script).
fn rules_of(line: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut depth = 0usize;
    for &b in line {
        match b {
            b'(' => depth += 1,
            b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if b == b' ' && depth == 0 {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(b);
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out.retain(|r| {
        !matches!(
            r.as_slice(),
            b"on"
                | b"off"
                | b"nopass"
                | b"resetpass"
                | b"sanitize-payload"
                | b"skip-sanitize-payload"
        ) && !matches!(r.first(), Some(b'#' | b'>' | b'<' | b'!'))
    });
    out
}

/// Called by the command filter for every ACL command a client sends:
/// a user created or changed by ACL SETUSER keeps the right to run RAFT;
/// after ACL LOAD, every user is given it again.
pub fn on_acl_command(fctx: *mut raw::RedisModuleCommandFilterCtx, argc: usize) {
    ACL_GENERATION.fetch_add(1, Ordering::AcqRel);
    if argc < 2 {
        return;
    }
    let sub = ffi::filter_arg(fctx, 1);
    if sub.eq_ignore_ascii_case(b"setuser") && argc >= 3 {
        ffi::filter_insert(fctx, argc, GRANT);
    } else if sub.eq_ignore_ascii_case(b"load") {
        // Runs once the ACL LOAD has been executed.
        ffi::run_on_main_thread(grant_later, std::ptr::null_mut());
    }
}

extern "C" fn grant_later(_: *mut c_void) {
    crate::guard::catch(
        "granting +raft",
        || grant_to_all_users(crate::apply::call_ctx()),
        |_| (),
    )
}

/// Gives `+raft` to every user that cannot run RAFT yet (users from
/// redis.conf and the ACL file, which Redis loads after the modules).
pub fn grant_to_all_users(ctx: Ctx) {
    ACL_GENERATION.fetch_add(1, Ordering::AcqRel);
    let users = match ffi::call(ctx, &[b"ACL".to_vec(), b"USERS".to_vec()]) {
        Ok(r) => r.as_strings().unwrap_or_default(),
        Err(e) => {
            logging::warning(&format!("ACL USERS failed: {e}"));
            return;
        }
    };
    for user in users {
        if ffi::acl_check(&user, &[b"RAFT".to_vec(), b"PING".to_vec()]) == AclCheck::Allowed {
            continue;
        }
        let argv = [
            b"ACL".to_vec(),
            b"SETUSER".to_vec(),
            user.clone(),
            GRANT.to_vec(),
        ];
        if let Err(e) = ffi::call(ctx, &argv) {
            logging::warning(&format!(
                "cannot give user '{}' the right to run RAFT: {e}",
                String::from_utf8_lossy(&user)
            ));
        }
    }
}

/// Whether the raft.* commands got ACL categories (INFO `acl_categories`).
pub static CATEGORIES_SET: AtomicBool = AtomicBool::new(false);

/// At load, where the server has module ACL categories (Redis 7.2+): the
/// admin commands in @admin and @dangerous, the node-to-node ones also in
/// a category of their own, @raftnode, where the server can add one (7.4+),
/// so `-@admin`, `-@dangerous` or `-@raftnode` take them from `+@all`
/// users. (On 7.0 module commands belong to no category: README, Security.)
pub fn set_categories(ctx: Ctx) {
    const ADMIN: &[&str] = &[
        "raft.cluster",
        "raft.node",
        "raft.debug",
        "raft.timeout_now",
        "raft.transfer_leader",
    ];
    const NODE: &[&str] = &[
        "raft.appendentries",
        "raft.requestvote",
        "raft.loadsnapshot",
        "raft.nodeshutdown",
    ];
    let mut outcome = Ok(());
    for name in ADMIN {
        outcome = outcome.and(ffi::set_acl_categories(ctx, name, "admin dangerous", None));
    }
    for name in NODE {
        outcome = outcome.and(ffi::set_acl_categories(
            ctx,
            name,
            "admin dangerous",
            Some("raftnode"),
        ));
    }
    CATEGORIES_SET.store(outcome.is_ok(), Ordering::Relaxed);
    match outcome {
        Ok(()) => logging::notice("raft.* admin and node-to-node commands are in @admin and @dangerous (node-to-node also in @raftnode where the server allows new categories)"),
        Err(why) => logging::notice(&format!("raft.* commands have no ACL category: {why}")),
    }
}

/// After start: say so in the log when any client can speak the node
/// protocol (no cluster password).
pub fn warn_if_open() {
    if config::CLUSTER_PASSWORD.get().is_empty() {
        logging::warning(
            "the cluster is open: raft.cluster-password is not set, so any client that can \
             connect as the cluster user may send node-to-node commands; set requirepass or \
             ACL users and raft.cluster-user/raft.cluster-password (README, Security)",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dryrun_refusals_name_what_is_missing() {
        assert_eq!(
            parse_dryrun(b"This user has no permissions to run the 'flushall' command"),
            Some((AclDenial::Command, b"flushall".to_vec()))
        );
        assert_eq!(
            parse_dryrun(b"User w has no permissions to run the 'config|set' command"),
            Some((AclDenial::Command, b"config|set".to_vec()))
        );
        assert_eq!(
            parse_dryrun(b"This user has no permissions to access the 'it's' key"),
            Some((AclDenial::Key, b"it's".to_vec()))
        );
        assert_eq!(
            parse_dryrun(b"This user has no permissions to access the 'news' channel"),
            Some((AclDenial::Channel, b"news".to_vec()))
        );
        assert_eq!(parse_dryrun(b"OK"), None);
    }

    #[test]
    fn rules_keep_selectors_whole_and_leave_out_passwords() {
        let r =
            rules_of(b"on #30c9 ~app:* resetchannels (~x:* %R~y:* +get) -@all +get +raft nopass");
        let want: Vec<&[u8]> = vec![
            b"~app:*",
            b"resetchannels",
            b"(~x:* %R~y:* +get)",
            b"-@all",
            b"+get",
            b"+raft",
        ];
        assert_eq!(r, want);
    }

    #[test]
    fn noperm_texts_follow_the_server_version() {
        assert_eq!(
            noperm_text(0x0007000f, AclDenial::Command, b"w", b"flushall"),
            "NOPERM this user has no permissions to run the 'flushall' command"
        );
        assert_eq!(
            noperm_text(0x00070002, AclDenial::Key, b"w", b"k"),
            "NOPERM this user has no permissions to access one of the keys used as arguments"
        );
        assert_eq!(
            noperm_text(0x00070206, AclDenial::Command, b"w", b"flushall"),
            "NOPERM User w has no permissions to run the 'flushall' command"
        );
        assert_eq!(
            noperm_text(0x00080108, AclDenial::Key, b"w", b"k"),
            "NOPERM No permissions to access a key"
        );
    }
}
