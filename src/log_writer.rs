//! Where the process's log lines go: standard error, written by a thread
//! of its own, in batches. A line is formatted where it is logged and
//! appended to a shared buffer under a short lock — no system call, no
//! thread woken for it; the writer thread takes the whole buffer every
//! [`INTERVAL`] (sooner when it passes [`FLUSH_AT`]) and writes it with one
//! call.
//!
//! Why not `tracing_appender::non_blocking`, which this replaced: its
//! worker blocks on a channel per line, so each line costs the logging
//! thread a futex wake and the writer a context switch. On a runtime token
//! fetch (two lines: the audit line and the response line) that was 16 %
//! of the broker's CPU in `perf` (BENCHMARKS.md, issue 8, second round).
//!
//! Nothing is dropped. When [`LIMIT`] bytes wait unwritten — a slow or
//! stuck reader of standard error — the threads that log wait for room, as
//! they would wait for a write; audit lines (`gitbroker::audit`) included.
//! A line is written whole, never interleaved with another. What is still
//! buffered at exit is written when the guard drops. A process killed
//! outright loses at most the last [`INTERVAL`] of lines (the channel it
//! replaced could hold 16,384 unwritten lines).

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// How long lines gather before the writer takes them.
pub const INTERVAL: Duration = Duration::from_millis(10);
/// A buffer this large is taken at once.
pub const FLUSH_AT: usize = 256 * 1024;
/// Bytes waiting unwritten before the threads that log wait for room.
pub const LIMIT: usize = 8 * 1024 * 1024;

