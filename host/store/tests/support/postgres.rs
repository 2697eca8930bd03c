//! A real PostgreSQL server for tests (Debian's `postgresql`, installed by `scripts/setup`):
//! initialised in a temporary directory and started on a free loopback port, once per test
//! binary; each caller gets a database of its own.
//!
//! The server runs under a shell that kills it when the test process's end of a pipe
//! closes, so it never outlives the tests, however they end.

use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

struct Server {
    port: u16,
    bin: PathBuf,
    /// Held open: the server stops when it closes.
    _lifeline: Mutex<ChildStdin>,
    _child: Mutex<Child>,
}

static SERVER: OnceLock<Server> = OnceLock::new();
static NEXT_DB: AtomicUsize = AtomicUsize::new(0);

fn bin_dir() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed (scripts/setup installs it)")
        .filter_map(|e| Some(e.ok()?.path().join("bin")))
        .filter(|d| d.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop().expect("no PostgreSQL server binaries under /usr/lib/postgresql")
}

/// Run as the `postgres` user when we are root (the server refuses to run as root).
fn as_postgres(program: &str) -> Command {
    let root = Command::new("id").arg("-u").output().map(|o| o.stdout == b"0\n").unwrap_or(false);
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", program]);
        c
    } else {
        Command::new(program)
    }
}

fn server() -> &'static Server {
    SERVER.get_or_init(|| {
        let bin = bin_dir();
        let dir = std::env::temp_dir().join(format!("wasmgate-pg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let initdb = as_postgres(bin.join("initdb").to_str().unwrap())
            .args(["-D", dir.to_str().unwrap(), "-A", "trust", "-U", "postgres", "--no-sync"])
            .stdout(Stdio::null())
            .output()
            .expect("initdb");
        assert!(initdb.status.success(), "initdb failed: {}", String::from_utf8_lossy(&initdb.stderr));
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let postgres = bin.join("postgres");
        let script = format!(
            "{} -D {dir} -p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={dir} \
             -c fsync=off -c synchronous_commit=off -c full_page_writes=off & pid=$!; \
             cat >/dev/null; kill $pid; wait $pid; rm -rf {dir}",
            postgres.display(),
            dir = dir.display(),
        );
        let mut child = as_postgres("sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start postgres");
        let lifeline = child.stdin.take().unwrap();
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(30), "postgres did not start on port {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        let server = Server { port, bin, _lifeline: Mutex::new(lifeline), _child: Mutex::new(child) };
        // Accepting TCP comes a moment before accepting logins.
        while !psql(&server, "SELECT 1") {
            assert!(started.elapsed() < Duration::from_secs(30), "postgres did not accept logins");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    })
}

fn psql(server: &Server, sql: &str) -> bool {
    Command::new(server.bin.join("psql"))
        .args(["-h", "127.0.0.1", "-p", &server.port.to_string(), "-U", "postgres", "-qAt", "-c", sql])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The URL of a new, empty database.
pub fn database() -> String {
    let server = server();
    let name = format!("t{}", NEXT_DB.fetch_add(1, Ordering::SeqCst));
    assert!(psql(server, &format!("CREATE DATABASE {name}")), "CREATE DATABASE {name}");
    format!("postgres://postgres@127.0.0.1:{}/{name}", server.port)
}
