//! Every log line a test binary emits, for tests that prove no secret
//! reaches the logs. The subscriber is process-wide: one test per binary
//! installs it, and the other tests' lines land in it too.

use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogCapture {
    type Writer = LogCapture;
    fn make_writer(&'a self) -> LogCapture {
        self.clone()
    }
}

impl LogCapture {
    /// Installs the process's subscriber (JSON lines at `filter`); panics
    /// if one is installed already, which would leave this capture empty
    /// and a "no secret in the logs" check vacuous.
    pub fn install(filter: &str) -> Self {
        let capture = Self::default();
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(capture.clone())
            .with_ansi(false)
            .json()
            .try_init()
            .unwrap_or_else(|e| panic!("a log subscriber was installed before this one: {e}"));
        capture
    }

    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}
