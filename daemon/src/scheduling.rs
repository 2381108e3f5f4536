//! Thread scheduling choices that need no privilege: hashing threads may run nicer than the
//! rest, and request threads ask for a short time slice so their wake-ups preempt hashing.

use std::time::Duration;

/// Lowers the calling thread's priority by `niceness` (`hash.niceness`, capped at 19). A nicer
/// hashing thread is preempted at once by a cheap request's wake-up, but also loses its core
/// to any busy thread of normal priority in its scheduling group (see BENCHMARKS.md). On
/// Linux `setpriority` on a thread id renices that thread only; it needs no privilege.
pub fn lower_thread_priority(niceness: i32) -> std::io::Result<()> {
    if niceness == 0 {
        return Ok(());
    }
    use nix::libc::{getpriority, id_t, setpriority, PRIO_PROCESS};
    let tid = nix::unistd::gettid().as_raw() as id_t;
    nix::errno::Errno::clear();
    // SAFETY: plain syscalls about this thread's own id; no memory is passed.
    let current = unsafe { getpriority(PRIO_PROCESS, tid) };
    if current == -1 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(0) {
            return Err(err);
        }
    }
    let target = current.saturating_add(niceness).min(19);
    // SAFETY: as above.
    if unsafe { setpriority(PRIO_PROCESS, tid, target) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The time slice request threads ask for: short, so the kernel (EEVDF, Linux 6.12 and
/// later) lets a request thread that wakes preempt a hashing thread at once instead of after
/// the hashing thread's slice. Older kernels ignore it.
pub const REQUEST_SLICE: Duration = Duration::from_micros(100);

/// Asks for [`REQUEST_SLICE`] on the calling thread, keeping its policy (normal) and nice
/// value; `sched_setattr` on a normal thread's own slice needs no privilege.
pub fn shorten_time_slice() -> std::io::Result<()> {
    /// The kernel's `struct sched_attr`, as of its first version (48 bytes).
    #[repr(C)]
    struct SchedAttr {
        /// `size`: this struct's length, telling the kernel which version it is.
        size: u32,
        /// `sched_policy`: the scheduling policy (`SCHED_OTHER` here).
        policy: u32,
        /// `sched_flags`: `SCHED_FLAG_*` options (none here).
        flags: u64,
        /// `sched_nice`: the nice value, for the normal policies; passed on unchanged.
        nice: i32,
        /// `sched_priority`: the static priority of the real-time policies; 0 otherwise.
        priority: u32,
        /// `sched_runtime`: for a normal thread, the time slice it asks for (nanoseconds).
        runtime: u64,
        /// `sched_deadline`: `SCHED_DEADLINE` only; unused here.
        deadline: u64,
        /// `sched_period`: `SCHED_DEADLINE` only; unused here.
        period: u64,
    }
    use nix::libc::{getpriority, syscall, SYS_sched_setattr, PRIO_PROCESS};
    let tid = nix::unistd::gettid().as_raw();
    // SAFETY: getpriority reads this thread's own nice value; no memory is passed.
    let nice = unsafe { getpriority(PRIO_PROCESS, tid as nix::libc::id_t) };
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy: 0, // SCHED_OTHER
        flags: 0,
        nice,
        priority: 0,
        runtime: REQUEST_SLICE.as_nanos() as u64,
        deadline: 0,
        period: 0,
    };
    // SAFETY: `attr` is a valid sched_attr of the size it declares, alive for the call.
    if unsafe { syscall(SYS_sched_setattr, tid, &attr as *const SchedAttr, 0u32) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This thread's nice value, from /proc (field 19 of `stat`).
    fn own_niceness() -> i32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        let after_name = stat.rsplit_once(')').unwrap().1;
        after_name
            .split_whitespace()
            .nth(16)
            .unwrap()
            .parse()
            .unwrap()
    }

    #[test]
    fn hashing_threads_can_run_nicer_than_the_rest() {
        std::thread::spawn(|| {
            let before = own_niceness();
            lower_thread_priority(10).unwrap();
            assert_eq!(own_niceness(), (before + 10).min(19));
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_short_slice_keeps_the_nice_value() {
        std::thread::spawn(|| {
            lower_thread_priority(3).unwrap();
            let before = own_niceness();
            shorten_time_slice().unwrap();
            assert_eq!(own_niceness(), before);
        })
        .join()
        .unwrap();
    }
}
