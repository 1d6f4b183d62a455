//! `etcdc-node` processes for the tests: the binary on free loopback ports and a temporary
//! data dir, started empty or from a snapshot file, stopped by its pid when dropped.

/// A client and a peer URL on free loopback ports.
pub fn node_ports() -> (String, String) {
    (
        format!("http://127.0.0.1:{}", super::etcd::free_port()),
        format!("http://127.0.0.1:{}", super::etcd::free_port()),
    )
}

/// An etcdc-node process, one member of its own cluster, stopped by its pid when dropped.
pub struct NodeProcess {
    pub url: String,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl NodeProcess {
    pub fn command(
        data: &std::path::Path,
        snapshot: Option<&std::path::Path>,
        (client, peer): &(String, String),
    ) -> std::process::Command {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_etcdc-node"));
        cmd.arg("--data-dir")
            .arg(data)
            .args([
                "--listen-client-urls",
                client,
                "--advertise-client-urls",
                client,
            ])
            .args([
                "--listen-peer-urls",
                peer,
                "--initial-advertise-peer-urls",
                peer,
            ])
            .stdin(std::process::Stdio::null());
        if let Some(snapshot) = snapshot {
            cmd.arg("--restore-snapshot").arg(snapshot);
        }
        cmd
    }

    pub fn restored(snapshot: &std::path::Path) -> NodeProcess {
        NodeProcess::start(Some(snapshot))
    }

    /// A node on an empty data dir, or one restored from `snapshot`, serving.
    pub fn start(snapshot: Option<&std::path::Path>) -> NodeProcess {
        NodeProcess::start_with(snapshot, &[])
    }

    /// `start`, with more flags.
    pub fn start_with(snapshot: Option<&std::path::Path>, extra: &[&str]) -> NodeProcess {
        NodeProcess::start_in(tempfile::tempdir().unwrap(), node_ports(), snapshot, extra)
    }

    /// A node on `ports` whose data dir is `data` in `dir` (which may hold data already).
    pub fn start_in(
        dir: tempfile::TempDir,
        ports: (String, String),
        snapshot: Option<&std::path::Path>,
        extra: &[&str],
    ) -> NodeProcess {
        let child = NodeProcess::command(&dir.path().join("data"), snapshot, &ports)
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("etcdc-node starts");
        let node = NodeProcess {
            url: ports.0,
            child,
            _dir: dir,
        };
        let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
        // A node restored with authentication on answers etcdctl's health check (a get)
        // "user name is empty", as etcd does: it serves.
        let serving = || {
            let (healthy, out) = super::etcdctl::etcdctl(&node.url, &["endpoint", "health"], None);
            healthy || out.contains("user name is empty")
        };
        while !serving() {
            assert!(std::time::Instant::now() < until, "the node never served");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        node
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
