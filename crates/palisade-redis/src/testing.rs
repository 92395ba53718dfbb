//! Real `redis-server` processes for tests (feature `test-support`).
//!
//! [`RedisServer::start`] runs `redis-server` on a free loopback port with
//! no persistence, in a temporary directory; [`RedisCluster::start`] runs
//! three such nodes as a cluster. Both stop their processes on drop. They
//! need `redis-server` (and `redis-cli` for the cluster) on `PATH`; the
//! project's test command installs them.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// One `redis-server` on loopback.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    bus_port: Option<u16>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a standalone server on a free port and waits until it answers.
    pub fn start() -> io::Result<Self> {
        Self::start_with(false)
    }

    fn start_with(cluster: bool) -> io::Result<Self> {
        let mut last_error = None;
        // A free port found by binding can be taken by someone else before
        // the server binds it; try a few.
        for _ in 0..5 {
            let port = free_port()?;
            // The cluster bus port defaults to port + 10000, which may be
            // taken or past 65535; pick a free one.
            let bus_port = if cluster { Some(free_port()?) } else { None };
            let mut server = Self {
                child: None,
                port,
                bus_port,
                dir: tempfile::tempdir()?,
            };
            match server.spawn() {
                Ok(()) => return Ok(server),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("could not start redis-server")))
    }

    fn spawn(&mut self) -> io::Result<()> {
        let port = self.port.to_string();
        let mut command = Command::new("redis-server");
        command
            .args([
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args([
                "--protected-mode",
                "yes",
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(bus_port) = self.bus_port {
            command.args(["--cluster-port", &bus_port.to_string()]);
            command.args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
            ]);
        }
        let child = command.spawn().map_err(|error| {
            io::Error::new(
                error.kind(),
                format!("cannot run redis-server ({error}); install it (Debian: apt-get install redis-server)"),
            )
        })?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if command(self.port, &["PING"]).is_ok_and(|reply| reply == "+PONG") {
                return Ok(());
            }
            if let Some(child) = &mut self.child
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                return Err(io::Error::other(format!("redis-server exited: {status}")));
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(io::Error::other("redis-server did not answer PING in 10 s"));
            }
            sleep(Duration::from_millis(20));
        }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// `redis://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, empty.
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn() {
                Ok(()) => return Ok(()),
                // The old socket may linger a moment.
                Err(error) if Instant::now() > deadline => return Err(error),
                Err(_) => sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Sends one command and returns the first line of the reply (`+PONG`,
    /// `:1`, `-ERR ...`).
    pub fn command(&self, args: &[&str]) -> io::Result<String> {
        command(self.port, args)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A three-node Redis Cluster on loopback (three primaries, no replicas).
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three nodes, joins them with `redis-cli --cluster create` and
    /// waits until every node reports `cluster_state:ok`.
    pub fn start() -> io::Result<Self> {
        let nodes = (0..3)
            .map(|_| RedisServer::start_with(true))
            .collect::<io::Result<Vec<_>>>()?;
        let addrs: Vec<String> = nodes.iter().map(|n| n.addr().to_string()).collect();
        let output = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .map_err(|error| {
                io::Error::new(error.kind(), format!("cannot run redis-cli ({error})"))
            })?;
        if !output.status.success() {
            return Err(io::Error::other(format!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&output.stdout)
            )));
        }
        let cluster = Self { nodes };
        cluster.wait_ok()?;
        Ok(cluster)
    }

    fn wait_ok(&self) -> io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let all_ok = self.nodes.iter().all(|node| {
                cluster_info(node.port).is_ok_and(|info| info.contains("cluster_state:ok"))
            });
            if all_ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(
                    "the cluster did not reach cluster_state:ok",
                ));
            }
            sleep(Duration::from_millis(100));
        }
    }

    /// The nodes' URLs, to seed a cluster client.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The nodes.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }
}

fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

fn connect(port: u16) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(
        &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        Duration::from_secs(1),
    )?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    Ok(stream)
}

fn send(stream: &mut TcpStream, args: &[&str]) -> io::Result<()> {
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(request.as_bytes())
}

/// One command over a fresh connection; the first line of the reply.
fn command(port: u16, args: &[&str]) -> io::Result<String> {
    let mut stream = connect(port)?;
    send(&mut stream, args)?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    Ok(line.trim_end().to_owned())
}

/// `CLUSTER INFO` (a bulk string) over a fresh connection.
fn cluster_info(port: u16) -> io::Result<String> {
    let mut stream = connect(port)?;
    send(&mut stream, &["CLUSTER", "INFO"])?;
    let mut reader = BufReader::new(stream);
    let mut header = String::new();
    reader.read_line(&mut header)?;
    let len: usize = header
        .trim_end()
        .strip_prefix('$')
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| io::Error::other(format!("unexpected reply {header:?}")))?;
    let mut body = vec![0; len + 2];
    io::Read::read_exact(&mut reader, &mut body)?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Awaits a step that must finish, within 20 seconds; panics naming `what`
/// when it hung.
pub async fn must_finish<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), future)
        .await
        .unwrap_or_else(|_| panic!("{what} hung"))
}
