//! The binary as an operator runs it: `orch serve` with nothing configured.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn serve_on_defaults_answers_health_creates_the_db_and_stops_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_orch"))
        .arg("serve")
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("ORCH_LISTEN", format!("127.0.0.1:{port}"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });

    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::{Read, Write};
            s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut resp = String::new();
            s.read_to_string(&mut resp).unwrap();
            break resp;
        }
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(dir.path().join("orch.db").exists());

    let pid = child.id() as i32;
    assert_eq!(unsafe { libc_kill(pid, 2) }, 0);
    let stopped_at = Instant::now();
    let exit = loop {
        if let Some(code) = child.try_wait().unwrap() {
            break code;
        }
        assert!(
            stopped_at.elapsed() < Duration::from_secs(2),
            "did not stop within 2 s of SIGINT"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(exit.code(), Some(0));
    let lines = log.join().unwrap();
    assert!(lines.iter().any(|l| l.contains("SIGINT")), "{lines:?}");
}

#[test]
fn under_systemd_it_says_ready_pets_the_watchdog_and_says_stopping() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_orch"))
        .arg("serve")
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("ORCH_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("NOTIFY_SOCKET", &socket_path)
        // 200 ms: a pet every 100 ms while the loops run.
        .env("WATCHDOG_USEC", "200000")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 512];
    let mut next = || {
        let n = socket.recv(&mut buf).expect("a notification in time");
        String::from_utf8_lossy(&buf[..n]).trim().to_string()
    };
    assert_eq!(next(), "READY=1");
    assert_eq!(next(), "WATCHDOG=1");
    assert_eq!(next(), "WATCHDOG=1", "petted again while the loops run");

    assert_eq!(unsafe { libc_kill(child.id() as i32, 2) }, 0);
    let stopping = std::iter::repeat_with(&mut next)
        .take(20)
        .find(|m| m != "WATCHDOG=1");
    assert_eq!(stopping.as_deref(), Some("STOPPING=1"));
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

/// `orch serve` in an empty directory with `args` and `env`: its exit code and stderr.
fn serve_refused(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_orch"))
        .arg("serve")
        .args(args)
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("ORCH_LISTEN", format!("127.0.0.1:{}", free_port()))
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        dir,
    )
}

#[test]
fn a_named_rules_directory_that_is_missing_stops_startup_before_anything_is_written() {
    let (code, stderr, dir) = serve_refused(&["--rules", "policy"], &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("rules directory policy does not exist"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("orch.db").exists(),
        "no database is created"
    );

    let (code, stderr, _dir) = serve_refused(&[], &[("ORCH_RULES_DIR", "/no/such/rules")]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("/no/such/rules"), "{stderr}");
}

#[test]
fn an_invalid_rule_set_stops_startup_with_file_line_col_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    for entry in std::fs::read_dir(&src).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, rules.join(p.file_name().unwrap())).unwrap();
        }
    }
    let pipeline = rules.join("pipeline.toml");
    let text = std::fs::read_to_string(&pipeline).unwrap();
    std::fs::write(&pipeline, format!("{text}\nstagez = 1\n")).unwrap();
    let (code, stderr, work) = serve_refused(&["--rules", rules.to_str().unwrap()], &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("pipeline.toml:"), "{stderr}");
    assert!(stderr.contains("stagez"), "{stderr}");
    assert!(
        !work.path().join("orch.db").exists(),
        "no database is created"
    );
}

#[test]
fn a_missing_config_file_is_named_once() {
    let (code, stderr, _dir) = serve_refused(&["--config", "nope.toml"], &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("nope.toml"), "{stderr}");
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "the cause is not repeated: {stderr}"
    );
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}
