//! The real `etcdctl` (Debian's etcd-client), run once or in the background.

use std::process::{Command, Stdio};

/// Runs `etcdctl` against `url` to completion: (success, stdout + stderr). With etcdctl not
/// installed: a failure when CI is set, else (false, "SKIP").
pub fn etcdctl(url: &str, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let bin = if std::path::Path::new("/usr/bin/etcdctl").exists() {
        "/usr/bin/etcdctl"
    } else {
        if std::env::var_os("CI").is_some() {
            panic!(
                "etcdctl is not installed and CI is set: run scripts/test.sh, which installs it"
            );
        }
        return (false, "SKIP".into());
    };
    let mut child = Command::new(bin)
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", url, "--command-timeout=5s"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("etcdctl runs");
    if let Some(input) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().expect("etcdctl finishes");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A long-running etcdctl (watch, lock, elect): its output lines as they come; stopped by
/// its own PID when dropped, also when the test fails.
pub struct Background {
    child: std::process::Child,
    pub lines: std::sync::mpsc::Receiver<String>,
}

impl Background {
    pub fn start(url: &str, args: &[&str]) -> Background {
        let mut child = Command::new("/usr/bin/etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", url])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("etcdctl runs");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Background { child, lines }
    }

    /// The next `n` lines, waiting at most 10 s for them.
    pub fn lines(&self, n: usize) -> Vec<String> {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        (0..n)
            .map(|i| {
                let left = until.saturating_duration_since(std::time::Instant::now());
                self.lines
                    .recv_timeout(left)
                    .unwrap_or_else(|_| panic!("line {} of {n} from etcdctl within 10 s", i + 1))
            })
            .collect()
    }

    /// Nothing printed for `wait` (the process is blocked, as it should be).
    pub fn quiet_for(&self, wait: std::time::Duration) -> bool {
        self.lines.recv_timeout(wait).is_err()
    }

    /// SIGINT, as Ctrl-C: etcdctl's lock and elect then give up what they hold.
    pub fn interrupt(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let _ = self.child.wait();
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// True when etcdctl is here; false (skip) when it is not and CI is unset; a failure when CI
/// is set.
pub fn available() -> bool {
    if std::path::Path::new("/usr/bin/etcdctl").exists() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "etcdctl is not installed and CI is set: run scripts/test.sh, which installs it"
    );
    eprintln!("SKIP: etcdctl is not installed (set CI to make this a failure)");
    false
}