#[derive(Default)]
struct State {
    buf: Vec<u8>,
    /// The writer sleeps until a line comes (nothing to gather).
    idle: bool,
    /// The writer was told the buffer is full enough.
    hurried: bool,
    /// Loggers waiting for room.
    blocked: usize,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    /// The writer waits here.
    work: Condvar,
    /// Loggers wait here for room.
    room: Condvar,
    limit: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The writer loggers hold (`MakeWriter` for tracing-subscriber: each
/// event is one `write_all` of one whole line).
#[derive(Clone)]
pub struct Batched {
    shared: Arc<Shared>,
}

impl Write for Batched {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let shared = &*self.shared;
        let mut st = shared.lock();
        while !st.buf.is_empty() && st.buf.len() + line.len() > shared.limit && !st.closed {
            st.blocked += 1;
            st = shared.room.wait(st).unwrap_or_else(|p| p.into_inner());
            st.blocked -= 1;
        }
        st.buf.extend_from_slice(line);
        if st.idle {
            st.idle = false;
            shared.work.notify_one();
        } else if st.buf.len() >= FLUSH_AT && !st.hurried {
            st.hurried = true;
            shared.work.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Batched {
    type Writer = Batched;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Kept for the process's life; dropping it writes what is buffered and
/// stops the writer.
pub struct Guard {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.work.notify_one();
        self.shared.room.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A lossless, batching writer into `out`, holding at most `limit` bytes
/// unwritten. Keep the guard for the process's life.
pub fn lossless<W: Write + Send + 'static>(out: W, limit: usize) -> (Batched, Guard) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        work: Condvar::new(),
        room: Condvar::new(),
        limit,
    });
    let worker = shared.clone();
    let thread = std::thread::Builder::new()
        .name("gitbroker-log".into())
        .spawn(move || write_batches(&worker, out))
        .ok();
    (
        Batched {
            shared: shared.clone(),
        },
        Guard { shared, thread },
    )
}

fn write_batches<W: Write>(shared: &Shared, mut out: W) {
    let mut spare = Vec::new();
    let mut st = shared.lock();
    loop {
        while st.buf.is_empty() && !st.closed {
            st.idle = true;
            st = shared.work.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        if st.buf.is_empty() {
            return; // closed, all written
        }
        // let lines gather, unless there is plenty already or it is the end
        if st.buf.len() < FLUSH_AT && !st.closed {
            st = shared
                .work
                .wait_timeout(st, INTERVAL)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        std::mem::swap(&mut st.buf, &mut spare);
        st.hurried = false;
        if st.blocked > 0 {
            shared.room.notify_all();
        }
        drop(st);
        // a failing standard error cannot be reported anywhere better
        let _ = out.write_all(&spare).and_then(|()| out.flush());
        spare.clear();
        // do not keep a burst's capacity for ever
        spare.shrink_to(FLUSH_AT);
        st = shared.lock();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A writer that reports its first write, then holds every write until
    /// the gate opens: a reader of standard error that stopped reading.
    struct Stuck {
        out: Arc<Mutex<Vec<u8>>>,
        gate: Arc<(Mutex<bool>, Condvar)>,
        first: Option<mpsc::Sender<()>>,
    }

    impl Write for Stuck {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if let Some(first) = self.first.take() {
                let _ = first.send(());
            }
            let (open, cv) = &*self.gate;
            let mut open = open.lock().unwrap_or_else(|p| p.into_inner());
            while !*open {
                open = cv.wait(open).unwrap_or_else(|p| p.into_inner());
            }
            self.out
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_full_buffer_makes_loggers_wait_and_loses_no_line() {
        let out = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let (first_tx, first_rx) = mpsc::channel();
        // room for about three lines
        let (writer, guard) = lossless(
            Stuck {
                out: out.clone(),
                gate: gate.clone(),
                first: Some(first_tx),
            },
            24,
        );
        let (done_tx, done_rx) = mpsc::channel();
        let logger = std::thread::spawn(move || {
            let mut w = writer;
            for i in 0..100 {
                w.write_all(format!("line {i:02}\n").as_bytes()).unwrap();
            }
            done_tx.send(()).unwrap();
        });
        // the writer is stuck on its first batch; the logger fills the
        // buffer and waits on the rest
        first_rx.recv().unwrap();
        assert!(
            done_rx.recv_timeout(Duration::from_millis(200)).is_err(),
            "the logger went on past a full buffer"
        );
        assert!(!logger.is_finished());
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        logger.join().unwrap();
        drop(guard);
        let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        let want: String = (0..100).map(|i| format!("line {i:02}\n")).collect();
        assert_eq!(text, want);
    }

    #[test]
    fn lines_reach_the_output_when_the_guard_drops() {
        let out = Shared::default();
        let (mut w, guard) = lossless(out.clone(), LIMIT);
        for i in 0..1000 {
            w.write_all(format!("{i}\n").as_bytes()).unwrap();
        }
        drop(guard);
        let lines = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(lines.lines().count(), 1000);
    }

    #[test]
    fn a_line_is_written_within_the_interval_without_anything_else() {
        let out = Shared::default();
        let (mut w, _guard) = lossless(out.clone(), LIMIT);
        // twice: from an idle writer, and again after it went idle
        for round in 0..2 {
            let start = std::time::Instant::now();
            w.write_all(format!("round {round}\n").as_bytes()).unwrap();
            while !String::from_utf8_lossy(&out.0.lock().unwrap())
                .contains(&format!("round {round}"))
            {
                assert!(start.elapsed() < Duration::from_secs(5), "line not written");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    /// Eight threads logging at once: every line arrives whole, each
    /// thread's in its order.
    #[test]
    fn concurrent_loggers_never_interleave_or_lose_lines() {
        let out = Shared::default();
        let (w, guard) = lossless(out.clone(), 64 * 1024);
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let mut w = w.clone();
                std::thread::spawn(move || {
                    for i in 0..5000 {
                        w.write_all(
                            format!(
                                "{{\"t\":{t},\"i\":{i},\"pad\":\"{}\"}}\n",
                                "x".repeat(i % 97)
                            )
                            .as_bytes(),
                        )
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let mut next = [0usize; 8];
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("a whole line");
            let (t, i) = (
                v["t"].as_u64().unwrap() as usize,
                v["i"].as_u64().unwrap() as usize,
            );
            assert_eq!(i, next[t], "thread {t} out of order");
            next[t] += 1;
        }
        assert_eq!(next, [5000; 8]);
    }
}
