// libcap (Debian's libcap-dev) for Swift: cap_get_proc, cap_clear, cap_set_proc, cap_free.
#ifndef CLIBCAP_SHIM_H
#define CLIBCAP_SHIM_H
#include <sys/capability.h>
#endif
