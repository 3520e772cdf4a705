//! A throwaway PostgreSQL cluster: `initdb` in a temporary directory,
//! `pg_ctl start` on a free loopback port, stopped (and the directory
//! removed) when the value is dropped, or by a watcher process when the
//! test process ends without dropping it (a shared cluster, a kill -9).
//!
//! `initdb` and `pg_ctl` refuse to run as root: as root they run as the
//! `postgres` system user (`runuser -u postgres --`, else `setpriv`), with
//! a data directory that user owns.

use std::fmt;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The variable that names the directory of `initdb`, `pg_ctl` and
/// `postgres`, when they are not under `/usr/lib/postgresql/*/bin`.
pub const BIN_VAR: &str = "APIMAIL_PG_BIN";

/// The variable that turns "PostgreSQL is unavailable" from a skip into a
/// failure (`cargo xtask ci` sets it once it has installed PostgreSQL).
pub const REQUIRED_VAR: &str = "APIMAIL_PG_REQUIRED";

/// The role the tests connect as; it has a password (scram-sha-256).
pub const USER: &str = "apimail";

/// Why there is no cluster: printed by [`skip_or_panic`].
#[derive(Debug, Clone)]
pub struct Unavailable(pub String);

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A running cluster.
#[derive(Debug)]
pub struct PgCluster {
    /// The temporary directory (data, socket, log, password file).
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    password: String,
    as_postgres: bool,
    /// `fsync`, `synchronous_commit` and `full_page_writes` at their
    /// defaults (on), as a production server runs, rather than off.
    durable: bool,
    /// Stops the cluster when this process ends without dropping it.
    watcher: Option<Child>,
    databases: AtomicUsize,
}

impl PgCluster {
    /// Starts a new cluster, or says why it cannot.
    pub fn start() -> Result<PgCluster, Unavailable> {
        Self::start_with(false)
    }

    /// Like [`start`](Self::start), with commits synced to disk as a
    /// production server does (`fsync`, `synchronous_commit` and
    /// `full_page_writes` on): for measuring, not for tests.
    pub fn start_durable() -> Result<PgCluster, Unavailable> {
        Self::start_with(true)
    }

    fn start_with(durable: bool) -> Result<PgCluster, Unavailable> {
        let bin = find_bin()?;
        let as_postgres = is_root();
        if as_postgres && !user_exists("postgres") {
            return Err(Unavailable(
                "running as root and there is no `postgres` system user to run initdb as".into(),
            ));
        }
        let mut last = None;
        // A free port can be taken by someone else before the server binds it.
        for _ in 0..3 {
            match Self::start_once(&bin, as_postgres, durable) {
                Ok(cluster) => return Ok(cluster),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Unavailable("no attempt made".into())))
    }

