/* An empty shared object: what every LD_PRELOAD tool pays before doing anything (the dynamic
 * loader finding, mapping and relocating one more object in every process). */
int benchmark_empty_preload_marker;
