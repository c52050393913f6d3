//! The throwaway PostgreSQL clusters of the tests (`src/store/pg_cluster.rs`) against
//! Debian's real server: databases hold data, a restart keeps it, one role's sessions can be
//! ended and its logins refused, TLS serves the given certificate, and no server outlives
//! its cluster or its test process.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use postgres::{Client, NoTls};

use crate::pg_cluster::{self, Cluster};

fn connect(url: &str) -> Client {
    Client::connect(url, NoTls).unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

fn text(rows: &[&[Option<&str>]]) -> Vec<Vec<Option<String>>> {
    rows.iter()
        .map(|row| row.iter().map(|v| v.map(str::to_owned)).collect())
        .collect()
}

/// Whether process `pid` is gone (a zombie nobody reaped yet is dead all the same).
fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// The pids whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            children.push(child);
        }
    }
    children
}

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_fresh_database_holds_a_table_over_tcp_and_the_socket() {
    let cluster = Cluster::shared();
    let url = cluster.fresh_database();
    let prefix = format!("postgres://rostersync@127.0.0.1:{}/t_", cluster.port());
    assert!(url.starts_with(&prefix), "{url}");
    let db = url.rsplit('/').next().unwrap();

    let mut client = connect(&url);
    client
        .batch_execute("CREATE TABLE members (email text PRIMARY KEY, n int NOT NULL)")
        .unwrap();
    for (n, email) in ["b@example.com", "a@example.com"].iter().enumerate() {
        let n = n as i32;
        client
            .execute("INSERT INTO members VALUES ($1, $2)", &[email, &n])
            .unwrap();
    }
    let rows: Vec<(String, i32)> = client
        .query("SELECT email, n FROM members ORDER BY email", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        rows,
        [
            ("a@example.com".to_owned(), 1),
            ("b@example.com".to_owned(), 0)
        ]
    );

    // The same rows through the harness, and over the unix socket.
    assert_eq!(
        cluster.sql(db, "SELECT email, NULL FROM members ORDER BY email"),
        text(&[
            &[Some("a@example.com"), None],
            &[Some("b@example.com"), None]
        ])
    );
    let mut over_socket = postgres::Config::new()
        .host_path(cluster.socket_dir())
        .port(cluster.port())
        .user("rostersync")
        .dbname(db)
        .connect(NoTls)
        .expect("connect over the unix socket");
    let count: i64 = over_socket
        .query_one("SELECT count(*) FROM members", &[])
        .unwrap()
        .get(0);
    assert_eq!(count, 2);

    // Another fresh database is another, empty one.
    let other = cluster.fresh_database();
    assert_ne!(other, url);
    let err = connect(&other)
        .query("SELECT * FROM members", &[])
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&postgres::error::SqlState::UNDEFINED_TABLE),
        "{err}"
    );

    // Only 127.0.0.1, no TLS unless asked.
    assert_eq!(
        cluster.sql(db, "SHOW listen_addresses"),
        text(&[&[Some("127.0.0.1")]])
    );
    assert_eq!(cluster.sql(db, "SHOW ssl"), text(&[&[Some("off")]]));
}

#[test]
fn a_restart_keeps_the_data_and_the_port() {
    let cluster = Cluster::start();
    let db = cluster.fresh_database_name();
    cluster.sql(
        &db,
        "CREATE TABLE t (v text); INSERT INTO t VALUES ('kept')",
    );
    let mut before = cluster.client(&db);
    let (port, pid) = (cluster.port(), cluster.pid().expect("running"));

    cluster.stop();
    assert_eq!(cluster.pid(), None);
    assert!(process_gone(pid), "the postmaster {pid} outlived stop()");
    assert!(
        cluster.try_sql(&db, "SELECT 1").is_err(),
        "a stopped server answered"
    );
    assert!(
        before.simple_query("SELECT 1").is_err(),
        "a session survived the stop"
    );

    cluster.start_again();
    assert_eq!(cluster.port(), port);
    assert_ne!(cluster.pid(), Some(pid));
    assert_eq!(
        cluster.sql(&db, "SELECT v FROM t"),
        text(&[&[Some("kept")]])
    );

    cluster.restart();
    cluster.sql(&db, "INSERT INTO t VALUES ('committed')");
    // A crash-like stop: the next start recovers what was committed.
    cluster.stop_immediate();
    cluster.start_again();
    assert_eq!(
        cluster.sql(&db, "SELECT v FROM t ORDER BY v"),
        text(&[&[Some("committed")], &[Some("kept")]])
    );
    assert!(
        cluster.log().contains("not properly shut down"),
        "no crash recovery in the log:\n{}",
        cluster.log()
    );
}

