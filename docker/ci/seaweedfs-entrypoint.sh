#!/bin/sh
# Entrypoint of the CI stand-in for chrislusf/seaweedfs, with the official image's behaviour for what compose uses:
# `server ARGS` runs `weed server` with the official image's defaults first (data in /data; ARGS given later win,
# as Go flags do), and anything else runs weed with the arguments as given.
set -e
case "$1" in
  server)
    shift
    exec weed -logtostderr=true server -dir=/data -volume.max=0 -master.volumePreallocate -master.volumeSizeLimitMB=1024 "$@"
    ;;
  *)
    exec weed "$@"
    ;;
esac
