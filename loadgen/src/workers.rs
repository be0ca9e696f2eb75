//! Spreading the connections over processes (`--procs K`): the coordinator re-executes itself
//! as K workers (`relay-loadgen --worker`), each holding one [`Part`] and answering commands as
//! JSON lines (stdin → command, stdout → progress lines then one reply). With one process the
//! coordinator holds the part itself; [`Parts`] hides the difference.

use super::part::Part;
use super::plan::{Command, Reply, Target};
use futures_util::future::join_all;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;

/// How often a worker reports its connection attempts while opening.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// One part, here or in a worker process.
enum Handle {
    Local(Box<Part>),
    Remote(Box<Worker>),
}

/// A worker process and the lines it answers with.
struct Worker {
    child: Child,
    stdin: ChildStdin,
    replies: mpsc::UnboundedReceiver<Reply>,
}

impl Handle {
    async fn call(&mut self, command: Command, limit: Duration) -> Result<Reply, String> {
        match self {
            Handle::Local(part) => Ok(part.execute(command).await),
            Handle::Remote(worker) => {
                let mut line = serde_json::to_string(&command).map_err(|e| e.to_string())?;
                line.push('\n');
                worker
                    .stdin
                    .write_all(line.as_bytes())
                    .await
                    .map_err(|e| format!("worker stdin: {e}"))?;
                match tokio::time::timeout(limit, worker.replies.recv()).await {
                    Ok(Some(Reply::Error(error))) => Err(format!("worker: {error}")),
                    Ok(Some(reply)) => Ok(reply),
                    Ok(None) => Err(format!(
                        "worker exited ({})",
                        worker
                            .child
                            .try_wait()
                            .ok()
                            .flatten()
                            .map_or("still running".to_owned(), |s| s.to_string())
                    )),
                    Err(_) => Err(format!("worker did not answer within {limit:?}")),
                }
            }
        }
    }
}

/// Reads one part's connection attempts without borrowing it.
type ProgressReader = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Every part of a run.
pub struct Parts {
    handles: Vec<Handle>,
    readers: Vec<ProgressReader>,
}

