#!/bin/sh
# Entrypoint of the CI stand-in for the official redis image: a first argument that is an option or a .conf file
# means redis-server; redis-server runs with protected mode off unless the arguments say otherwise (the official
# image compiles it off; Debian's build keeps it on, which refuses clients from other hosts when no password is set).
set -e
if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
  set -- redis-server "$@"
fi
if [ "$1" = redis-server ]; then
  case " $* " in
    *" --protected-mode "*) ;;
    *) set -- "$@" --protected-mode no ;;
  esac
fi
exec "$@"
