//! Per-core runtimes. With more than one worker, each worker thread runs its own
//! current-thread runtime and every listener has one socket per worker (bound
//! with SO_REUSEPORT, so the kernel spreads new connections over them), accepted
//! on by that worker only: a connection, and every task it spawns, lives its
//! whole life on the thread that accepted it. No work stealing, no wake-ups sent
//! to another thread on the request path.

use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

/// Where listeners accept: on the runtime that starts them (no worker threads),
/// or one socket per worker thread.
#[derive(Clone, Default)]
pub(crate) struct Cores {
    handles: Arc<[Handle]>,
}

impl Cores {
    /// How many sockets each listener binds.
    pub(crate) fn sockets(&self) -> usize {
        self.handles.len().max(1)
    }

    /// The runtime that accepts on socket `i`; `None`: the caller's.
    pub(super) fn handle(&self, i: usize) -> Option<&Handle> {
        self.handles.get(i)
    }
}

/// The worker threads, each driving its runtime until dropped.
pub(crate) struct CoreThreads {
    cores: Cores,
    stop: CancellationToken,
    threads: Vec<JoinHandle<()>>,
}

impl CoreThreads {
    pub(crate) fn start(n: usize) -> io::Result<CoreThreads> {
        let stop = CancellationToken::new();
        // Before any backend exists: each gets a set of idle connections per worker.
        crate::upstream::connpool::set_workers(n);
        let mut handles = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        let mut started = |i: usize| -> io::Result<()> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(rt.handle().clone());
            let stop = stop.clone();
            // Each runtime runs until the process stops, even when its thread
            // has no connection left: I/O and timers registered on it (the
            // backend's shared HTTP/2 connection, which every thread uses) are
            // driven by it.
            let thread = std::thread::Builder::new()
                .name(format!("fulcrum-core-{i}"))
                .spawn(move || {
                    crate::upstream::connpool::enter_worker(i);
                    rt.block_on(stop.cancelled())
                })?;
            threads.push(thread);
            Ok(())
        };
        let result = (0..n).try_for_each(&mut started);
        let me = CoreThreads {
            cores: Cores {
                handles: handles.into(),
            },
            stop,
            threads,
        };
        // On an error, dropping `me` stops the threads already started.
        result.map(|()| me)
    }

    pub(crate) fn cores(&self) -> Cores {
        self.cores.clone()
    }
}

impl Drop for CoreThreads {
    fn drop(&mut self) {
        self.stop.cancel();
        for t in self.threads.drain(..) {
            // A thread that panicked has nothing left to stop.
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_runtime_per_thread_each_on_its_own_thread() {
        let threads = CoreThreads::start(3).expect("threads");
        let cores = threads.cores();
        assert_eq!(cores.sockets(), 3);
        let names: Vec<String> = (0..3)
            .map(|i| {
                let h = cores.handle(i).expect("a runtime per socket");
                let (tx, rx) = std::sync::mpsc::channel();
                h.spawn(async move {
                    let name = std::thread::current().name().map(str::to_string);
                    let _ = tx.send(name);
                });
                rx.recv().expect("the task ran").expect("a named thread")
            })
            .collect();
        assert_eq!(
            names,
            ["fulcrum-core-0", "fulcrum-core-1", "fulcrum-core-2"]
        );
        assert!(cores.handle(3).is_none());
        assert_eq!(Cores::default().sockets(), 1);
    }
}
