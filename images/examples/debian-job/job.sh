#!/bin/sh
# A batch job mixing the image's own dynamic programs (watched by the hook) and busybox's static
# applets (watched by the tracer). It exits with status 3.
echo "job: start"
cat /etc/shadow >/dev/null
busybox sh -c 'busybox echo drift >/etc/job-drift'
busybox nc -w 2 127.0.0.1 9 </dev/null || echo "job: nothing listens on port 9"
echo "job: done"
exit 3
