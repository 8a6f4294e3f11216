#!/usr/bin/env bash
# Cloud TPU kit for flatrob_jax: create a TPU VM (one host or a pod slice), set up every worker,
# put a tfds dataset in a bucket, run train / analyze / a sweep on all workers at once, watch
# TensorBoard, fetch the logs, delete. docs/cloud_tpu.md walks through it.
#
#   tools/tpu_vm.sh [--dry-run] COMMAND [OPTIONS] [-- ARGS...]
#
# Commands:
#   create             gcloud compute tpus tpu-vm create (--type, --version, --spot)
#   setup              on every worker: a venv with jax[tpu] and flatrob_jax[gcp] (from --ref
#                      of --repo, or from --wheel), tmux, and tools/relaunch.sh
#   data               build the tfds dataset --dataset on worker 0, copy it to --bucket
#   train -- ARGS      python -m flatrob_jax.train --workdir W ARGS on all workers
#   analyze -- ARGS    python -m flatrob_jax.analyze --workdir W ARGS on all workers
#   sweep -- ARGS      the runs of python -m flatrob_jax.sweep --workdir W ARGS on all workers:
#                      its training lines (--print_commands: one source), then --only analyze,
#                      then --only report
#   status             gcloud compute tpus tpu-vm describe
#   attach             tmux attach to the job on one worker (--worker, --job)
#   tensorboard        tensorboard --logdir W, here
#   logs               copy every worker's logs into ./tpu_logs/NAME/
#   delete             gcloud compute tpus tpu-vm delete
#
# Options (environment variable in brackets):
#   --name NAME [TPU_NAME]       --zone ZONE [TPU_ZONE]      --project ID [TPU_PROJECT]
#   --type TYPE [TPU_TYPE]       v4-8 (default), v4-32, v5e-8 (= v5litepod-8), v6e-8, ...
#   --version V [TPU_VERSION]    TPU software version; by default from --type
#   --spot                       a Spot VM (preemptible: see tools/relaunch.sh)
#   --workdir URI [FLATROB_WORKDIR]  gs://BUCKET/... (train/analyze/sweep; a local path only
#                                with --allow-local-workdir: it dies with the VM and the other
#                                workers cannot see it)
#   --repo URL [FLATROB_REPO]    --ref REF [FLATROB_REF] (default main)    --wheel PATH|gs://...
#   --jax SPEC [FLATROB_JAX]     pip requirement for JAX on TPU (default jax[tpu])
#   --dataset NAME --bucket gs://BUCKET/tfds     (data)
#   --worker N (attach, default 0)    --job train|analyze|sweep (attach, default train)
#   --env NAME=VALUE             exported in the job's script on every worker (repeatable), e.g.
#                                JAX_DEFAULT_MATMUL_PRECISION=highest for analyses on TPU
#   --dry-run                    print every gcloud (and local) command instead of running it
#
# Each job runs in a tmux session "flatrob-JOB" on every worker, through tools/relaunch.sh (a
# preempted run exits with status 75 and resumes), logging to ~/flatrob/logs/JOB.workerN.log.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DRY_RUN=0
NAME="${TPU_NAME:-}"
ZONE="${TPU_ZONE:-}"
PROJECT="${TPU_PROJECT:-}"
TYPE="${TPU_TYPE:-v4-8}"
VERSION="${TPU_VERSION:-}"
SPOT=0
WORKDIR="${FLATROB_WORKDIR:-}"
ALLOW_LOCAL=0
REPO="${FLATROB_REPO:-https://github.com/flatrob-jax/flatrob_jax}"
REF="${FLATROB_REF:-main}"
WHEEL=""
JAX_SPEC="${FLATROB_JAX:-jax[tpu]}"
DATASET=""
BUCKET=""
WORKER=0
JOB="train"
EXPORTS=()
# shellcheck disable=SC2088  # the tilde is expanded by the workers' shell, not here
REMOTE_HOME='~/flatrob'

METADATA="http://metadata.google.internal/computeMetadata/v1/instance/attributes"

die() { echo "tpu_vm.sh: $*" >&2; exit 2; }

# One word for a POSIX shell: as it is when safe, else in single quotes (like shlex.quote).
quote1() {
  local s="$1"
  if [[ -n "$s" && "$s" =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
    printf '%s' "$s"
  else
    printf "'%s'" "${s//\'/\'\\\'\'}"
  fi
}

# Shell-quote each argument and join them with spaces (for commands run on the workers).
quote() {
  local out="" a
  for a in "$@"; do out+="$(quote1 "$a") "; done
  printf '%s' "${out% }"
}

# Run a command (an argv), or print it shell-quoted on one line with --dry-run.
run() {
  if [[ $DRY_RUN -eq 1 ]]; then
    printf '%s\n' "$(quote "$@")"
  else
    "$@"
  fi
}

need() { [[ -n "${!1}" ]] || die "$2"; }

scope() {
  need NAME "set --name or TPU_NAME"
  need ZONE "set --zone or TPU_ZONE"
  SCOPE=("--zone=$ZONE")
  if [[ -n "$PROJECT" ]]; then SCOPE+=("--project=$PROJECT"); fi
}

accelerator_type() {
  case "$TYPE" in
    v5e-*) echo "v5litepod-${TYPE#v5e-}" ;;
    *) echo "$TYPE" ;;
  esac
}

