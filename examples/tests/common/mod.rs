//! Shared by the tests that run an example binary as a child process.

use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

/// Asks the child to stop with `SIGTERM`, as `kill` or a container runtime
/// would, and waits up to `timeout` for it to exit. Kills it and panics if
/// it does not exit in time.
pub fn terminate(child: &mut Child, timeout: Duration) -> ExitStatus {
    let pid = Pid::from_child(child);
    kill_process(pid, Signal::TERM).expect("send SIGTERM");
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the child did not exit within {timeout:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
