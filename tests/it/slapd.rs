//! A throwaway OpenLDAP server for the LDAP source's tests: Debian's `slapd`, a generated
//! LDIF `slapadd`ed into a temp mdb, a `slapd.conf` in the temp dir, a free 127.0.0.1
//! port, StartTLS (and ldaps) with a certificate from a test CA (rcgen). Killed on drop.
//!
//! Never skipped: a missing or failing slapd fails the test with its output (`.ci/run` /
//! `tests/run.sh` install `slapd` and `ldap-utils`).

#![allow(dead_code)]

use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SUFFIX: &str = "dc=example,dc=com";
pub const ROOT_DN: &str = "cn=admin,dc=example,dc=com";
pub const ROOT_PW: &str = "admin-secret";
/// A reader account (the one the tests' configs bind as) and its password.
pub const READER_DN: &str = "cn=rostersync,ou=service,dc=example,dc=com";
pub const READER_PW: &str = "reader-pw-7f3a";
/// An account whose searches the server cuts at 3 entries (`limits`).
pub const LIMITED_DN: &str = "cn=limited,ou=service,dc=example,dc=com";
pub const LIMITED_PW: &str = "limited-pw-1c2d";

/// How the server is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tls {
    /// `ldap://` with StartTLS offered, and `ldaps://` on a second port.
    Yes,
    /// No certificate: StartTLS is refused.
    No,
}

/// A running slapd.
pub struct Slapd {
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    pub port: u16,
    /// The `ldaps://` port (Tls::Yes only).
    pub ldaps_port: u16,
    /// The test CA's certificate (PEM file).
    pub ca_file: PathBuf,
    tls: Tls,
}

/// Finds a program in PATH or /usr/sbin (root's PATH may not have it on every system).
fn program(name: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':').chain([
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
    ]) {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "{name} is not installed: install Debian's slapd and ldap-utils \
         (tests/run.sh does it when run as root)"
    );
}

/// A test CA and a server certificate for 127.0.0.1 and localhost: (ca, cert, key) PEMs.
fn certificates() -> (String, String, String) {
    let ca = crate::tls::ca();
    let (cert, key) = ca.server_pems(&["127.0.0.1", "localhost"]);
    (ca.pem, cert, key)
}
/// The entries every test directory starts with: the suffix, the OUs, the service
/// accounts.
pub fn base_ldif() -> String {
    format!(
        "dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n\n\
         dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people\n\n\
         dn: ou=groups,{SUFFIX}\nobjectClass: organizationalUnit\nou: groups\n\n\
         dn: ou=service,{SUFFIX}\nobjectClass: organizationalUnit\nou: service\n\n\
         dn: {READER_DN}\nobjectClass: person\ncn: rostersync\nsn: service\nuserPassword: {READER_PW}\n\n\
         dn: {LIMITED_DN}\nobjectClass: person\ncn: limited\nsn: service\nuserPassword: {LIMITED_PW}\n\n"
    )
}