default_version() {
  case "$(accelerator_type)" in
    v4-*) echo "tpu-ubuntu2204-base" ;;
    v5litepod-*) echo "v2-alpha-tpuv5-lite" ;;
    v5p-*) echo "v2-alpha-tpuv5" ;;
    v6e-*) echo "v2-alpha-tpuv6e" ;;
    *) die "no default TPU software version for --type $TYPE; pass --version" ;;
  esac
}

# Run a command line (a string, parsed by bash on the worker) on the workers.
on_workers() {
  local workers="$1" command="$2"
  run gcloud compute tpus tpu-vm ssh "$NAME" "${SCOPE[@]}" "--worker=$workers" \
    "--command=$command"
}

require_workdir() {
  need WORKDIR "set --workdir (a gs:// URI every worker can see)"
  if [[ "$WORKDIR" != gs://* && $ALLOW_LOCAL -eq 0 ]]; then
    die "--workdir '$WORKDIR' is not a gs:// URI: multi-host runs need a workdir every host" \
      "can see (gs:// or a shared mount); pass --allow-local-workdir for a shared mount"
  fi
}

# Start a job on every worker in a detached tmux session "flatrob-JOB": its script (the bash
# lines given, after the common preamble) is written here, copied to ~/flatrob/JOB.sh on every
# worker and run there. With --dry-run the script is printed as a here-document, so the whole
# output is itself a bash script.
start_job() {
  local job="$1"
  shift
  local script session="flatrob-$job"
  script="$(printf '%s\n' "#!/usr/bin/env bash" \
    "# flatrob_jax $job job, written by tools/tpu_vm.sh" \
    "set -o pipefail" "source $REMOTE_HOME/venv/bin/activate" "export FLATROB_DISTRIBUTED=on" \
    "${EXPORTS[@]+"${EXPORTS[@]}"}" \
    "mkdir -p $REMOTE_HOME/logs" \
    "W=\$(curl -sf -H Metadata-Flavor:Google $METADATA/agent-worker-number || hostname)" \
    "{" "$@" "} 2>&1 | tee -a $REMOTE_HOME/logs/$job.worker\$W.log")"
  local file
  if [[ $DRY_RUN -eq 1 ]]; then
    file="/tmp/tpu_vm.$job.sh"
    printf "cat > %s <<'EOF'\n%s\nEOF\n" "$file" "$script"
  else
    file="$(mktemp -t "tpu_vm.$job.XXXXXX.sh")"
    printf '%s\n' "$script" > "$file"
  fi
  run gcloud compute tpus tpu-vm scp "$file" "$NAME:flatrob/$job.sh" "${SCOPE[@]}" --worker=all
  if [[ $DRY_RUN -eq 0 ]]; then rm -f "$file"; fi
  local busy="tmux session $session is already running (tools/tpu_vm.sh attach --job $job)"
  on_workers all "if tmux has-session -t $session 2>/dev/null; then echo '$busy' >&2; exit 1; fi;\
 tmux new-session -d -s $session bash $REMOTE_HOME/$job.sh"
}

cmd_create() {
  scope
  local version="${VERSION:-$(default_version)}"
  local args=(gcloud compute tpus tpu-vm create "$NAME" "${SCOPE[@]}"
              "--accelerator-type=$(accelerator_type)" "--version=$version")
  if [[ $SPOT -eq 1 ]]; then args+=(--spot); fi
  run "${args[@]}"
}

cmd_setup() {
  scope
  local install
  on_workers all "mkdir -p $REMOTE_HOME"
  run gcloud compute tpus tpu-vm scp "$HERE/relaunch.sh" "$NAME:flatrob/relaunch.sh" \
    "${SCOPE[@]}" --worker=all
  if [[ -n "$WHEEL" ]]; then
    local wheel_name
    wheel_name="$(basename "$WHEEL")"
    if [[ "$WHEEL" == gs://* ]]; then
      on_workers all "gcloud storage cp $(quote "$WHEEL") $REMOTE_HOME/"
    else
      run gcloud compute tpus tpu-vm scp "$WHEEL" "$NAME:flatrob/$wheel_name" \
        "${SCOPE[@]}" --worker=all
    fi
    install="$REMOTE_HOME/$(quote "${wheel_name}[gcp]")"
  else
    install="$(quote "flatrob_jax[gcp] @ git+$REPO@$REF")"
  fi
  local check="import jax; print(jax.process_index(), jax.local_device_count(), jax.devices())"
  on_workers all "set -e; sudo apt-get update -qq\
 && sudo apt-get install -y -qq python3-venv tmux git >/dev/null\
 && chmod +x $REMOTE_HOME/relaunch.sh && python3 -m venv $REMOTE_HOME/venv\
 && source $REMOTE_HOME/venv/bin/activate && pip install -q -U pip\
 && pip install -q $(quote "$JAX_SPEC") && pip install -q $install && python -c $(quote "$check")"
}

cmd_data() {
  scope
  need DATASET "set --dataset (a tfds name, e.g. cifar10)"
  need BUCKET "set --bucket (gs://BUCKET/tfds)"
  [[ "$BUCKET" == gs://* ]] || die "--bucket '$BUCKET' must be a gs:// URI"
  # tfds builds datasets with TensorFlow; training and analysis read them without it.
  local build="import sys, tensorflow_datasets as tfds; tfds.builder(sys.argv[1],"
  build+=" data_dir=\"/tmp/tfds\").download_and_prepare(file_format=\"array_record\")"
  on_workers 0 "set -e; source $REMOTE_HOME/venv/bin/activate && pip install -q tensorflow-cpu\
 && python -c $(quote "$build") $(quote "$DATASET")\
 && gcloud storage cp -r $(quote "/tmp/tfds/$DATASET") $(quote "${BUCKET%/}/")"
}

cmd_train() {
  scope
  require_workdir
  start_job train "  $REMOTE_HOME/relaunch.sh --done $(quote "${WORKDIR%/}/summary.json") -- \\" \
    "    python -m flatrob_jax.train --workdir $(quote "$WORKDIR") $(quote "$@")"
}

cmd_analyze() {
  scope
  require_workdir
  start_job analyze "  $REMOTE_HOME/relaunch.sh -- \\" \
    "    python -m flatrob_jax.analyze --workdir $(quote "$WORKDIR") $(quote "$@")"
}

cmd_sweep() {
  scope
  require_workdir
  local sweep
  sweep="python -m flatrob_jax.sweep --workdir $(quote "$WORKDIR") $(quote "$@")"
  # The whole sweep in one process per host, every host taking part (study.run_plan: the
  # plan's jobs in order, the warm start first, each trained over the whole slice, the
  # analyses shared out among the hosts, the report); a preemption saves and exits 75, and the
  # relaunch loop starts it again until results.csv (written last) exists.
  start_job sweep "  $REMOTE_HOME/relaunch.sh --done $(quote "$WORKDIR/results.csv") -- $sweep"
}

cmd_status() {
  scope
  run gcloud compute tpus tpu-vm describe "$NAME" "${SCOPE[@]}"
}

cmd_attach() {
  scope
  run gcloud compute tpus tpu-vm ssh "$NAME" "${SCOPE[@]}" "--worker=$WORKER" -- -t \
    tmux attach -t "flatrob-$JOB"
}

cmd_tensorboard() {
  need WORKDIR "set --workdir"
  run tensorboard --logdir "$WORKDIR"
}

cmd_logs() {
  scope
  run mkdir -p "tpu_logs/$NAME"
  run gcloud compute tpus tpu-vm scp "$NAME:flatrob/logs/*" "tpu_logs/$NAME/" \
    "${SCOPE[@]}" --worker=all
}

cmd_delete() {
  scope
  run gcloud compute tpus tpu-vm delete "$NAME" "${SCOPE[@]}" --quiet
}

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; }

main() {
  local command=""
  local args=()
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --dry-run) DRY_RUN=1 ;;
      --name) NAME="$2"; shift ;;
      --zone) ZONE="$2"; shift ;;
      --project) PROJECT="$2"; shift ;;
      --type) TYPE="$2"; shift ;;
      --version) VERSION="$2"; shift ;;
      --spot) SPOT=1 ;;
      --workdir) WORKDIR="$2"; shift ;;
      --allow-local-workdir) ALLOW_LOCAL=1 ;;
      --repo) REPO="$2"; shift ;;
      --ref) REF="$2"; shift ;;
      --wheel) WHEEL="$2"; shift ;;
      --jax) JAX_SPEC="$2"; shift ;;
      --dataset) DATASET="$2"; shift ;;
      --bucket) BUCKET="$2"; shift ;;
      --worker) WORKER="$2"; shift ;;
      --job) JOB="$2"; shift ;;
      --env) [[ "$2" =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env '$2': expected NAME=VALUE"
             EXPORTS+=("export ${2%%=*}=$(quote1 "${2#*=}")"); shift ;;
      -h|--help) usage; exit 0 ;;
      --) shift; args=("$@"); break ;;
      -*) die "unknown option '$1' (tools/tpu_vm.sh --help)" ;;
      *) [[ -z "$command" ]] || die "one command at a time, got '$command' and '$1'"
         command="$1" ;;
    esac
    shift
  done
  case "$command" in
    create|setup|data|status|attach|tensorboard|logs|delete) "cmd_$command" ;;
    train|analyze|sweep) "cmd_$command" "${args[@]+"${args[@]}"}" ;;
    "") usage >&2; exit 2 ;;
    *) die "unknown command '$command' (create, setup, data, train, analyze, sweep, status," \
         "attach, tensorboard, logs, delete)" ;;
  esac
}

main "$@"
