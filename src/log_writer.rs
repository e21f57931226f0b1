//! The log-writer thread: makes staged log writes durable off the Raft
//! thread, so the Raft thread keeps stepping acknowledgements and proposals
//! while the disk syncs.
//!
//! Group commit: every job queued while one fsync runs is written next, and
//! the whole group shares one fsync. Then, in order: the staged entries are
//! marked durable, the node hears the highest Ready number persisted, and
//! only then do the jobs' messages (acknowledgements, votes) go out, since
//! they promise what was just made durable.
//!
//! A failed write stops the writer for good: nothing it held is announced or
//! sent, and the node is told to stop.

use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use raft::eraftpb::Message;

use crate::node::{LogWriter, WriteJob};
use crate::storage::LogStore;

/// Most jobs in one group (one fsync); more wait for the next.
const MAX_GROUP: usize = 1024;

enum Cmd {
    Job(Box<WriteJob>),
    /// Answered once every job before it is durable (or the writer failed).
    Barrier(Sender<Result<(), String>>),
    Stop,
}

/// What the writer calls back into.
pub struct WriterHooks {
    /// The Ready with this number (and all before it) is durable.
    pub persisted: Box<dyn Fn(u64) + Send>,
    /// Send these messages and flush.
    pub send: Box<dyn Fn(Vec<Message>) + Send>,
    /// The log cannot be written: the node must stop.
    pub failed: Box<dyn Fn(String) + Send>,
}

/// The Raft thread's handle to the writer thread.
pub struct ThreadLogWriter {
    tx: Sender<Cmd>,
    thread: Option<JoinHandle<()>>,
}

impl ThreadLogWriter {
    pub fn start(store: LogStore, hooks: WriterHooks) -> std::io::Result<ThreadLogWriter> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let thread = std::thread::Builder::new()
            .name("raft-log".into())
            .spawn(move || run(store, rx, hooks))?;
        Ok(ThreadLogWriter {
            tx,
            thread: Some(thread),
        })
    }
}

impl LogWriter for ThreadLogWriter {
    fn submit(&mut self, job: WriteJob) {
        // A stopped writer has already reported why.
        let _ = self.tx.send(Cmd::Job(Box::new(job)));
    }

    fn wait_idle(&mut self) -> Result<(), String> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.tx
            .send(Cmd::Barrier(tx))
            .map_err(|_| "the log writer has stopped".to_string())?;
        rx.recv()
            .unwrap_or_else(|_| Err("the log writer has stopped".into()))
    }
}

impl Drop for ThreadLogWriter {
    fn drop(&mut self) {
        let _ = self.tx.send(Cmd::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(store: LogStore, rx: Receiver<Cmd>, hooks: WriterHooks) {
    let mut failed: Option<String> = None;
    let mut group: Vec<WriteJob> = Vec::new();
    let mut barriers: Vec<Sender<Result<(), String>>> = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut stop = false;
        for cmd in std::iter::once(first).chain(rx.try_iter().take(MAX_GROUP)) {
            match cmd {
                Cmd::Job(j) => group.push(*j),
                Cmd::Barrier(b) => barriers.push(b),
                Cmd::Stop => stop = true,
            }
        }
        if failed.is_none() && !group.is_empty() {
            // raft-engine panics when an fsync fails: that too must stop the
            // node, not just this thread.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                write_group(&store, &group).map_err(|e| e.to_string())
            }))
            .unwrap_or_else(|_| Err("the log engine panicked".into()));
            if let Err(e) = result {
                let msg = format!("Raft log write failed: {e}");
                (hooks.failed)(msg.clone());
                failed = Some(msg);
            }
        }
        if failed.is_none() {
            if let Some(last) = group.last() {
                (hooks.persisted)(last.number);
            }
            let msgs: Vec<Message> = group.drain(..).flat_map(|j| j.messages).collect();
            if !msgs.is_empty() {
                (hooks.send)(msgs);
            }
        }
        group.clear();
        for b in barriers.drain(..) {
            let _ = b.send(failed.clone().map_or(Ok(()), Err));
        }
        if stop {
            break;
        }
    }
}