impl Slapd {
    /// Loads `ldif` (after [`base_ldif`]) and starts slapd; waits until it accepts
    /// connections. Panics with slapd's output when it cannot start.
    pub fn start(ldif: &str, tls: Tls) -> Slapd {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::create_dir(d.join("db")).expect("db dir");
        let (ca, cert, key) = certificates();
        let ca_file = d.join("ca.pem");
        std::fs::write(&ca_file, ca).unwrap();
        std::fs::write(d.join("cert.pem"), cert).unwrap();
        std::fs::write(d.join("key.pem"), key).unwrap();
        let tls_conf = match tls {
            Tls::Yes => format!(
                "TLSCACertificateFile {0}/ca.pem\nTLSCertificateFile {0}/cert.pem\n\
                 TLSCertificateKeyFile {0}/key.pem\n",
                d.display()
            ),
            Tls::No => String::new(),
        };
        let conf = format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/nis.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             modulepath /usr/lib/ldap\n\
             moduleload back_mdb\n\
             pidfile {dir}/slapd.pid\n\
             argsfile {dir}/slapd.args\n\
             {tls_conf}\
             sizelimit unlimited\n\
             database mdb\n\
             maxsize 1073741824\n\
             suffix \"{SUFFIX}\"\n\
             rootdn \"{ROOT_DN}\"\n\
             rootpw {ROOT_PW}\n\
             directory {dir}/db\n\
             index objectClass eq\n\
             index cn,uid,mail eq\n\
             limits dn.exact=\"{LIMITED_DN}\" size=3 size.pr=3 size.prtotal=3\n\
             access to attrs=userPassword by anonymous auth by * none\n\
             access to * by * read\n",
            dir = d.display()
        );
        std::fs::write(d.join("slapd.conf"), conf).unwrap();
        let mut f = std::fs::File::create(d.join("data.ldif")).unwrap();
        f.write_all(base_ldif().as_bytes()).unwrap();
        f.write_all(ldif.as_bytes()).unwrap();
        drop(f);
        let out = Command::new(program("slapadd"))
            .arg("-q")
            .arg("-f")
            .arg(d.join("slapd.conf"))
            .arg("-l")
            .arg(d.join("data.ldif"))
            .output()
            .expect("run slapadd");
        assert!(
            out.status.success(),
            "slapadd failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut s = Slapd {
            dir,
            child: None,
            port: 0,
            ldaps_port: 0,
            ca_file,
            tls,
        };
        s.run();
        s
    }

    /// Starts (or restarts) slapd on fresh ports.
    fn run(&mut self) {
        for _attempt in 0..3 {
            self.port = crate::harness::free_port();
            self.ldaps_port = crate::harness::free_port();
            let mut urls = format!("ldap://127.0.0.1:{}/", self.port);
            if self.tls == Tls::Yes {
                urls += &format!(" ldaps://127.0.0.1:{}/", self.ldaps_port);
            }
            let mut child = Command::new(program("slapd"))
                .arg("-h")
                .arg(&urls)
                .arg("-f")
                .arg(self.dir.path().join("slapd.conf"))
                .arg("-d")
                .arg("0")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn slapd");
            let end = Instant::now() + Duration::from_secs(15);
            let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
            while Instant::now() < end {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    self.child = Some(child);
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let out = child.wait_with_output().expect("slapd output");
            eprintln!(
                "slapd did not start on port {}: {}",
                self.port,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        panic!("slapd could not be started (see its output above)");
    }

    /// `ldap://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// `ldaps://127.0.0.1:PORT`.
    pub fn ldaps_url(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.ldaps_port)
    }

    /// Stops slapd (the data stays).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs `f` with a connection bound as the root DN (to change the directory).
    pub fn admin<T>(
        &self,
        f: impl for<'a> FnOnce(
            &'a mut ldap3::Ldap,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + 'a>>,
    ) -> T {
        let url = self.url();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let (conn, mut ldap) = ldap3::LdapConnAsync::new(&url).await.expect("connect");
            ldap3::drive!(conn);
            ldap.simple_bind(ROOT_DN, ROOT_PW)
                .await
                .expect("bind")
                .success()
                .expect("root bind");
            let out = f(&mut ldap).await;
            let _ = ldap.unbind().await;
            out
        })
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A person entry under ou=people.
pub fn person(uid: &str, mail: Option<&str>, employee_number: Option<&str>) -> String {
    let mut s = format!(
        "dn: uid={uid},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\n"
    );
    if let Some(m) = mail {
        s += &format!("mail: {m}\n");
    }
    if let Some(n) = employee_number {
        s += &format!("employeeNumber: {n}\n");
    }
    s + "\n"
}

/// A groupOfNames under ou=groups whose members are these DNs.
pub fn group_of_names(cn: &str, members: &[String]) -> String {
    let mut s = format!("dn: cn={cn},ou=groups,{SUFFIX}\nobjectClass: groupOfNames\ncn: {cn}\n");
    for m in members {
        s += &format!("member: {m}\n");
    }
    s + "\n"
}

/// A posixGroup under ou=groups with these memberUid values.
pub fn posix_group(cn: &str, gid: u32, uids: &[&str]) -> String {
    let mut s = format!(
        "dn: cn={cn},ou=groups,{SUFFIX}\nobjectClass: posixGroup\ncn: {cn}\ngidNumber: {gid}\n"
    );
    for u in uids {
        s += &format!("memberUid: {u}\n");
    }
    s + "\n"
}

/// The DN of a person.
pub fn person_dn(uid: &str) -> String {
    format!("uid={uid},ou=people,{SUFFIX}")
}

/// The DN of a group.
pub fn group_dn(cn: &str) -> String {
    format!("cn={cn},ou=groups,{SUFFIX}")
}
