//! Where access log lines wait for the writer thread: one text buffer per
//! thread that logs, which the writer takes whole. A line costs the request
//! path a lock of its own thread's buffer (contended only when the writer takes
//! it, once per round) and the writing of the line straight into it: no
//! allocation, no channel, and no wake-up while the writer is busy.

use std::cell::RefCell;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::{Thread, ThreadId};
use std::time::Duration;

/// How long the writer lets lines gather while requests keep coming.
const ROUND: Duration = Duration::from_millis(20);

/// What one thread's buffer may hold before its lines are dropped (and
/// counted): a writer stuck on a slow disk never makes memory grow unbounded.
const CAP: usize = 4 << 20;

/// Tells the logs of one process apart in the threads' own slots.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's buffer in the log it last wrote to.
    static MINE: RefCell<Option<(u64, Arc<Buffer>)>> = const { RefCell::new(None) };
}

struct Lines {
    text: Vec<u8>,
    /// Set by the writer when it found this buffer empty; the next line clears
    /// it and wakes the writer, which may be parked for want of lines.
    writer_may_sleep: bool,
}

struct Buffer {
    owner: ThreadId,
    lines: Mutex<Lines>,
}

pub(super) struct Batches {
    id: u64,
    buffers: Mutex<Vec<Arc<Buffer>>>,
    closed: AtomicBool,
    writer: OnceLock<Thread>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while a buffer was held leaves text that is still text.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Batches {
    /// Starts the writer thread, which writes to `out` until `close`.
    pub(super) fn start(out: Box<dyn Write + Send>) -> std::io::Result<Arc<Batches>> {
        let batches = Arc::new(Batches {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            buffers: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
            writer: OnceLock::new(),
        });
        let theirs = batches.clone();
        let handle = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || theirs.write_until_closed(out))?;
        let _ = batches.writer.set(handle.thread().clone());
        Ok(batches)
    }

    /// Lets `line` write one line into this thread's buffer. False when the
    /// buffer is full and the line was not written.
    pub(super) fn append(&self, line: impl FnOnce(&mut Vec<u8>)) -> bool {
        let wake = MINE.with(|mine| {
            let mut mine = mine.borrow_mut();
            if mine.as_ref().map(|(id, _)| *id) != Some(self.id) {
                *mine = Some((self.id, self.register()));
            }
            let (_, buffer) = mine.as_ref()?;
            let mut lines = lock(&buffer.lines);
            if lines.text.len() >= CAP {
                return None;
            }
            line(&mut lines.text);
            Some(std::mem::take(&mut lines.writer_may_sleep))
        });
        match wake {
            None => false,
            Some(wake) => {
                if wake && let Some(w) = self.writer.get() {
                    w.unpark();
                }
                true
            }
        }
    }

    /// This thread's buffer, found or added (a thread that went back and forth
    /// between two logs finds the one it had).
    fn register(&self) -> Arc<Buffer> {
        let me = std::thread::current().id();
        let mut buffers = lock(&self.buffers);
        if let Some(b) = buffers.iter().find(|b| b.owner == me) {
            return b.clone();
        }
        let b = Arc::new(Buffer {
            owner: me,
            lines: Mutex::new(Lines {
                text: Vec::new(),
                writer_may_sleep: true,
            }),
        });
        buffers.push(b.clone());
        b
    }

