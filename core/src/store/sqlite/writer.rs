//! The SQLite store's one writer: a thread that owns the write connection and commits
//! the write requests of every caller in batches (group commit).
//!
//! A commit is where the time of a write goes (with `synchronous = FULL`, an fsync of
//! the write-ahead log), so requests that arrive while one batch commits are committed
//! together by the next: one `BEGIN IMMEDIATE ... COMMIT` for the whole batch, each
//! request inside a `SAVEPOINT` of its own. A request that fails is rolled back to its
//! savepoint and answered with its own error; the others in the batch are unaffected.
//! A caller is answered only once the transaction holding its write has committed (or
//! with an error if it did not), so nothing acknowledged can be lost.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::{lock, sql_error, Fail, BACKEND};
use crate::error::{Error, Result};

/// The most requests committed in one transaction (bounds how long one batch holds the
/// write lock and the connection).
const MAX_BATCH: usize = 512;

/// The handle on the writer thread. Dropping it lets the thread finish the requests
/// already sent, then waits for it (so the write connection is closed on return).
pub(super) struct Writer {
    jobs: Option<mpsc::Sender<Box<dyn Job>>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the writer thread on `conn` (shared with readers only for a database in
    /// memory, which has no second connection).
    pub(super) fn spawn(conn: Arc<Mutex<Connection>>) -> Result<Writer> {
        let (jobs, rx) = mpsc::channel::<Box<dyn Job>>();
        let thread = std::thread::Builder::new()
            .name("wharf-sqlite-writer".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = VecDeque::from([first]);
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(job) => batch.push_back(job),
                            Err(_) => break,
                        }
                    }
                    commit_batch(&lock(&conn), batch);
                }
            })
            .map_err(|e| {
                Error::internal(format!("cannot start the sqlite writer thread: {e}"))
                    .with_backend(BACKEND)
            })?;
        Ok(Writer {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// Queues `f` at once (requests commit in the order they are queued) and returns
    /// the future of its answer, which comes once the transaction holding `f` has
    /// committed: `f`'s value, `f`'s own error (its changes rolled back, nobody else's),
    /// or the error that kept the transaction from committing.
    pub(super) fn write<T, F>(&self, f: F) -> impl Future<Output = Result<T>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, Fail> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let queued = match &self.jobs {
            Some(jobs) => jobs.send(Box::new(Request { f, reply })).is_ok(),
            None => false,
        };
        async move {
            let stopped = || {
                Error::internal("the sqlite store's writer thread has stopped")
                    .with_backend(BACKEND)
            };
            if !queued {
                return Err(stopped());
            }
            answer.await.map_err(|_| stopped())?
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            // Never join from the writer thread itself (a request that held the last
            // handle of the store): it would wait for itself.
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

/// One caller's write request, type-erased so requests of any result type share the
/// writer's queue.
trait Job: Send {
    /// Runs the request inside the current transaction; the returned [`Done`] answers
    /// the caller once the transaction's fate is known.
    fn run(self: Box<Self>, conn: &Connection) -> Done;
    /// Answers the caller with `err` without running the request.
    fn refuse(self: Box<Self>, err: Error);
}

struct Request<T, F> {
    f: F,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> Job for Request<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, Fail> + Send + 'static,
{
    fn run(self: Box<Self>, conn: &Connection) -> Done {
        let Request { f, reply } = *self;
        let out = match catch_unwind(AssertUnwindSafe(|| f(conn))) {
            Ok(out) => out.map_err(Error::from),
            Err(_) => Err(Error::internal("a sqlite store write panicked").with_backend(BACKEND)),
        };
        Done {
            ok: out.is_ok(),
            answer: Box::new(move |committed| {
                let _ = reply.send(match (out, committed) {
                    (Ok(value), Ok(())) => Ok(value),
                    (Ok(_), Err(e)) | (Err(e), _) => Err(e),
                });
            }),
        }
    }

    fn refuse(self: Box<Self>, err: Error) {
        let _ = self.reply.send(Err(err));
    }
}

/// A request that has run: whether it succeeded (its savepoint is kept) and how to
/// answer its caller with the transaction's outcome.
struct Done {
    ok: bool,
    answer: Box<dyn FnOnce(Result<()>) + Send>,
}

/// Commits `batch` in as few transactions as possible: one, unless a request's failure
/// made SQLite roll the whole transaction back (a full disk, an I/O error) or a
/// savepoint could not be taken or released. Then the requests already run are answered
/// with that error (none of their writes was kept) and the rest go on in a new
/// transaction. Every round takes at least one request off the batch, so this ends.
fn commit_batch(conn: &Connection, mut batch: VecDeque<Box<dyn Job>>) {
    while !batch.is_empty() {
        if let Err(e) = exec(conn, "BEGIN IMMEDIATE") {
            for job in batch {
                job.refuse(echo(&e));
            }
            return;
        }
        let mut done: Vec<Done> = Vec::with_capacity(batch.len());
        let mut lost: Option<Error> = None;
        while let Some(job) = batch.pop_front() {
            if let Err(e) = exec(conn, "SAVEPOINT request") {
                job.refuse(echo(&e));
                lost = Some(e);
                break;
            }
            let d = job.run(conn);
            let ok = d.ok;
            done.push(d);
            if conn.is_autocommit() {
                lost = Some(
                    Error::unavailable(
                        "SQLite rolled back the transaction this write was committed in \
                         (another write in the same batch failed); nothing of it was kept",
                    )
                    .with_backend(BACKEND),
                );
                break;
            }
            let end = if ok {
                exec(conn, "RELEASE request")
            } else {
                exec(conn, "ROLLBACK TO request").and_then(|()| exec(conn, "RELEASE request"))
            };
            if let Err(e) = end {
                lost = Some(e);
                break;
            }
        }
        let outcome = match lost {
            None => exec(conn, "COMMIT"),
            Some(e) => Err(e),
        };
        if outcome.is_err() && !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        for d in done {
            (d.answer)(match &outcome {
                Ok(()) => Ok(()),
                Err(e) => Err(echo(e)),
            });
        }
    }
}

/// Runs one statement of the batch's own (`SAVEPOINT`, `RELEASE`, `COMMIT`...), cached.
fn exec(conn: &Connection, sql: &str) -> Result<()> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute([]))
        .map(drop)
        .map_err(sql_error)
}

/// The same failure again, for another caller of the batch (errors are not `Clone`:
/// the source stays with the first).
fn echo(e: &Error) -> Error {
    let mut copy = Error::new(e.kind(), e.message()).with_retryable(e.is_retryable());
    if let Some(backend) = e.backend_name() {
        copy = copy.with_backend(backend);
    }
    copy
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn table(path: &std::path::Path) -> Connection {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (k INTEGER PRIMARY KEY)")
            .unwrap();
        conn
    }

    fn keys(path: &std::path::Path) -> Vec<i64> {
        let conn = Connection::open(path).unwrap();
        let mut stmt = conn.prepare("SELECT k FROM t ORDER BY k").unwrap();
        let rows = stmt.query_map([], |r| r.get(0)).unwrap();
        rows.map(|r| r.unwrap()).collect()
    }

    /// Requests queued while the writer is busy commit together, each in a savepoint:
    /// one that fails after writing, or panics after writing, is rolled back and
    /// answered with its error; the others of the batch all commit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_request_is_rolled_back_alone_in_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let writer = Writer::spawn(Arc::new(Mutex::new(table(&path)))).unwrap();

        // Hold the writer inside a first request until the others are queued.
        let (started, wait_started) = std::sync::mpsc::channel();
        let (go, wait_go) = std::sync::mpsc::channel::<()>();
        let first = writer.write(move |c| {
            started.send(()).unwrap();
            wait_go.recv().unwrap();
            c.execute("INSERT INTO t VALUES (0)", [])?;
            Ok(0)
        });
        wait_started.recv().unwrap();
        let reader_path = path.clone();
        let rest: Vec<_> = (1..=20i64)
            .map(|k| {
                let reader_path = reader_path.clone();
                writer.write(move |c| {
                    c.execute("INSERT INTO t VALUES (?1)", [k])?;
                    match k {
                        10 => Err(Error::conflict("request 10 fails after writing").into()),
                        15 => panic!("request 15 panics after writing"),
                        // The last sees its batch's earlier writes; another connection
                        // does not, as they are not committed yet: one transaction.
                        20 => {
                            let seen: i64 =
                                c.query_row("SELECT count(*) FROM t WHERE k >= 1", [], |r| {
                                    r.get(0)
                                })?;
                            let other = Connection::open(&reader_path).unwrap();
                            let outside: i64 = other.query_row(
                                "SELECT count(*) FROM t WHERE k >= 1",
                                [],
                                |r| r.get(0),
                            )?;
                            Ok(seen * 100 + outside)
                        }
                        _ => Ok(k),
                    }
                })
            })
            .collect();
        go.send(()).unwrap();
        assert_eq!(first.await.unwrap(), 0);
        let answers = futures::future::join_all(rest).await;
        for (k, answer) in (1..=20i64).zip(answers) {
            match k {
                10 => assert_eq!(answer.unwrap_err().kind(), ErrorKind::Conflict),
                15 => assert_eq!(answer.unwrap_err().kind(), ErrorKind::Internal),
                20 => assert_eq!(answer.unwrap(), 18 * 100, "one transaction for the batch"),
                _ => assert_eq!(answer.unwrap(), k),
            }
        }
        drop(writer);
        let expected: Vec<i64> = (0..=20).filter(|k| *k != 10 && *k != 15).collect();
        assert_eq!(keys(&path), expected);
    }

    /// A write that makes SQLite roll back the whole transaction (here: it ends the
    /// transaction itself) does not leave the requests before it believing they were
    /// kept: they are answered with an error, and the requests after it commit in a new
    /// transaction.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lost_transaction_is_reported_to_everyone_in_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let writer = Writer::spawn(Arc::new(Mutex::new(table(&path)))).unwrap();
        let (started, wait_started) = std::sync::mpsc::channel();
        let (go, wait_go) = std::sync::mpsc::channel::<()>();
        let first = writer.write(move |_| {
            started.send(()).unwrap();
            wait_go.recv().unwrap();
            Ok(())
        });
        wait_started.recv().unwrap();
        let before = writer.write(|c| Ok(c.execute("INSERT INTO t VALUES (1)", [])?));
        let wrecker = writer.write(|c| {
            c.execute_batch("ROLLBACK")?;
            Err::<(), Fail>(Error::internal("the transaction is gone").into())
        });
        let after = writer.write(|c| Ok(c.execute("INSERT INTO t VALUES (3)", [])?));
        go.send(()).unwrap();
        first.await.unwrap();
        assert_eq!(before.await.unwrap_err().kind(), ErrorKind::Unavailable);
        assert_eq!(wrecker.await.unwrap_err().kind(), ErrorKind::Internal);
        assert_eq!(after.await.unwrap(), 1);
        drop(writer);
        assert_eq!(keys(&path), vec![3]);
    }
}