    /// One cluster for the whole test process, started on first use;
    /// stopped by its watcher when the process ends.
    pub fn shared() -> Result<&'static PgCluster, Unavailable> {
        static SHARED: OnceLock<Result<PgCluster, Unavailable>> = OnceLock::new();
        SHARED
            .get_or_init(PgCluster::start)
            .as_ref()
            .map_err(Clone::clone)
    }

    fn start_once(bin: &Path, as_postgres: bool, durable: bool) -> Result<PgCluster, Unavailable> {
        let temp = tempfile::Builder::new()
            .prefix("apimail-pg-")
            .tempdir()
            .map_err(|e| Unavailable(format!("cannot create a temporary directory: {e}")))?;
        let dir = temp.keep();
        let mut cluster = PgCluster {
            dir,
            bin: bin.to_owned(),
            port: free_port()?,
            password: random_password(),
            as_postgres,
            durable,
            watcher: None,
            databases: AtomicUsize::new(0),
        };
        // From here on, Drop stops what was started and removes the directory.
        cluster.watcher = Some(cluster.spawn_watcher()?);
        cluster.init()?;
        cluster.run_start()?;
        Ok(cluster)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// initdb as the owner of the directory, with a password for [`USER`].
    fn init(&self) -> Result<(), Unavailable> {
        let pwfile = self.dir.join("password");
        std::fs::write(&pwfile, &self.password)
            .map_err(|e| Unavailable(format!("cannot write {}: {e}", pwfile.display())))?;
        if self.as_postgres {
            chown_to_postgres(&self.dir)?;
            chown_to_postgres(&pwfile)?;
        }
        let mut initdb = self.command("initdb");
        initdb
            .arg("-D")
            .arg(self.data())
            .args(["-U", USER, "--auth=scram-sha-256", "--no-sync"])
            .args(["-E", "UTF8", "--no-locale"])
            .arg(format!("--pwfile={}", pwfile.display()));
        run(&mut initdb, "initdb")
    }

    fn run_start(&self) -> Result<(), Unavailable> {
        let sync = if self.durable {
            ""
        } else {
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
        };
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -c unix_socket_directories='{}' \
             {sync}-c max_connections=200",
            self.port,
            self.dir.display()
        );
        let mut start = self.command("pg_ctl");
        start
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.join("log"))
            .args(["-o", &options, "-w", "-t", "120", "start"]);
        run(&mut start, "pg_ctl start").map_err(|e| {
            let log = std::fs::read_to_string(self.dir.join("log")).unwrap_or_default();
            Unavailable(format!("{e}; server log:\n{log}"))
        })
    }

    /// A watcher: waits for this process to end, then stops the cluster
    /// and removes its directory.
    fn spawn_watcher(&self) -> Result<Child, Unavailable> {
        let stop = self.shell_stop();
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop}; rm -rf '{dir}'",
            pid = std::process::id(),
            dir = self.dir.display(),
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Unavailable(format!("cannot start sh: {e}")))
    }

    /// The shell command that stops the server at once.
    fn shell_stop(&self) -> String {
        let pg_ctl = self.bin.join("pg_ctl");
        let prefix = if self.as_postgres {
            "runuser -u postgres -- "
        } else {
            ""
        };
        format!(
            "{prefix}'{}' -D '{}' -m immediate stop >/dev/null 2>&1",
            pg_ctl.display(),
            self.data().display()
        )
    }

    /// `program` from the cluster's binaries, as the `postgres` user when
    /// this process is root, in the cluster's directory.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut command = if self.as_postgres {
            as_postgres_user(&path)
        } else {
            Command::new(path)
        };
        command
            .current_dir(&self.dir)
            .env("LC_ALL", "C")
            .env_remove("PGDATA")
            .stdin(Stdio::null());
        command
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// [`USER`]'s password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// A URL of database `db` without the password.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{db}", self.port)
    }

    /// A URL of database `db` with the password in it.
    pub fn url_with_password(&self, db: &str) -> String {
        format!(
            "postgres://{USER}:{}@127.0.0.1:{}/{db}",
            self.password, self.port
        )
    }

    /// Stops the server (fast: its connections are closed at once),
    /// keeping its data, as a database that goes away; [`restart`](Self::restart)
    /// brings it back on the same port. Use a cluster of the test's own
    /// ([`start_or_skip`]): a shared one serves other tests meanwhile.
    pub fn stop(&self) -> Result<(), Unavailable> {
        let mut stop = self.command("pg_ctl");
        stop.arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "-t", "60", "stop"]);
        run(&mut stop, "pg_ctl stop")
    }

    /// Starts the server again after [`stop`](Self::stop), on the same port.
    pub fn restart(&self) -> Result<(), Unavailable> {
        self.run_start()
    }

    /// Runs `sql` in database `db` with psql, as [`USER`].
    pub fn sql(&self, db: &str, sql: &str) -> Result<(), Unavailable> {
        let mut psql = self.command("psql");
        psql.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
            .args(["-p", &self.port.to_string(), "-U", USER, "-d", db])
            .args(["-c", sql])
            .env("PGPASSWORD", &self.password);
        run(&mut psql, "psql")
    }

    /// Creates a new, empty database (named after `prefix`), for one test,
    /// and returns its name.
    pub fn new_database(&self, prefix: &str) -> Result<String, Unavailable> {
        let n = self.databases.fetch_add(1, Ordering::Relaxed);
        let clean: String = prefix
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        let name = format!("{clean}_{n}");
        let mut psql = self.command("psql");
        psql.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
            .args(["-p", &self.port.to_string(), "-U", USER, "-d", "postgres"])
            .args(["-c", &format!("CREATE DATABASE {name}")])
            .env("PGPASSWORD", &self.password);
        run(&mut psql, "psql CREATE DATABASE")?;
        Ok(name)
    }

    /// Runs `sql` in database `db` with psql (for tests that shape rows
    /// directly, e.g. another node's).
    pub fn execute(&self, db: &str, sql: &str) -> Result<(), Unavailable> {
        let mut psql = self.command("psql");
        psql.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
            .args(["-p", &self.port.to_string(), "-U", USER, "-d", db])
            .args(["-c", sql])
            .env("PGPASSWORD", &self.password);
        run(&mut psql, "psql")
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = Command::new("sh").args(["-c", &self.shell_stop()]).status();
        if let Some(mut watcher) = self.watcher.take() {
            let _ = watcher.kill();
            let _ = watcher.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The cluster to test against, or `None` after printing loudly why the
/// test is skipped; with [`REQUIRED_VAR`] set, a missing cluster fails the
/// test instead.
pub fn skip_or_panic(test: &str) -> Option<&'static PgCluster> {
    available(test, PgCluster::shared())
}

/// Like [`skip_or_panic`], with a cluster of the test's own (stopped when
/// it is dropped).
pub fn start_or_skip(test: &str) -> Option<PgCluster> {
    available(test, PgCluster::start())
}

fn available<T>(test: &str, cluster: Result<T, Unavailable>) -> Option<T> {
    match cluster {
        Ok(cluster) => Some(cluster),
        Err(why) if std::env::var_os(REQUIRED_VAR).is_some_and(|v| !v.is_empty()) => {
            panic!("{test}: PostgreSQL is required ({REQUIRED_VAR} is set) but unavailable: {why}")
        }
        Err(why) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("SKIPPED {test}: PostgreSQL is unavailable: {why}");
                eprintln!(
                    "hint: install Debian's `postgresql` package (cargo xtask ci does, as root), \
                     or set {BIN_VAR} to the directory of initdb and pg_ctl"
                );
            }
            None
        }
    }
}

