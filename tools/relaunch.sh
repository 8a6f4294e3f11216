#!/usr/bin/env bash
# Run a command again and again until its run is done: the relaunch loop of a preemptible job.
#
#   tools/relaunch.sh [--done PATH] [--max-failures N] -- COMMAND [ARGS...]
#
# Exit status 75 (flatrob_jax.distributed.PREEMPTED_EXIT_CODE: "preempted, checkpoint saved,
# resumable") restarts the command at once; any other failure restarts it too, at most
# --max-failures times in a row (default 3; waits 30 s, then 60 s, ...), because a crashed host
# of a pod takes the other hosts' processes down with it. The loop ends with status 0 when the
# command succeeds and PATH (e.g. WORKDIR/summary.json; a local path or gs:// URI, checked
# through flatrob_jax.fileio) exists, or with the command's status once failures are exhausted.
# Every host of a pod runs its own loop; the restarted processes meet again at the coordinator.
#
# SIGTERM, SIGHUP or SIGINT to this loop (a VM shutting down signals every process; Ctrl-C in
# the job's tmux pane) means "stop": the command, signalled too, saves and exits, and the loop
# then exits with the command's status instead of restarting it.
set -uo pipefail

done_path=""
max_failures="${FLATROB_MAX_FAILURES:-3}"
python="${PYTHON:-python}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --done) done_path="$2"; shift 2 ;;
    --max-failures) max_failures="$2"; shift 2 ;;
    --) shift; break ;;
    *) echo "relaunch.sh: unknown option '$1' (expected --done PATH, --max-failures N, --)" >&2
       exit 2 ;;
  esac
done
if [[ $# -eq 0 ]]; then
  echo "usage: relaunch.sh [--done PATH] [--max-failures N] -- COMMAND [ARGS...]" >&2
  exit 2
fi

is_done() {
  [[ -z "$done_path" ]] && return 1
  "$python" -c 'import sys; from flatrob_jax import fileio
sys.exit(0 if fileio.exists(sys.argv[1]) else 1)' "$done_path"
}

stop=""
trap 'stop=SIGTERM' TERM
trap 'stop=SIGHUP' HUP
trap 'stop=SIGINT' INT

stop_if_signalled() {
  if [[ -n "$stop" ]]; then
    echo "relaunch.sh: $stop received: not restarting (exit status $1)" >&2
    exit "$1"
  fi
}

failures=0
attempt=0
status=0
while true; do
  stop_if_signalled "$status"
  if is_done; then
    echo "relaunch.sh: $done_path exists: done" >&2
    exit 0
  fi
  attempt=$((attempt + 1))
  echo "relaunch.sh: attempt $attempt: $*" >&2
  "$@"
  status=$?
  stop_if_signalled "$status"
  if [[ $status -eq 0 ]]; then
    if [[ -n "$done_path" ]] && ! is_done; then
      echo "relaunch.sh: the command succeeded but $done_path does not exist" >&2
      exit 1
    fi
    exit 0
  elif [[ $status -eq 75 ]]; then
    failures=0
    echo "relaunch.sh: preempted (exit status 75): resuming" >&2
  else
    failures=$((failures + 1))
    if [[ $failures -gt $max_failures ]]; then
      echo "relaunch.sh: failed $failures times in a row (last exit status $status): giving up" >&2
      exit "$status"
    fi
    echo "relaunch.sh: exit status $status (failure $failures of $max_failures):" \
      "retrying in $((30 * failures)) s" >&2
    sleep $((30 * failures))
  fi
done
