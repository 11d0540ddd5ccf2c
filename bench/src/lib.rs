//! Helpers of the benchmarks.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub mod wire;

/// A `quarry` node on free 127.0.0.1 ports with a fresh data directory, killed and
/// removed when dropped.
pub struct Broker {
    child: Child,
    pub port: u16,
    pub http: u16,
    pub sql: u16,
    pub dir: PathBuf,
}

impl Broker {
    pub fn start(bin: &Path) -> Result<Broker> {
        let broker = Broker::spawn(bin, &[])?;
        broker.wait_listening()?;
        Ok(broker)
    }

    /// Three nodes forming one cluster (each a voter), once all listen.
    pub fn start_cluster(bin: &Path) -> Result<Vec<Broker>> {
        let raft: Vec<u16> = (0..3).map(|_| free_port()).collect::<Result<_>>()?;
        let peers = (0..3).map(|i| format!("{}=127.0.0.1:{}", i + 1, raft[i])).collect::<Vec<_>>().join(",");
        let nodes: Vec<Broker> = (0..3)
            .map(|i| {
                let args = ["--node-id".to_string(), (i + 1).to_string(), "--raft-listen".to_string()]
                    .into_iter()
                    .chain([format!("127.0.0.1:{}", raft[i]), "--peers".to_string(), peers.clone()])
                    .collect::<Vec<_>>();
                Broker::spawn(bin, &args)
            })
            .collect::<Result<_>>()?;
        for n in &nodes {
            n.wait_listening()?;
        }
        Ok(nodes)
    }

    fn spawn(bin: &Path, extra: &[String]) -> Result<Broker> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("quarry-bench-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let port = free_port()?;
        let http = free_port()?;
        let sql = free_port()?;
        let child = Command::new(bin)
            .args(["serve", "--data-dir"])
            .arg(&dir)
            .args(["--kafka-listen", &format!("127.0.0.1:{port}"), "--http-listen", &format!("127.0.0.1:{http}")])
            .args(["--sql-listen", &format!("127.0.0.1:{sql}")])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(match std::env::var_os("BENCH_BROKER_LOG") {
                Some(path) => Stdio::from(std::fs::OpenOptions::new().create(true).append(true).open(path)?),
                None => Stdio::null(),
            })
            .spawn()
            .context("start quarry")?;
        Ok(Broker { child, port, http, sql, dir })
    }

    fn wait_listening(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > deadline {
                bail!("quarry did not start listening");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// The broker's `/metrics` lines whose names contain `filter`.
    pub fn metrics(&self, filter: &str) -> Vec<String> {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.http)) else { return vec![] };
        let _ = s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n");
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        body.lines().filter(|l| l.contains(filter) && !l.starts_with('#')).map(str::to_string).collect()
    }

    /// CPU seconds (user + system) and peak RSS in MiB, from /proc.
    pub fn usage(&self) -> (f64, f64) {
        let pid = self.child.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
        let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
            + fields.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let hwm_kb: f64 = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        (ticks / 100.0, hwm_kb / 1024.0)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::env::var_os("BENCH_KEEP_DATA").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