#[test]
fn terminate_user_ends_every_session_of_that_user_only() {
    let cluster = Cluster::shared();
    let db = cluster.fresh_database_name();
    cluster.create_user("pgh_node_a");
    cluster.create_user("pgh_node_b");
    let mut a1 = connect(&cluster.url_as("pgh_node_a", &db));
    let mut a2 = connect(&cluster.url_as("pgh_node_a", &db));
    let mut b = connect(&cluster.url_as("pgh_node_b", &db));
    for client in [&mut a1, &mut a2, &mut b] {
        client.simple_query("SELECT 1").unwrap();
    }

    assert_eq!(cluster.terminate_user("pgh_node_a"), 2);
    for client in [&mut a1, &mut a2] {
        assert!(
            client.simple_query("SELECT 1").is_err(),
            "a terminated session answered"
        );
    }
    b.simple_query("SELECT 1")
        .expect("another user's session was ended");
    assert_eq!(cluster.terminate_user("pgh_node_a"), 0);

    // Not blocked: the user can log in again.
    connect(&cluster.url_as("pgh_node_a", &db))
        .simple_query("SELECT 1")
        .unwrap();
}

#[test]
fn nologin_keeps_a_user_out_and_cut_off_also_ends_its_sessions() {
    let cluster = Cluster::shared();
    let db = cluster.fresh_database_name();
    let url = cluster.url_as("pgh_node_c", &db);
    cluster.create_user("pgh_node_c");
    let mut open = connect(&url);

    cluster.block_user("pgh_node_c");
    let refused = |url: &str| {
        let Err(err) = Client::connect(url, NoTls) else {
            panic!("a NOLOGIN role logged in");
        };
        let message = err.as_db_error().map(|e| e.message().to_owned());
        assert_eq!(
            message.as_deref(),
            Some("role \"pgh_node_c\" is not permitted to log in"),
            "{err}"
        );
    };
    refused(&url);
    // NOLOGIN leaves the open session alone.
    open.simple_query("SELECT 1").unwrap();

    cluster.unblock_user("pgh_node_c");
    let mut second = connect(&url);
    assert_eq!(cluster.cut_off_user("pgh_node_c"), 2);
    for client in [&mut open, &mut second] {
        assert!(client.simple_query("SELECT 1").is_err());
    }
    refused(&url);
}

#[test]
fn a_dropped_cluster_leaves_no_process_and_no_files() {
    let cluster = Cluster::start();
    let pid = cluster.pid().expect("running");
    let mut session = cluster.client("postgres");
    session.simple_query("SELECT 1").unwrap();
    let children = children_of(pid);
    // checkpointer, background writer, WAL writer, ..., and our session's backend.
    assert!(children.len() >= 3, "postmaster children: {children:?}");
    let dir = cluster.socket_dir().to_owned();
    assert!(dir.join("data/PG_VERSION").is_file());

    drop(cluster);
    assert!(
        process_gone(pid),
        "the postmaster {pid} outlived its Cluster"
    );
    for child in children {
        assert!(
            process_gone(child),
            "postmaster child {child} outlived its Cluster"
        );
    }
    assert!(!dir.exists(), "{} was left behind", dir.display());
    assert!(session.simple_query("SELECT 1").is_err());
}

const HELPER: &str = "ROSTERSYNC_PG_HARNESS_HELPER";

/// The other half of `the_server_dies_with_its_killed_test_process`: starts a cluster in a
/// test process of its own, says where, and waits to be killed.
#[test]
#[ignore = "a helper: the_server_dies_with_its_killed_test_process runs it"]
fn helper_starts_a_cluster_and_waits_to_be_killed() {
    if std::env::var_os(HELPER).is_none() {
        return;
    }
    let cluster = Cluster::start();
    println!(
        "PG_HELPER {} {} {}",
        cluster.pid().unwrap(),
        cluster.socket_dir().display(),
        pg_cluster::initdb_template().unwrap().display()
    );
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(120));
}

