#!/usr/bin/env python3
"""What the agent adds to a container's start, and how big the images are.

    python3 benchmarks/images_startup.py [--reps N] [IMAGE COMMAND]...

For each image, `podman run --rm IMAGE COMMAND` through the image's agent entrypoint and the same
with the entrypoint replaced by the command itself (`--entrypoint`), alternated, N times each
(default 10); prints the medians, the difference (target: at most 200 ms added) and the image's
size. With no arguments it measures the images the test suite builds (tests/test_images.py):
the Python base with `true`, the Debian example with `/bin/true`, and the bundle's own size.
Containers run as podman runs them by default; nothing is installed or pulled.
"""
import argparse
import shutil
import statistics
import subprocess
import sys
import time

DEFAULT = ["localhost/preload-python:test", "true", "localhost/preload-debian-job:test", "/bin/true"]
BUNDLE = "localhost/preload-bundle:test"


def timed(cmd):
    started = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - started


def size_mb(podman, image):
    r = subprocess.run([podman, "image", "inspect", "--format", "{{.Size}}", image], capture_output=True, text=True)
    return int(r.stdout) / 1e6 if r.returncode == 0 else None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("pairs", nargs="*", metavar="IMAGE COMMAND")
    args = parser.parse_args()
    pairs = args.pairs or DEFAULT
    if len(pairs) % 2:
        parser.error("give IMAGE COMMAND pairs")
    podman = shutil.which("podman")
    if podman is None:
        sys.exit("podman is not installed")
    print(f"{'image':40} {'agent ms':>9} {'bare ms':>8} {'added ms':>9} {'size MB':>8}")
    for image, command in zip(pairs[::2], pairs[1::2]):
        run = [podman, "run", "--rm", "--network", "none"]
        timed(run + [image, command])  # first start: file system layers come into the page cache
        agent, bare = [], []
        for _ in range(args.reps):
            agent.append(timed(run + [image, command]))
            bare.append(timed(run + ["--entrypoint", command, image]))
        a, b = statistics.median(agent) * 1e3, statistics.median(bare) * 1e3
        print(f"{image:40} {a:9.0f} {b:8.0f} {a - b:9.0f} {size_mb(podman, image) or 0:8.1f}")
    bundle = None if args.pairs else size_mb(podman, BUNDLE)
    if bundle is not None:
        print(f"{BUNDLE:40} {'':9} {'':8} {'':9} {bundle:8.1f}  (/opt/preload)")
    print("target: at most 200 ms added")


if __name__ == "__main__":
    main()