    /// Stops the writer once it has written every line it holds.
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        if let Some(w) = self.writer.get() {
            w.unpark();
        }
    }

    /// Rounds: take every buffer that holds lines and write it. After a round
    /// that wrote, wait `ROUND` for more; after one that found nothing, park
    /// until a line arrives in a buffer marked `writer_may_sleep`.
    fn write_until_closed(&self, mut out: Box<dyn Write + Send>) {
        let mut spare = Vec::new();
        // The buffers of this round, taken out of the list's lock (a write may
        // be slow); kept from round to round, so a round allocates nothing.
        let mut buffers: Vec<Arc<Buffer>> = Vec::new();
        loop {
            let closing = self.closed.load(Ordering::Acquire);
            buffers.extend(lock(&self.buffers).iter().cloned());
            let mut wrote = false;
            for b in &buffers {
                let mut lines = lock(&b.lines);
                if lines.text.is_empty() {
                    lines.writer_may_sleep = true;
                    continue;
                }
                // The emptied spare goes back, so neither side allocates again.
                std::mem::swap(&mut lines.text, &mut spare);
                drop(lines);
                let _ = out.write_all(&spare);
                spare.clear();
                wrote = true;
            }
            // Their references go: `forget_dead_threads` counts them.
            buffers.clear();
            if wrote {
                let _ = out.flush();
            }
            if closing {
                return;
            }
            self.forget_dead_threads();
            if wrote {
                std::thread::sleep(ROUND);
            } else {
                std::thread::park();
            }
        }
    }

    /// Drops the buffers of threads that have ended, once they are empty: no
    /// one else holds them, so no line can arrive in them any more.
    fn forget_dead_threads(&self) {
        lock(&self.buffers).retain(|b| Arc::strong_count(b) > 1 || !lock(&b.lines).text.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// A writer's target that the test can read.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            lock(&self.0).extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn text_within(out: &Shared, lines: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = String::from_utf8(lock(&out.0).clone()).unwrap();
            if text.lines().count() >= lines || Instant::now() > deadline {
                return text;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn lines_of_several_threads_are_written_after_a_quiet_spell_too() {
        let out = Shared::default();
        let batches = Batches::start(Box::new(out.clone())).unwrap();
        assert!(batches.append(|s| s.extend_from_slice(b"first\n")));
        assert_eq!(text_within(&out, 1), "first\n");
        // The writer went back to sleep: the next line must wake it again.
        std::thread::sleep(Duration::from_millis(100));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let b = batches.clone();
                std::thread::spawn(move || {
                    for i in 0..100 {
                        assert!(
                            b.append(|s| s.extend_from_slice(format!("t{t} {i}\n").as_bytes()))
                        );
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let text = text_within(&out, 401);
        assert_eq!(text.lines().count(), 401);
        for t in 0..4 {
            let mine: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with(&format!("t{t} ")))
                .collect();
            let expected: Vec<String> = (0..100).map(|i| format!("t{t} {i}")).collect();
            assert_eq!(mine, expected, "one thread's lines keep their order");
        }
        // The ended threads' buffers are let go once written.
        let deadline = Instant::now() + Duration::from_secs(20);
        while lock(&batches.buffers).len() > 1 && Instant::now() < deadline {
            assert!(batches.append(|s| s.extend_from_slice(b"more\n")));
            std::thread::sleep(Duration::from_millis(30));
        }
        assert_eq!(lock(&batches.buffers).len(), 1);
    }

    #[test]
    fn closing_writes_what_is_left_and_stops_the_writer() {
        let out = Shared::default();
        let batches = Batches::start(Box::new(out.clone())).unwrap();
        for i in 0..1000 {
            assert!(batches.append(|s| s.extend_from_slice(format!("{i}\n").as_bytes())));
        }
        batches.close();
        let text = text_within(&out, 1000);
        assert_eq!(text.lines().count(), 1000);
        // The writer lets go of its share once done.
        let deadline = Instant::now() + Duration::from_secs(20);
        while Arc::strong_count(&batches) > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(Arc::strong_count(&batches), 1);
    }

    #[test]
    fn a_full_buffer_refuses_lines_instead_of_growing() {
        // A writer that never writes: stuck on a slow disk.
        struct Stuck;
        impl Write for Stuck {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                std::thread::sleep(Duration::from_secs(3600));
                Ok(0)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let batches = Batches::start(Box::new(Stuck)).unwrap();
        let line = "x".repeat(1023) + "\n";
        let mut refused = 0;
        for _ in 0..(3 * CAP / line.len()) {
            if !batches.append(|s| s.extend_from_slice(line.as_bytes())) {
                refused += 1;
            }
        }
        assert!(refused > 0, "some lines must be refused");
    }
}
