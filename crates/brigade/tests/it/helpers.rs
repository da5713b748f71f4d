use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const SERVICES: [&str; 5] = ["gateway", "catalog", "accounts", "orders", "billing"];

/// `brigade` with a clean configuration environment: only what the test sets.
pub fn brigade(data_dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_brigade"));
    for (key, _) in std::env::vars() {
        if key.starts_with("BRIGADE_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("BRIGADE_DATA_DIR", data_dir)
        .env("BRIGADE_LOG__FORMAT", "json")
        .env("BRIGADE_SHUTDOWN_GRACE", "5s")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// Every service on a free port.
pub fn on_free_ports(cmd: &mut Command) -> &mut Command {
    for s in SERVICES {
        cmd.env(format!("BRIGADE_SERVICES__{}__PORT", s.to_uppercase()), "0");
    }
    cmd
}

/// A started `brigade` process and the URL of each service it printed.
pub struct Running {
    pub child: Child,
    pub urls: HashMap<String, String>,
}

/// Starts the command and reads its table of services from stdout.
pub async fn start(cmd: &mut Command) -> Running {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn brigade");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut urls = HashMap::new();
    let read = async {
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            if line.starts_with("Press Ctrl-C") {
                break;
            }
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() >= 2 && cols[1].starts_with("http://") {
                urls.insert(cols[0].to_owned(), cols[1].to_owned());
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .is_err()
    {
        let _ = child.kill().await;
        panic!("brigade did not print its table within 60 s");
    }
    Running { child, urls }
}

/// Sends SIGTERM, as a process manager would.
pub fn terminate(child: &Child) {
    let pid = child.id().expect("child still running");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

/// Sends SIGTERM and requires a clean exit (status 0) within 20 s.
pub async fn stop_cleanly(running: &mut Running) {
    terminate(&running.child);
    let status = tokio::time::timeout(Duration::from_secs(20), running.child.wait())
        .await
        .expect("brigade stopped within 20 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
}