/// Writes the group's records; the last of them is fsynced if any of them
/// needs it, which makes all of them durable (raft-engine appends them to one
/// file and fsyncs a file before it moves to the next).
fn write_group(store: &LogStore, group: &[WriteJob]) -> Result<(), crate::storage::StorageError> {
    let need_sync = group
        .iter()
        .any(|j| !j.write.is_empty() && !j.write.no_sync);
    let Some(last) = group.iter().rposition(|j| !j.write.is_empty()) else {
        return Ok(());
    };
    crate::failpoint::hit("log-writer-staged");
    for (i, j) in group.iter().enumerate() {
        if !j.write.is_empty() {
            store.persist(&j.write, i == last && need_sync)?;
        }
    }
    store.mark_durable(group[last].write.seq);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::LogWrite;
    use parking_lot::Mutex;
    use raft::eraftpb::Entry;
    use raft::{GetEntriesContext, Storage};
    use std::sync::Arc;

    fn ent(index: u64) -> Entry {
        Entry {
            index,
            term: 1,
            data: vec![index as u8; 10].into(),
            ..Default::default()
        }
    }

    fn msg(index: u64) -> Message {
        Message {
            index,
            ..Default::default()
        }
    }

    #[derive(Default)]
    struct Seen {
        persisted: Vec<u64>,
        sent: Vec<u64>,
        /// Log's fsync count when each message batch was sent.
        fsyncs_at_send: Vec<u64>,
    }

    fn hooks(store: &LogStore, seen: &Arc<Mutex<Seen>>) -> WriterHooks {
        let (s1, s2) = (seen.clone(), seen.clone());
        let store = store.clone();
        WriterHooks {
            persisted: Box::new(move |n| s1.lock().persisted.push(n)),
            send: Box::new(move |m| {
                let mut s = s2.lock();
                // Each message (its index is its job's number) goes only
                // once its own job was reported durable.
                let persisted = s.persisted.last().copied().unwrap_or(0);
                assert!(
                    m.iter().all(|m| m.index <= persisted),
                    "sent before its fsync"
                );
                s.sent.extend(m.iter().map(|m| m.index));
                s.fsyncs_at_send.push(store.fsync_stats().count);
            }),
            failed: Box::new(|e| panic!("{e}")),
        }
    }

    #[test]
    fn jobs_become_durable_in_order_and_messages_wait_for_the_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(dir.path(), true).unwrap();
        store.set_cache_limit(0);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let mut w = ThreadLogWriter::start(store.clone(), hooks(&store, &seen)).unwrap();
        for i in 1..=20u64 {
            let mut write = LogWrite {
                entries: vec![ent(i)],
                ..Default::default()
            };
            store.stage(&mut write).unwrap();
            // Staged entries are readable before they are durable.
            let got = store
                .entries(i, i + 1, None, GetEntriesContext::empty(false))
                .unwrap();
            assert_eq!(got[0].index, i);
            w.submit(WriteJob {
                number: i,
                write,
                messages: vec![msg(i)],
            });
        }
        w.wait_idle().unwrap();
        let s = seen.lock();
        assert_eq!(s.persisted.last(), Some(&20));
        assert!(s.persisted.windows(2).all(|p| p[0] < p[1]));
        assert_eq!(s.sent, (1..=20).collect::<Vec<_>>());
        assert!(s.fsyncs_at_send.iter().all(|&n| n >= 1));
        let fsyncs = store.fsync_stats().count;
        assert!((1..=20).contains(&fsyncs), "{fsyncs} fsyncs");
        drop(s);
        drop(w);
        // Durable now: with no cache at all they come from the files, also
        // after a reopen.
        assert_eq!(store.cache_stats().0, 0);
        drop(store);
        let store = LogStore::open(dir.path(), true).unwrap();
        let all = store
            .entries(1, 21, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(all.len(), 20);
    }

    #[test]
    fn commit_only_writes_skip_the_fsync_and_message_only_jobs_keep_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(dir.path(), true).unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let mut w = ThreadLogWriter::start(store.clone(), hooks(&store, &seen)).unwrap();
        let mut hs_only = LogWrite {
            hard_state: Some(raft::eraftpb::HardState {
                term: 1,
                commit: 0,
                ..Default::default()
            }),
            no_sync: true,
            ..Default::default()
        };
        store.stage(&mut hs_only).unwrap();
        w.submit(WriteJob {
            number: 1,
            write: hs_only,
            messages: vec![msg(1)],
        });
        w.submit(WriteJob {
            number: 2,
            write: LogWrite::default(),
            messages: vec![msg(2)],
        });
        w.wait_idle().unwrap();
        assert_eq!(store.fsync_stats().count, 0);
        assert_eq!(seen.lock().sent, vec![1, 2]);
    }
}
