#include <sys/prctl.h>

#include "native.h"

int preload_set_subreaper(void) { return prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); }
