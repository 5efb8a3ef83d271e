//! A `berth serve` process a test owns (the harness's `Berth` does not expose its
//! pid), so the test can SIGKILL it as a crash would and start it again on the same
//! data. It runs in `root` (its `berth.toml`, `server.log`, `data/`); the log is
//! appended to across restarts and printed when the test fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub struct Server {
    child: Child,
    pub url: String,
    root: PathBuf,
}

impl Server {
    /// Start on `root`'s data with these extra environment variables. Storage is as
    /// `root` says (call `support::prepare_storage` first for the S3 pass).
    pub fn start(root: &Path, envs: &[(&str, &str)]) -> Server {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(root.join("server.log"))
            .expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(root.join("data"))
            .arg("--log-level")
            .arg("info")
            .current_dir(root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        cmd.env("BERTH_INITIAL_ROOT_PASSWORD", super::ROOT_PASSWORD);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn berth");
        let url = super::listening_url(&mut child, &root.join("server.log"));
        Server {
            child,
            url,
            root: root.to_path_buf(),
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("server.log")).unwrap_or_default()
    }

    /// SIGKILL, as a crash would, and reap the process.
    pub fn kill9(mut self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-9", &pid])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -9 {pid} failed");
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- berth server log ----\n{}", self.log());
        }
    }
}
