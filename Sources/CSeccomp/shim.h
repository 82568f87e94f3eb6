// libseccomp (Debian's libseccomp-dev) for Swift. The rule macros (SCMP_A2 and friends) build
// structs in variadic calls Swift cannot make, so the few shapes s7commd uses are functions here.
#ifndef CSECCOMP_SHIM_H
#define CSECCOMP_SHIM_H
#include <seccomp.h>
#include <stdint.h>

/// The action that kills the whole process (SCMP_ACT_KILL_PROCESS).
static inline uint32_t cseccomp_act_kill_process(void) { return SCMP_ACT_KILL_PROCESS; }
static inline uint32_t cseccomp_act_allow(void) { return SCMP_ACT_ALLOW; }
/// Delivers SIGSYS to the calling thread, with the system call's number in si_syscall (SCMP_ACT_TRAP).
static inline uint32_t cseccomp_act_trap(void) { return SCMP_ACT_TRAP; }
/// Fails the call with `error` (SCMP_ACT_ERRNO).
static inline uint32_t cseccomp_act_errno(uint16_t error) { return SCMP_ACT_ERRNO(error); }

/// Allows `syscall` when argument `arg` has none of the bits of `mask` set.
static inline int cseccomp_allow_if_bits_clear(scmp_filter_ctx ctx, int syscall, unsigned int arg, uint64_t mask) {
    struct scmp_arg_cmp cmp = {arg, SCMP_CMP_MASKED_EQ, mask, 0};
    return seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, syscall, 1, &cmp);
}

/// Allows `syscall` when argument `arg` has every bit of `mask` set.
static inline int cseccomp_allow_if_bits_set(scmp_filter_ctx ctx, int syscall, unsigned int arg, uint64_t mask) {
    struct scmp_arg_cmp cmp = {arg, SCMP_CMP_MASKED_EQ, mask, mask};
    return seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, syscall, 1, &cmp);
}

/// Applies `action` to `syscall` when argument `arg` is not `value` (a deny-list's argument rule).
static inline int cseccomp_rule_if_not_equal(scmp_filter_ctx ctx, uint32_t action, int syscall, unsigned int arg, uint64_t value) {
    struct scmp_arg_cmp cmp = {arg, SCMP_CMP_NE, value, 0};
    return seccomp_rule_add_array(ctx, action, syscall, 1, &cmp);
}

/// Allows `syscall` when argument `arg` equals `value`.
static inline int cseccomp_allow_if_equal(scmp_filter_ctx ctx, int syscall, unsigned int arg, uint64_t value) {
    struct scmp_arg_cmp cmp = {arg, SCMP_CMP_EQ, value, 0};
    return seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, syscall, 1, &cmp);
}
#endif
