//! The chaos run's cluster and its faults: three `relay` child processes, each reaching a
//! three-node NATS cluster (`--cluster-replicas 3`) only through fault proxies of its own (one
//! per NATS node; the nodes do not advertise their own addresses to clients, so no instance
//! reconnects around its proxies), and a seeded plan of faults injected into them.
//!
//! The plan has two lanes that run at once, each one fault at a time, so that the cluster never
//! loses more than it can survive: one instance out of three (killed, paused or partitioned)
//! and one NATS node out of three.
//!
//! | kind | what | held for | healed by |
//! | --- | --- | --- | --- |
//! | `kill` | SIGKILL an instance | 0.5–3 s | starting it again (same name and port) |
//! | `pause` | SIGSTOP an instance | 1.5–2.5 leases | SIGCONT |
//! | `cut` | black-hole the instance's NATS connections | 0.3–1.5 leases | healing the proxies |
//! | `reset` | reset them (and every new one) | 0.3–1.5 leases | healing the proxies |
//! | `nats` | SIGKILL a NATS node | 2–8 s | starting it again, then 10–14 s of calm |

use super::checker::Injected;
use parking_lot::Mutex;
use relay_cluster_testkit::free_port;
use relay_cluster_testkit::nats::NatsCluster;
use relay_cluster_testkit::proxy::Partition;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The kinds of fault, as `CHAOS_FAULTS` names them.
pub const KINDS: [&str; 5] = ["kill", "pause", "cut", "reset", "nats"];

/// One planned fault: its kind, target, start (from the start of the fault phase) and length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// One of [`KINDS`].
    pub kind: &'static str,
    /// The instance (or NATS node) index.
    pub target: usize,
    /// When it begins, from the start of the fault phase.
    pub at: Duration,
    /// How long it lasts.
    pub hold: Duration,
}