/// SIGKILL of a test process (no Drop, no exit handler) still takes its server down: the
/// parent-death signal of the postmaster.
#[test]
fn the_server_dies_with_its_killed_test_process() {
    let mut helper = Command::new(std::env::current_exe().unwrap())
        .args([
            "pg_harness::helper_starts_a_cluster_and_waits_to_be_killed",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the test binary");
    let stdout = helper.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // After libtest's "test ... " on the same line.
            if let Some(at) = line.find("PG_HELPER ") {
                let _ = tx.send(line[at + "PG_HELPER ".len()..].to_owned());
            }
        }
    });
    let Ok(line) = rx.recv_timeout(Duration::from_secs(120)) else {
        let _ = helper.kill();
        let mut stderr = String::new();
        let _ = helper.stderr.take().unwrap().read_to_string(&mut stderr);
        panic!("the helper started no cluster:\n{stderr}");
    };
    let mut parts = line.split(' ');
    let pid: u32 = parts.next().unwrap().parse().unwrap();
    let dir = PathBuf::from(parts.next().unwrap());
    let template = PathBuf::from(parts.next().unwrap());
    let children = children_of(pid);
    assert!(!process_gone(pid), "the helper's postmaster is not running");
    assert!(!children.is_empty());

    helper.kill().unwrap();
    helper.wait().unwrap();
    let gone = wait_until(Duration::from_secs(30), || {
        process_gone(pid) && children.iter().all(|&c| process_gone(c))
    });
    // Nobody else removes them: the helper died before its Drop and exit handler.
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&template);
    assert!(
        gone,
        "the postmaster {pid} (or a child of it) outlived its killed test process"
    );
}

/// A client that trusts `ca_pem` asks the server at `port` for TLS (SSLRequest) and
/// completes a handshake for 127.0.0.1.
fn tls_handshake(port: u16, ca_pem: &str) -> Result<(), String> {
    use tokio_rustls::rustls::pki_types::pem::PemObject as _;
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
    use tokio_rustls::rustls::{ClientConfig, ClientConnection, RootCertStore, crypto};

    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("CA PEM"))
        .expect("CA certificate");
    let config =
        ClientConfig::builder_with_provider(Arc::new(crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // SSLRequest: length 8, code 80877103.
    tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .unwrap();
    let mut answer = [0u8];
    tcp.read_exact(&mut answer).unwrap();
    assert_eq!(answer[0], b'S', "the server does not offer TLS");
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = ClientConnection::new(Arc::new(config), name).unwrap();
    while tls.is_handshaking() {
        tls.complete_io(&mut tcp).map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[test]
fn a_tls_cluster_serves_the_given_certificate() {
    let ca = crate::tls::ca();
    let (cert, key) = ca.server_pems(&["127.0.0.1", "localhost"]);
    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("cert.pem"), cert).unwrap();
    std::fs::write(files.path().join("key.pem"), key).unwrap();
    let cluster = Cluster::start_tls(files.path().join("cert.pem"), files.path().join("key.pem"));

    assert_eq!(cluster.sql("postgres", "SHOW ssl"), text(&[&[Some("on")]]));
    tls_handshake(cluster.port(), &ca.pem).expect("a TLS handshake trusting the test CA");
    let err = tls_handshake(cluster.port(), &crate::tls::ca().pem)
        .expect_err("a client trusting another CA accepted the certificate");
    // (Both test CAs have one name: the signature is what fails.)
    assert!(err.contains("invalid peer certificate"), "{err}");
    // TLS stays on after a restart (the same settings).
    cluster.restart();
    tls_handshake(cluster.port(), &ca.pem).expect("TLS after a restart");
}

#[test]
fn a_server_that_cannot_start_fails_the_test_with_its_log() {
    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("cert.pem"), "not a certificate").unwrap();
    std::fs::write(files.path().join("key.pem"), "not a key").unwrap();
    let panic = std::panic::catch_unwind(|| {
        Cluster::start_tls(files.path().join("cert.pem"), files.path().join("key.pem"))
    })
    .expect_err("a server with a garbage certificate started");
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("did not start"), "{message}");
    assert!(
        message.contains("could not load server certificate file"),
        "the message lacks the server's log: {message}"
    );
}