impl Parts {
    /// One part in this process (`procs == 1`), or `procs` worker processes; `first_conn(k)` is
    /// part k's first connection index.
    ///
    /// # Errors
    ///
    /// If a worker cannot be started.
    pub async fn start(
        target: &Target,
        procs: usize,
        first_conn: impl Fn(usize) -> u64,
    ) -> Result<Parts, String> {
        if procs <= 1 {
            let part = Part::new(target.clone(), first_conn(0));
            let reader: ProgressReader = Arc::new(part.progress_counter());
            return Ok(Parts {
                handles: vec![Handle::Local(Box::new(part))],
                readers: vec![reader],
            });
        }
        let exe = std::env::current_exe().map_err(|e| format!("cannot find my own binary: {e}"))?;
        let mut handles = Vec::new();
        let mut readers: Vec<ProgressReader> = Vec::new();
        for k in 0..procs {
            let mut child = tokio::process::Command::new(&exe)
                .arg("--worker")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("cannot start worker {k}: {e}"))?;
            let stdin = child.stdin.take().expect("piped");
            let stdout = child.stdout.take().expect("piped");
            let (tx, replies) = mpsc::unbounded_channel();
            let progress = Arc::new(AtomicU64::new(0));
            let counter = progress.clone();
            let reader = progress.clone();
            readers.push(Arc::new(move || reader.load(Relaxed)));
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    match serde_json::from_str::<Reply>(&line) {
                        Ok(Reply::Progress(n)) => counter.store(n, Relaxed),
                        Ok(reply) => {
                            if tx.send(reply).is_err() {
                                break;
                            }
                        }
                        Err(error) => {
                            let _ = tx.send(Reply::Error(format!("bad line {line:?}: {error}")));
                        }
                    }
                }
            });
            let mut handle = Handle::Remote(Box::new(Worker {
                child,
                stdin,
                replies,
            }));
            let init = Command::Init {
                target: target.clone(),
                first_conn: first_conn(k),
            };
            match handle.call(init, Duration::from_secs(10)).await? {
                Reply::Closed => handles.push(handle),
                other => return Err(format!("worker {k} answered {other:?} to init")),
            }
        }
        Ok(Parts { handles, readers })
    }

    /// How many parts there are.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// A reader of the connection attempts finished so far, over all parts, that does not
    /// borrow them.
    pub fn progress_reader(&self) -> impl Fn() -> u64 + Send + Sync + 'static + use<> {
        let readers = self.readers.clone();
        move || readers.iter().map(|read| read()).sum()
    }

    /// Sends `command(k)` to each part k at once (`None`: nothing for that part) and returns the
    /// replies, each within `limit`.
    ///
    /// # Errors
    ///
    /// The first part that failed or did not answer.
    pub async fn each(
        &mut self,
        command: impl Fn(usize) -> Option<Command>,
        limit: Duration,
    ) -> Result<Vec<Reply>, String> {
        let calls = self
            .handles
            .iter_mut()
            .enumerate()
            .filter_map(|(k, handle)| command(k).map(|c| handle.call(c, limit)));
        join_all(calls).await.into_iter().collect()
    }

    /// Asks every worker to close its connections and waits for it to exit.
    pub async fn stop(mut self) {
        let _ = self
            .each(|_| Some(Command::CloseAll), Duration::from_secs(15))
            .await;
        for handle in &mut self.handles {
            if let Handle::Remote(worker) = handle {
                let _ = worker.stdin.shutdown().await;
                let exited = tokio::time::timeout(Duration::from_secs(5), worker.child.wait());
                if exited.await.is_err() {
                    let _ = worker.child.kill().await;
                }
            }
        }
    }
}

/// A worker's life: `Init`, then one reply per command, until stdin closes.
pub async fn serve() -> Result<(), String> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Reply>();
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(reply) = out_rx.recv().await {
            let mut line = serde_json::to_string(&reply).expect("replies serialize");
            line.push('\n');
            if stdout.write_all(line.as_bytes()).await.is_err() || stdout.flush().await.is_err() {
                break;
            }
        }
    });
    let mut part = None;
    while let Some(line) = lines.next_line().await.map_err(|e| e.to_string())? {
        let command: Command =
            serde_json::from_str(&line).map_err(|e| format!("bad command {line:?}: {e}"))?;
        let reply = match (command, part.as_mut()) {
            (Command::Init { target, first_conn }, None) => {
                part = Some(Part::new(target, first_conn));
                Reply::Closed
            }
            (command, Some(part)) => {
                let opening = matches!(
                    command,
                    Command::OpenBinaries { .. } | Command::OpenPhones { .. }
                );
                if opening {
                    run_with_progress(part, command, &out_tx).await
                } else {
                    part.execute(command).await
                }
            }
            (_, None) => Reply::Error("the first command must be Init".to_owned()),
        };
        if out_tx.send(reply).is_err() {
            break;
        }
    }
    if let Some(mut part) = part {
        part.execute(Command::CloseAll).await;
    }
    drop(out_tx);
    let _ = writer.await;
    Ok(())
}

/// Carries out an open command, reporting progress lines while it runs.
async fn run_with_progress(
    part: &mut Part,
    command: Command,
    out: &mpsc::UnboundedSender<Reply>,
) -> Reply {
    let mut ticker = tokio::time::interval(PROGRESS_EVERY);
    let progress = part.progress_counter();
    let execution = part.execute(command);
    tokio::pin!(execution);
    loop {
        tokio::select! {
            reply = &mut execution => return reply,
            _ = ticker.tick() => {
                let _ = out.send(Reply::Progress(progress()));
            }
        }
    }
}
