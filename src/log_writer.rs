//! Where the process's log lines go: standard error, written by a thread
//! of its own. A line is still formatted where it is logged, but the
//! write (a system call per line before, on the request's thread) happens
//! off the request, batched: the writer thread flushes whenever its queue
//! is empty.
//!
//! Nothing is dropped. When the queue is full — a slow or stuck reader of
//! standard error — the threads that log wait for room, as they waited for
//! the write before; audit lines (`gitbroker::audit`) included. Lines still
//! queued at exit are written when the guard drops.

use std::io::Write;
use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};

/// Lines queued before the threads that log wait for the writer.
pub const QUEUE_LINES: usize = 16 * 1024;

/// A lossless, non-blocking writer into `out`. Keep the guard for the
/// process's life.
pub fn lossless<W: Write + Send + 'static>(
    out: W,
    queue_lines: usize,
) -> (NonBlocking, WorkerGuard) {
    NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(queue_lines)
        .thread_name("gitbroker-log")
        .finish(std::io::BufWriter::new(out))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::sync::{Arc, Condvar, Mutex, mpsc};

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

    #[test]
    fn a_full_queue_makes_loggers_wait_and_loses_no_line() {
        let out = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let (first_tx, first_rx) = mpsc::channel();
        // unbuffered, so that the first line reaches the stuck writer at once
        let (writer, guard) = NonBlockingBuilder::default()
            .lossy(false)
            .buffered_lines_limit(2)
            .finish(Stuck {
                out: out.clone(),
                gate: gate.clone(),
                first: Some(first_tx),
            });
        let dropped = writer.error_counter();
        let logger = std::thread::spawn(move || {
            let mut w = writer;
            for i in 0..100 {
                w.write_all(format!("line {i}\n").as_bytes()).unwrap();
            }
        });
        // the writer is stuck on line 0; two more fit in the queue, the
        // logger waits on the rest
        first_rx.recv().unwrap();
        assert!(!logger.is_finished());
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        logger.join().unwrap();
        drop(guard);
        let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        let want: String = (0..100).map(|i| format!("line {i}\n")).collect();
        assert_eq!(text, want);
        assert_eq!(dropped.dropped_lines(), 0);
    }

    #[test]
    fn lines_reach_the_output_when_the_guard_drops() {
        let out = Arc::new(Mutex::new(Vec::new()));
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
        let (mut w, guard) = lossless(Shared(out.clone()), QUEUE_LINES);
        for i in 0..1000 {
            w.write_all(format!("{i}\n").as_bytes()).unwrap();
        }
        drop(guard);
        let lines = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        assert_eq!(lines.lines().count(), 1000);
    }
}
