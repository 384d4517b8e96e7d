/* main.c: preload-trace, the tracer and its launcher (see trace.h). */
#include "trace.h"

#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "exec") == 0) return pl_launch(argc, argv);
    if (argc > 1 && strcmp(argv[1], "serve") == 0) return pl_serve(argc, argv);
    fprintf(stderr, "preload-trace: started by preload itself (`preload run`); see `preload run --help`\n");
    return 2;
}
