//! follower-proxy: a follower forwards a client command to the leader as
//! `RAFT <command...>` and relays the leader's reply.
//!
//! One thread keeps one connection to the current leader and pipelines
//! whatever requests are waiting. A request that may have reached the
//! leader but got no answer is reported as unknown (-TIMEOUT), never as
//! "not applied".

use std::sync::atomic::Ordering;
use std::sync::OnceLock;

use crossbeam_channel::{Receiver, Sender};
use redis_module::raw::RedisModuleCtx;

use crate::config::Settings;
use crate::error::Error;
use crate::ffi::{self, RedisClient};
use crate::info::PROXY_REQS;
use crate::node::{Client, Reply};
use crate::resp::{Connection, RespValue};

struct ProxyRequest {
    leader: String,
    argv: Vec<Vec<u8>>,
    client: RedisClient,
}

static TX: OnceLock<Sender<ProxyRequest>> = OnceLock::new();

pub fn forward(leader: String, argv: Vec<Vec<u8>>, client: RedisClient) {
    PROXY_REQS.fetch_add(1, Ordering::Relaxed);
    let tx = TX.get_or_init(|| {
        let (tx, rx) = crossbeam_channel::unbounded();
        // On the main thread: a failed spawn must not panic (it would abort
        // redis-server); with no thread the sends below fail, and clients
        // hear there is no leader to reach.
        if let Err(e) = std::thread::Builder::new()
            .name("raft-proxy".into())
            .spawn(move || run(rx))
        {
            crate::logging::warning(&format!("cannot start the proxy thread: {e}"));
        }
        tx
    });
    if let Err(e) = tx.send(ProxyRequest {
        leader,
        argv,
        client,
    }) {
        e.0.client.reply(Reply::Error(Error::NoLeader));
    }
}

fn run(rx: Receiver<ProxyRequest>) {
    let mut conn: Option<(String, Connection)> = None;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter().take(1023));
        // Requests for one leader at a time, in arrival order.
        while !batch.is_empty() {
            let leader = batch[0].leader.clone();
            let split = batch
                .iter()
                .position(|r| r.leader != leader)
                .unwrap_or(batch.len());
            let rest = batch.split_off(split);
            send_batch(&mut conn, &leader, batch);
            batch = rest;
        }
    }
}

fn send_batch(conn: &mut Option<(String, Connection)>, leader: &str, batch: Vec<ProxyRequest>) {
    let s = Settings::current();
    if conn.as_ref().is_none_or(|(a, _)| a != leader) {
        let auth = s.auth();
        let auth_ref = auth.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
        match crate::tls::connect(
            leader,
            s.connection_timeout,
            s.proxy_response_timeout,
            auth_ref,
        ) {
            Ok(c) => *conn = Some((leader.to_string(), c)),
            Err(e) => {
                *conn = None;
                // Nothing was sent: the commands were certainly not applied.
                for r in batch {
                    r.client.reply(Reply::Error(Error::TryAgain(format!(
                        "cannot reach the leader: {e}"
                    ))));
                }
                return;
            }
        }
    }
    let Some((_, c)) = conn.as_mut() else { return };
    c.set_io_timeout(s.proxy_response_timeout);
    let cmds: Vec<Vec<Vec<u8>>> = batch
        .iter()
        .map(|r| {
            let mut v = Vec::with_capacity(r.argv.len() + 1);
            v.push(b"RAFT".to_vec());
            v.extend(r.argv.iter().cloned());
            v
        })
        .collect();
    if let Err(e) = c.send_many(&cmds) {
        *conn = None;
        for r in batch {
            r.client.reply(Reply::Error(Error::Unknown(format!(
                "proxy connection failed: {e}"
            ))));
        }
        return;
    }
    let mut broken = None;
    for r in batch {
        if let Some(e) = &broken {
            r.client.reply(Reply::Error(Error::Unknown(format!(
                "no reply from the leader: {e}"
            ))));
            continue;
        }
        match c.recv() {
            Ok(v) => r.client.reply_with(move |ctx| reply_value(ctx, &v)),
            Err(e) => {
                r.client.reply(Reply::Error(Error::Unknown(format!(
                    "no reply from the leader: {e}"
                ))));
                broken = Some(e.to_string());
            }
        }
    }
    if broken.is_some() {
        *conn = None;
    }
}

/// Writes a RESP value as a module reply.
fn reply_value(ctx: *mut RedisModuleCtx, v: &RespValue) {
    match v {
        RespValue::Simple(s) => ffi::reply_simple(ctx, s),
        RespValue::Error(e) => ffi::reply_error(ctx, e),
        RespValue::Integer(n) => ffi::reply_integer(ctx, *n),
        RespValue::Bulk(Some(b)) => ffi::reply_bulk(ctx, b),
        RespValue::Bulk(None) | RespValue::Array(None) => ffi::reply_null(ctx),
        RespValue::Array(Some(items)) => {
            ffi::reply_array(ctx, items.len());
            for i in items {
                reply_value(ctx, i);
            }
        }
    }
}