/// The directory of `initdb`: `$APIMAIL_PG_BIN`, else the newest
/// `/usr/lib/postgresql/<version>/bin`, else `pg_config --bindir`.
fn find_bin() -> Result<PathBuf, Unavailable> {
    if let Some(dir) = std::env::var_os(BIN_VAR).filter(|v| !v.is_empty()) {
        let dir = PathBuf::from(dir);
        return if dir.join("initdb").is_file() {
            Ok(dir)
        } else {
            Err(Unavailable(format!(
                "{BIN_VAR}={} holds no initdb",
                dir.display()
            )))
        };
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|dir| dir.join("initdb").is_file());
    from_pg_config.ok_or_else(|| {
        Unavailable("no initdb under /usr/lib/postgresql/*/bin nor from pg_config".into())
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn user_exists(name: &str) -> bool {
    Command::new("id")
        .arg("-u")
        .arg(name)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `path` run as the `postgres` user: `runuser`, else `setpriv`.
fn as_postgres_user(path: &Path) -> Command {
    if Path::new("/usr/sbin/runuser").exists() || Path::new("/sbin/runuser").exists() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(path);
        command
    } else {
        let mut command = Command::new("setpriv");
        command
            .args([
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                "--",
            ])
            .arg(path);
        command
    }
}

fn chown_to_postgres(path: &Path) -> Result<(), Unavailable> {
    let status = Command::new("chown")
        .arg("postgres:")
        .arg(path)
        .status()
        .map_err(|e| Unavailable(format!("cannot run chown: {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(Unavailable(format!(
            "chown postgres {} failed ({status})",
            path.display()
        )))
    }
}

fn free_port() -> Result<u16, Unavailable> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Unavailable(format!("no free loopback port: {e}")))
}

fn random_password() -> String {
    let mut bytes = [0u8; 16];
    // The cluster lives only on loopback for one test run; the temp
    // directory's name is random enough when /dev/urandom is missing.
    if let Ok(mut file) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut file, &mut bytes);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn run(command: &mut Command, what: &str) -> Result<(), Unavailable> {
    let output = command
        .output()
        .map_err(|e| Unavailable(format!("cannot run {what}: {e}")))?;
    if output.status.success() {
        return Ok(());
    }
    Err(Unavailable(format!(
        "{what} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout).trim(),
        String::from_utf8_lossy(&output.stderr).trim()
    )))
}
