//! The Python peers: a virtual environment under `target/` with the pinned
//! packages of `bench/peers/requirements.txt`, installed from PyPI.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{Context, Result, output, run};

/// The peers' virtual environment, ready to run the scripts.
#[derive(Debug)]
pub(crate) struct Peers {
    /// The venv's `python`.
    pub(crate) python: PathBuf,
    /// `bench/peers/`, where the scripts are.
    pub(crate) scripts: PathBuf,
    /// How long `pip install` took, if it ran now.
    pub(crate) install_time: Option<Duration>,
    /// The installed distributions, `name==version`.
    pub(crate) packages: Vec<String>,
    /// The venv's size on disk, in bytes.
    pub(crate) disk_bytes: u64,
    /// `Python 3.x.y`.
    pub(crate) python_version: String,
}

impl Peers {
    /// A command running the peer script `name` (in `bench/peers/`).
    pub(crate) fn script(&self, name: &str) -> Command {
        let mut cmd = Command::new(&self.python);
        cmd.arg(self.scripts.join(name));
        // Loopback only: no proxy may see the fakes' traffic.
        for key in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"] {
            cmd.env_remove(key).env_remove(key.to_ascii_lowercase());
        }
        cmd
    }
}

/// Creates (or reuses) `target/bench-venv` with the pinned requirements.
/// The venv is rebuilt when the requirements file changes.
pub(crate) fn prepare(root: &Path, target: &Path) -> Result<Peers> {
    let scripts = root.join("bench/peers");
    let requirements = scripts.join("requirements.txt");
    let wanted = fs::read_to_string(&requirements)
        .with_context(|| format!("cannot read {}", requirements.display()))?;
    let venv = target.join("bench-venv");
    let python = venv.join("bin/python");
    let stamp = venv.join("installed-requirements.txt");

    let mut install_time = None;
    if fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
        eprintln!(
            "==> bench: installing the Python peers into {}",
            venv.display()
        );
        let _ = fs::remove_dir_all(&venv);
        run(Command::new(python3()).args(["-m", "venv"]).arg(&venv)).map_err(|e| {
            e.with_hint(
                "install Python 3 with its venv module (Debian: apt-get install python3-venv)",
            )
        })?;
        let started = Instant::now();
        run(Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(["--require-virtualenv", "--no-input", "-r"])
            .arg(&requirements))
        .map_err(|e| e.with_hint("the peers come from PyPI: check the network and the pins"))?;
        install_time = Some(started.elapsed());
        fs::write(&stamp, &wanted).with_context(|| format!("cannot write {}", stamp.display()))?;
    }

    let packages = output(Command::new(&python).args(["-m", "pip", "freeze", "--quiet"]))?
        .lines()
        .map(str::to_owned)
        .collect();
    let python_version = output(Command::new(&python).arg("--version"))?
        .trim()
        .to_owned();
    Ok(Peers {
        python,
        scripts,
        install_time,
        packages,
        disk_bytes: disk_usage(&venv),
        python_version,
    })
}

/// `python3`, or `$PYTHON` if set.
fn python3() -> PathBuf {
    std::env::var_os("PYTHON").map_or_else(|| "python3".into(), PathBuf::from)
}

/// The total size of the regular files under `dir`.
fn disk_usage(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => disk_usage(&entry.path()),
            Ok(kind) if kind.is_file() => entry.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}
