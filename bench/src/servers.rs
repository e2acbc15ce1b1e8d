//! Starting and stopping the stores on loopback, each in its own temporary directory, and
//! reading their CPU time from /proc. Every process is killed when its [`Servers`] drops.

use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// The processes of one store.
pub struct Servers {
    /// What clients connect to.
    pub endpoints: Vec<String>,
    children: Vec<Child>,
    /// How each process was started, to start it again.
    specs: Vec<Spec>,
    dir: tempfile::TempDir,
    /// sessiond over TLS: the certificates directory its nodes and the driver use.
    certs: Option<PathBuf>,
}

/// The principal the driver authenticates as (every role).
const PRINCIPAL: &str = "bench";

/// Node certificates made for a sessiond cluster beyond its founding members (nodes added
/// by `scale`).
const SPARE_NODE_CERTS: usize = 2;

struct Spec {
    program: PathBuf,
    args: Vec<String>,
    log: PathBuf,
}

fn free_port() -> anyhow::Result<u16> {
    sessiond_workload::ports::free().context("no free loopback port")
}

fn spawn(program: &Path, args: &[String], log: &Path) -> anyhow::Result<Child> {
    let out = std::fs::File::create(log)?;
    let err = out.try_clone()?;
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", program.display()))
}

/// `sessiond serve` on loopback ports `client`, `peer`, `metrics` with data in `data`, with
/// the TLS material in `certs` (else `--insecure`).
fn sessiond_args(
    id: usize,
    data: &Path,
    (client, peer, metrics): (u16, u16, u16),
    certs: Option<&Path>,
) -> Vec<String> {
    let security = match certs {
        Some(dir) => vec!["--certs-dir".into(), dir.display().to_string()],
        None => vec!["--insecure".into()],
    };
    let scheme = [
        "serve".into(),
        "--node-id".into(),
        id.to_string(),
        "--data-dir".into(),
        data.display().to_string(),
        "--client-addr".into(),
        format!("127.0.0.1:{client}"),
        "--peer-addr".into(),
        format!("127.0.0.1:{peer}"),
        "--metrics-addr".into(),
        format!("127.0.0.1:{metrics}"),
    ];
    scheme.into_iter().chain(security).collect()
}