/// The faults of a run of `seconds` for `seed`: only `kinds`, with `lease` the instances'
/// lease. Each lane's last fault begins before `seconds` (and may end after).
pub fn plan(seed: u64, seconds: u64, kinds: &[&'static str], lease: Duration) -> Vec<Vec<Planned>> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let end = Duration::from_secs(seconds);
    let leases =
        |rng: &mut fastrand::Rng, from: f64, to: f64| lease.mul_f64(from + (to - from) * rng.f64());
    let instance_kinds: Vec<&'static str> =
        kinds.iter().copied().filter(|k| *k != "nats").collect();
    let mut instances = Vec::new();
    let mut at = Duration::from_secs(3);
    while !instance_kinds.is_empty() && at < end {
        let kind = instance_kinds[rng.usize(..instance_kinds.len())];
        let hold = match kind {
            "kill" => Duration::from_millis(rng.u64(500..3000)),
            "pause" => leases(&mut rng, 1.5, 2.5),
            _ => leases(&mut rng, 0.3, 1.5),
        };
        instances.push(Planned {
            kind,
            target: rng.usize(..3),
            at,
            hold,
        });
        at += hold + Duration::from_millis(rng.u64(2000..5000));
    }
    let mut nodes = Vec::new();
    let mut at = Duration::from_secs(5);
    while kinds.contains(&"nats") && at < end {
        let hold = Duration::from_millis(rng.u64(2000..8000));
        nodes.push(Planned {
            kind: "nats",
            target: rng.usize(..3),
            at,
            hold,
        });
        at += hold + Duration::from_millis(rng.u64(10_000..14_000));
    }
    vec![instances, nodes]
}

/// A `relay --cluster` child process on a fixed port, killed and reaped on drop.
struct Proc {
    name: String,
    port: u16,
    urls: String,
    lease: Duration,
    log: Option<PathBuf>,
    child: Option<Child>,
}

impl Proc {
    /// Starts the relay and waits for its listening line; `Err` if it exits first.
    fn spawn(&mut self) -> Result<(), String> {
        let stderr = match &self.log {
            Some(path) => Stdio::from(
                std::fs::File::options()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| e.to_string())?,
            ),
            None => Stdio::null(),
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_relay"))
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--metrics-listen", "off", "--rate-burst", "0"])
            .args([
                "--max-connections",
                "0",
                "--probe-timeout",
                "1s",
                "--grace",
                "5s",
            ])
            .args(["--cluster", &self.urls, "--cluster-replicas", "3"])
            .args(["--instance-id", &self.name])
            .args(["--cluster-lease", &format!("{}s", self.lease.as_secs())])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot start relay: {e}"))?;
        let mut stdout = std::io::BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        let _ = stdout.read_line(&mut line);
        if !line.contains("listening") {
            let _ = child.kill();
            let status = child.wait().map_err(|e| e.to_string())?;
            return Err(format!("{} exited at start ({status})", self.name));
        }
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        self.child = Some(child);
        Ok(())
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status();
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A stopped process dies of SIGKILL as well.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The cluster under test.
pub struct Rig {
    nats: Mutex<NatsCluster>,
    /// `[instance][node]`: the proxy through which an instance reaches a NATS node.
    proxies: Vec<Vec<Partition>>,
    instances: Vec<Mutex<Proc>>,
    /// The instances' addresses.
    pub addrs: Vec<SocketAddr>,
}

impl Rig {
    /// Starts the NATS cluster, the proxies and three instances with lease `lease` (their
    /// stderr appended to `<logs>/relay-<i>.log` if `logs` is given). `None` when
    /// `nats-server` is missing and not required.
    ///
    /// # Panics
    ///
    /// If an instance does not start.
    pub async fn start(test: &str, lease: Duration, logs: Option<PathBuf>) -> Option<Rig> {
        // The nodes must not advertise each other's addresses: the instances would reconnect
        // to them directly, around their proxies, and a partition would partition nothing.
        let mut nats = NatsCluster::start_with(test, &["--no_advertise=true"])?;
        let nodes: Vec<SocketAddr> = (0..3)
            .map(|i| {
                let url = nats.node(i).url();
                url.trim_start_matches("nats://")
                    .parse()
                    .expect("a node address")
            })
            .collect();
        let mut proxies = Vec::new();
        let mut instances = Vec::new();
        let mut addrs = Vec::new();
        for i in 0..3 {
            let mut own = Vec::new();
            for node in &nodes {
                own.push(Partition::start(*node).await);
            }
            let urls = own.iter().map(Partition::url).collect::<Vec<_>>().join(",");
            let port = free_port();
            let mut proc = Proc {
                name: format!("chaos-{i}"),
                port,
                urls,
                lease,
                log: logs.as_ref().map(|dir| dir.join(format!("relay-{i}.log"))),
                child: None,
            };
            tokio::task::block_in_place(|| proc.spawn()).expect("the instance starts");
            proxies.push(own);
            instances.push(Mutex::new(proc));
            addrs.push(SocketAddr::from(([127, 0, 0, 1], port)));
        }
        Some(Rig {
            nats: Mutex::new(nats),
            proxies,
            instances,
            addrs,
        })
    }

    /// Injects `kind` into `target`.
    fn inject(&self, kind: &str, target: usize) {
        match kind {
            "kill" => self.instances[target].lock().kill(),
            "pause" => self.instances[target].lock().signal("-STOP"),
            "cut" => self.proxies[target].iter().for_each(Partition::cut),
            "reset" => self.proxies[target].iter().for_each(Partition::reset),
            "nats" => tokio::task::block_in_place(|| self.nats.lock().node(target).kill()),
            other => unreachable!("no fault {other}"),
        }
    }

    /// Ends fault `kind` on `target`.
    fn heal(&self, kind: &str, target: usize) {
        match kind {
            "kill" => tokio::task::block_in_place(|| {
                let mut proc = self.instances[target].lock();
                for attempt in 1.. {
                    match proc.spawn() {
                        Ok(()) => return,
                        Err(why) if attempt < 5 => {
                            println!("chaos: restart {attempt} failed: {why}");
                            std::thread::sleep(Duration::from_secs(1));
                        }
                        Err(why) => panic!("instance {target} does not start again: {why}"),
                    }
                }
            }),
            "pause" => self.instances[target].lock().signal("-CONT"),
            "cut" | "reset" => self.proxies[target].iter().for_each(Partition::heal),
            "nats" => tokio::task::block_in_place(|| self.nats.lock().node(target).start_again()),
            other => unreachable!("no fault {other}"),
        }
    }

    /// Runs one lane of the plan from `start` (the start of the fault phase) on the run's clock
    /// `clock`, logging each fault into `log` once healed.
    pub async fn run_lane(
        self: Arc<Self>,
        lane: Vec<Planned>,
        clock: Instant,
        start: Instant,
        log: Arc<Mutex<Vec<Injected>>>,
    ) {
        for fault in lane {
            tokio::time::sleep_until((start + fault.at).into()).await;
            let at = clock.elapsed();
            println!(
                "chaos: {:>7.3}s {} {} {} for {:.1}s",
                at.as_secs_f64(),
                fault.kind,
                if fault.kind == "nats" {
                    "node"
                } else {
                    "instance"
                },
                fault.target,
                fault.hold.as_secs_f64()
            );
            self.inject(fault.kind, fault.target);
            let injected = Injected {
                kind: fault.kind,
                target: fault.target,
                at,
                healed: None,
            };
            log.lock().push(injected.clone());
            tokio::time::sleep(fault.hold).await;
            self.heal(fault.kind, fault.target);
            let healed = clock.elapsed();
            if let Some(entry) = log.lock().iter_mut().find(|e| **e == injected) {
                entry.healed = Some(healed);
            }
        }
    }
}
