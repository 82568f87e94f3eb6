// The SIGSYS reporter of a seccomp sandbox (sandbox.c).
#ifndef CS7SYS_SANDBOX_H
#define CS7SYS_SANDBOX_H

/// Installs a SIGSYS handler (SA_SIGINFO) that, when a seccomp filter
/// traps a system call, writes one line to standard error:
///   "<prefix>sandbox violation: system call <number> (arch 0x<audit arch>)"
/// then ends the process with SIGSYS (default action restored, signal unblocked, re-sent to
/// the calling thread). Only async-signal-safe calls run in the handler. `prefix` is copied
/// (at most 95 bytes). Returns 0, or -1 with errno set.
int cs7_install_sandbox_reporter(const char *prefix);

#endif