/// `sessiond certs local` for `nodes` nodes and the driver's principal, in `certs`.
fn make_certs(bin: &Path, certs: &Path, nodes: usize) -> anyhow::Result<()> {
    let out = std::process::Command::new(bin)
        .arg("certs")
        .arg("--certs-dir")
        .arg(certs)
        .args(["local", "--nodes", &nodes.to_string(), "--client"])
        .arg(format!("{PRINCIPAL}=app+watch+operator"))
        .output()
        .with_context(|| format!("running {} certs", bin.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "sessiond certs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Find `name` on PATH (or take it as a path).
pub fn which(name: &str) -> Option<PathBuf> {
    let p = PathBuf::from(name);
    if p.components().count() > 1 {
        return p.is_file().then_some(p);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|c| c.is_file())
    })
}

impl Servers {
    /// A sessiond cluster of `nodes` nodes, over TLS with client certificates unless
    /// `plaintext` (`--insecure`, to measure what TLS costs). Rotation is allowed back to
    /// back (the benchmark's workers rotate one session repeatedly); every durability and
    /// correctness feature stays on.
    pub fn sessiond(
        bin: &Path,
        nodes: usize,
        extra: &[String],
        plaintext: bool,
    ) -> anyhow::Result<Servers> {
        let dir = tempfile::Builder::new()
            .prefix("bench-sessiond-")
            .tempdir()?;
        let certs = if plaintext {
            None
        } else {
            let certs = dir.path().join("certs");
            make_certs(bin, &certs, nodes + SPARE_NODE_CERTS)?;
            Some(certs)
        };
        let scheme = if plaintext { "http" } else { "https" };
        let ports: Vec<(u16, u16, u16)> = (0..nodes)
            .map(|_| Ok((free_port()?, free_port()?, free_port()?)))
            .collect::<anyhow::Result<_>>()?;
        let initial = ports
            .iter()
            .enumerate()
            .map(|(i, (_, p, _))| format!("{}=127.0.0.1:{p}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut children = Vec::new();
        let mut specs = Vec::new();
        let mut endpoints = Vec::new();
        for (i, (c, p, m)) in ports.iter().enumerate() {
            let id = i + 1;
            let data = dir.path().join(format!("n{id}"));
            let mut args = sessiond_args(id, &data, (*c, *p, *m), certs.as_deref());
            args.extend(["--initial-cluster".into(), initial.clone()]);
            args.extend(extra.iter().cloned());
            let log = dir.path().join(format!("n{id}.log"));
            children.push(spawn(bin, &args, &log)?);
            specs.push(Spec {
                program: bin.to_path_buf(),
                args,
                log,
            });
            endpoints.push(format!("{scheme}://127.0.0.1:{c}"));
        }
        Ok(Servers {
            endpoints,
            children,
            specs,
            dir,
            certs,
        })
    }

    /// TLS settings of the driver's clients of a sessiond cluster over TLS.
    pub fn client_tls(&self) -> anyhow::Result<Option<tonic::transport::ClientTlsConfig>> {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        let Some(certs) = &self.certs else {
            return Ok(None);
        };
        let read = |name: String| {
            std::fs::read(certs.join(&name)).with_context(|| format!("reading {name}"))
        };
        Ok(Some(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(read("ca.crt".into())?))
                .identity(Identity::from_pem(
                    read(format!("client-{PRINCIPAL}.crt"))?,
                    read(format!("client-{PRINCIPAL}.key"))?,
                )),
        ))
    }

    /// The same TLS material as [`Servers::client_tls`] (cluster CA, the driver's client
    /// certificate) as a rustls configuration, for the HTTP/JSON backend.
    pub fn client_rustls(&self) -> anyhow::Result<Option<std::sync::Arc<rustls::ClientConfig>>> {
        let Some(certs) = &self.certs else {
            return Ok(None);
        };
        let cert = certs.join(format!("client-{PRINCIPAL}.crt"));
        let key = certs.join(format!("client-{PRINCIPAL}.key"));
        let config =
            sessiond_security::tls::client_config(&certs.join("ca.crt"), Some((&cert, &key)))
                .context("the driver's TLS configuration")?;
        Ok(Some(config))
    }

    /// An endpoint for `url` with the driver's TLS settings when the cluster has them.
    pub fn endpoint(&self, url: &str) -> anyhow::Result<tonic::transport::Endpoint> {
        let e = tonic::transport::Endpoint::from_shared(url.to_owned())?;
        Ok(match self.client_tls()? {
            Some(tls) => e.tls_config(tls)?,
            None => e,
        })
    }

    /// A 3-member etcd cluster (fsync on, as etcd always runs).
    pub fn etcd(bin: &Path, members: usize) -> anyhow::Result<Servers> {
        let dir = tempfile::Builder::new().prefix("bench-etcd-").tempdir()?;
        let ports: Vec<(u16, u16)> = (0..members)
            .map(|_| Ok((free_port()?, free_port()?)))
            .collect::<anyhow::Result<_>>()?;
        let initial = ports
            .iter()
            .enumerate()
            .map(|(i, (_, p))| format!("e{}=http://127.0.0.1:{p}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut children = Vec::new();
        let mut endpoints = Vec::new();
        for (i, (c, p)) in ports.iter().enumerate() {
            let name = format!("e{}", i + 1);
            let client = format!("http://127.0.0.1:{c}");
            let peer = format!("http://127.0.0.1:{p}");
            let args: Vec<String> = [
                "--name",
                &name,
                "--data-dir",
                &dir.path().join(&name).display().to_string(),
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
                "--initial-cluster",
                &initial,
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                "sessiond-bench",
                "--logger",
                "zap",
                "--log-level",
                "error",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            let log = dir.path().join(format!("{name}.log"));
            children.push(spawn(bin, &args, &log)?);
            endpoints.push(client);
        }
        Ok(Servers {
            endpoints,
            children,
            specs: Vec::new(),
            dir,
            certs: None,
        })
    }

    /// One Redis server with an append-only file synced every second.
    pub fn redis(bin: &Path) -> anyhow::Result<Servers> {
        let dir = tempfile::Builder::new().prefix("bench-redis-").tempdir()?;
        let port = free_port()?;
        let args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--dir",
            &dir.path().display().to_string(),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--daemonize",
            "no",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let log = dir.path().join("redis.log");
        let child = spawn(bin, &args, &log)?;
        Ok(Servers {
            endpoints: vec![format!("redis://127.0.0.1:{port}/")],
            children: vec![child],
            specs: Vec::new(),
            dir,
            certs: None,
        })
    }

    /// CPU seconds (user + system) the store's processes have used so far.
    pub fn cpu_seconds(&self) -> f64 {
        self.children
            .iter()
            .filter_map(|c| c.id())
            .filter_map(|pid| proc_cpu_seconds(pid).ok())
            .sum()
    }

    /// Resident memory of the store's processes, bytes.
    pub fn rss_bytes(&self) -> u64 {
        (0..self.children.len()).map(|i| self.rss_of(i)).sum()
    }

    /// Whether every process still runs (a crash mid-run invalidates the numbers).
    pub fn all_running(&mut self) -> bool {
        self.children
            .iter_mut()
            .all(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL process `i` and wait for it to be gone (its data stays).
    pub async fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        let c = self.children.get_mut(i).context("no such process")?;
        c.start_kill()?;
        tokio::time::timeout(Duration::from_secs(10), c.wait()).await??;
        Ok(())
    }

    /// Start process `i` again with its original arguments.
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        let spec = self
            .specs
            .get(i)
            .context("no way to restart this process")?;
        let child = spawn(&spec.program, &spec.args, &spec.log)?;
        self.children[i] = child;
        Ok(())
    }

    /// Start one more, empty sessiond node (id = count + 1) that is not yet a member;
    /// returns its endpoint and the client and peer addresses to add it with.
    pub fn add_sessiond(&mut self, bin: &Path) -> anyhow::Result<(String, String, String)> {
        let id = self.children.len() + 1;
        let (c, p, m) = (free_port()?, free_port()?, free_port()?);
        let args = sessiond_args(
            id,
            &self.dir.path().join(format!("n{id}")),
            (c, p, m),
            self.certs.as_deref(),
        );
        let log = self.dir.path().join(format!("n{id}.log"));
        self.children.push(spawn(bin, &args, &log)?);
        self.specs.push(Spec {
            program: bin.to_path_buf(),
            args,
            log,
        });
        let scheme = if self.certs.is_some() {
            "https"
        } else {
            "http"
        };
        let endpoint = format!("{scheme}://127.0.0.1:{c}");
        self.endpoints.push(endpoint.clone());
        Ok((endpoint, format!("127.0.0.1:{c}"), format!("127.0.0.1:{p}")))
    }

    /// Resident memory of process `i`, bytes.
    pub fn rss_of(&self, i: usize) -> u64 {
        self.children
            .get(i)
            .and_then(|c| c.id())
            .and_then(|pid| {
                let s = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
                let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
                Some(pages * 4096)
            })
            .unwrap_or(0)
    }

    /// Bytes on disk under node `i`'s data directory (sessiond layout: `n<i+1>`).
    pub fn disk_of(&self, i: usize) -> u64 {
        self.disk_breakdown_of(i).values().sum()
    }

    /// Node `i`'s data directory by kind of file, bytes: `snapshot` (the snapshot file),
    /// `sst` (RocksDB tables), `wal` (RocksDB write-ahead log), `other` (manifests, options).
    pub fn disk_breakdown_of(&self, i: usize) -> std::collections::BTreeMap<&'static str, u64> {
        fn walk(
            p: &Path,
            kind: Option<&'static str>,
            out: &mut std::collections::BTreeMap<&'static str, u64>,
        ) {
            let Ok(rd) = std::fs::read_dir(p) else {
                return;
            };
            for e in rd.flatten() {
                let Ok(m) = e.metadata() else { continue };
                let path = e.path();
                if m.is_dir() {
                    let sub = (e.file_name() == "snapshot").then_some("snapshot");
                    walk(&path, kind.or(sub), out);
                    continue;
                }
                let k = kind.unwrap_or(match path.extension().and_then(|x| x.to_str()) {
                    Some("sst") => "sst",
                    Some("log") if e.file_name() != "LOG" => "wal",
                    _ => "other",
                });
                *out.entry(k).or_default() += m.len();
            }
        }
        let mut out = std::collections::BTreeMap::new();
        walk(&self.dir.path().join(format!("n{}", i + 1)), None, &mut out);
        out
    }

    /// Node `i`'s `/metrics` text (sessiond only), by a plain HTTP/1.0 GET.
    pub async fn metrics_of(&self, i: usize) -> anyhow::Result<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let spec = self.specs.get(i).context("no such node")?;
        let addr = spec
            .args
            .iter()
            .position(|a| a == "--metrics-addr")
            .and_then(|k| spec.args.get(k + 1))
            .context("node has no metrics address")?;
        let mut s = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect(addr.as_str()),
        )
        .await??;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await?;
        let mut body = String::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut body)).await??;
        Ok(body
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or(body))
    }

    /// Stop every process and wait for it.
    pub async fn stop(mut self) {
        for c in &mut self.children {
            let _ = c.start_kill();
        }
        for c in &mut self.children {
            let _ = tokio::time::timeout(Duration::from_secs(10), c.wait()).await;
        }
    }
}

/// The clock ticks per second /proc counts in (USER_HZ: 100 on every Linux ABI in use).
const USER_HZ: f64 = 100.0;

fn proc_cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces; the fields after it follow its ')'.
    let rest = stat.rsplit_once(')').context("malformed stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after ')'.
    let utime: f64 = f.get(11).context("no utime")?.parse()?;
    let stime: f64 = f.get(12).context("no stime")?.parse()?;
    Ok((utime + stime) / USER_HZ)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_cpu_time() {
        // Burn CPU until the kernel has counted some (it counts in ticks, and a loaded machine
        // may give this thread little of them), for two seconds of wall time at most.
        // black_box: an optimised build would fold the loop away and burn no time.
        let started = std::time::Instant::now();
        let mut x = 0u64;
        let mut s = 0.0;
        while s <= 0.0 && started.elapsed() < std::time::Duration::from_secs(2) {
            for i in 0..5_000_000u64 {
                x = std::hint::black_box(x.wrapping_add(i * i));
            }
            s = proc_cpu_seconds(std::process::id()).unwrap();
        }
        assert!(x > 0);
        assert!(s > 0.0, "{s}");
    }
}
