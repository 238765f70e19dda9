//! A stand-in machine for tests of code over [`System`]: the programs on its
//! `PATH`, what each does when it runs, and the free space of its
//! filesystems. It records every command line it was asked to run, so a test
//! sees what a flow ran as well as what it wrote.
//!
//! A program's behaviour is a closure: a stand-in installer writes the node's
//! files (under a test's root) the way the real one changes `/sys/module`, so
//! a flow that reads the node afterwards sees what a real node would show.
//! Running a program that is not on the fake `PATH` fails as `Command` does
//! (`NotFound`), and a guarded run holds the inherited file (the lock) open
//! only while it runs, as the real process group does.

use super::{Output, System};
use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What a program does: its output, or an error of `run`.
pub type Behaviour = Box<dyn Fn(&[String]) -> io::Result<Output>>;

/// One command line the fake was asked to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ran {
    pub argv: Vec<String>,
    /// Run with [`System::run_guarded`] (in a process group, with the lock).
    pub guarded: bool,
    /// The timeout a guarded run was given.
    pub timeout: Option<Duration>,
}

/// The fake machine. Programs live in `/usr/bin`; free space is 100 GB
/// unless [`FakeSystem::free_mb`] says otherwise.
#[derive(Default)]
pub struct FakeSystem {
    programs: HashMap<String, Behaviour>,
    free_mb: Vec<(String, u64)>,
    tmpdir: Option<String>,
    /// Programs that never finish: a guarded run of one times out.
    hanging: Vec<String>,
    pid: u32,
    ran: RefCell<Vec<Ran>>,
}

/// A finished program's output, for behaviours.
pub fn exited(status: i32, stdout: &str) -> io::Result<Output> {
    Ok(Output {
        status: Some(status),
        stdout: stdout.to_string(),
        stderr: String::new(),
    })
}

impl FakeSystem {
    pub fn new() -> FakeSystem {
        FakeSystem {
            pid: 4242,
            ..FakeSystem::default()
        }
    }

    /// Puts `name` on `PATH`; running it exits 0 and prints nothing.
    pub fn program(self, name: &str) -> FakeSystem {
        self.behaving(name, |_| exited(0, ""))
    }

    /// Puts `name` on `PATH`, doing `behaviour` when it runs.
    pub fn behaving(
        mut self,
        name: &str,
        behaviour: impl Fn(&[String]) -> io::Result<Output> + 'static,
    ) -> FakeSystem {
        self.programs.insert(name.to_string(), Box::new(behaviour));
        self
    }

    /// Puts `name` on `PATH` as a program that never finishes: a guarded run
    /// kills it at its timeout (a `TimedOut` error, as the real machine
    /// reports it), after `behaviour` did what it got done meanwhile.
    pub fn hanging(
        mut self,
        name: &str,
        behaviour: impl Fn(&[String]) -> io::Result<Output> + 'static,
    ) -> FakeSystem {
        self.hanging.push(name.to_string());
        self.behaving(name, behaviour)
    }

    /// Free space of the filesystems whose paths end in `suffix`.
    pub fn free_mb(mut self, suffix: &str, mb: u64) -> FakeSystem {
        self.free_mb.push((suffix.to_string(), mb));
        self
    }

    /// The machine's `$TMPDIR`.
    pub fn tmpdir(mut self, dir: &Path) -> FakeSystem {
        self.tmpdir = Some(dir.to_string_lossy().into_owned());
        self
    }

    /// Every command line run so far, in order.
    pub fn ran(&self) -> Vec<Ran> {
        self.ran.borrow().clone()
    }

    /// The program names of the command lines run so far.
    pub fn ran_programs(&self) -> Vec<String> {
        self.ran().iter().map(|r| r.argv[0].clone()).collect()
    }

    fn dispatch(
        &self,
        argv: &[String],
        guarded: bool,
        timeout: Option<Duration>,
    ) -> io::Result<Output> {
        let (program, _) = argv
            .split_first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command line"))?;
        self.ran.borrow_mut().push(Ran {
            argv: argv.to_vec(),
            guarded,
            timeout,
        });
        let name = Path::new(program).file_name().map(|n| n.to_string_lossy());
        match name.and_then(|n| self.programs.get(n.as_ref())) {
            Some(behaviour) => behaviour(argv),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("No such file or directory: {program}"),
            )),
        }
    }
}

impl System for FakeSystem {
    fn find_program(&self, name: &str) -> Option<PathBuf> {
        self.programs
            .contains_key(name)
            .then(|| Path::new("/usr/bin").join(name))
    }

    fn run(&self, argv: &[String]) -> io::Result<Output> {
        self.dispatch(argv, false, None)
    }

    fn free_bytes(&self, path: &Path) -> io::Result<u64> {
        let mb = self
            .free_mb
            .iter()
            .find(|(suffix, _)| path.ends_with(suffix.trim_start_matches('/')))
            .map_or(100_000, |(_, mb)| *mb);
        Ok(mb << 20)
    }

    fn run_guarded(
        &self,
        argv: &[String],
        inherit: &File,
        timeout: Duration,
        started: &mut dyn FnMut(u32),
    ) -> io::Result<Output> {
        // The real run passes this file on to the child: it must be open.
        inherit.metadata()?;
        started(self.pid);
        let output = self.dispatch(argv, true, Some(timeout))?;
        let name = Path::new(&argv[0]).file_name().map(|n| n.to_string_lossy());
        if name.is_some_and(|n| self.hanging.iter().any(|h| *h == n)) {
            return Err(super::timed_out(timeout, &output));
        }
        Ok(output)
    }

    fn tmpdir(&self) -> Option<String> {
        self.tmpdir.clone()
    }
}
