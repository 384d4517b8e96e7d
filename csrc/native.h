/* native.h: small system calls the Python side needs that the standard library lacks. */

/* Orphans of the application are re-parented to us, so that we reap them (tini's -s). */
int preload_set_subreaper(void);
