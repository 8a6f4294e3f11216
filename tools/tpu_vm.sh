#!/usr/bin/env bash
# Cloud TPU kit for flatrob_jax: check the prerequisites, create a TPU VM (one host or a pod
# slice), set up every worker, put a tfds dataset in a bucket, run train / analyze / a sweep on
# all workers at once, watch TensorBoard, fetch the logs, recreate a preempted TPU, delete.
# docs/cloud_tpu.md walks through it, from a new Google Cloud account to a study.
#
#   tools/tpu_vm.sh [--dry-run] COMMAND [OPTIONS] [-- ARGS...]
#
# Commands:
#   doctor             check before any cost: gcloud signed in, project, Cloud TPU API, the type
#                      offered in the zone, quota, the bucket (exists, same region, writable by
#                      the TPU VM's service account); each failure prints the command that fixes it
#   types              the TPU types this kit knows: software version and zones of each
#   create             doctor, then the TPU: a queued resource for Spot, v5e and v6e (waits until
#                      it is ACTIVE, with progress), else gcloud compute tpus tpu-vm create
#   setup              on every worker: Python (uv, --python, >= 3.11), a venv with jax[tpu] and
#                      flatrob_jax[gcp] (from --ref of --repo, or from --wheel), tmux,
#                      tools/relaunch.sh; stops with the error of any worker that fails
#   data               build the tfds dataset --dataset on worker 0 in a venv of its own (with
#                      TensorFlow, which never enters the training venv), copy it to --bucket
#   train -- ARGS      python -m flatrob_jax.train --workdir W ARGS on all workers
#   analyze -- ARGS    python -m flatrob_jax.analyze --workdir W ARGS on all workers
#   sweep -- ARGS      the runs of python -m flatrob_jax.sweep --workdir W ARGS on all workers:
#                      its training lines (--print_commands: one source), then --only analyze,
#                      then --only report
#   ray-head           start a Ray head on worker 0 (the fleet's driver runs there; docs/fleet.md)
#   ray-join           join every worker to the Ray cluster at --address (one Ray node per host,
#                      with the custom resource flatrob_tpu_host=1: --resources tpu:host)
#   recreate           after a preemption: delete, create, setup and start the last job again
#                      (as create, setup and the job were last run from here for --name)
#   status             the TPU (and its queued resource): gcloud ... describe
#   attach             tmux attach to the job on one worker (--worker, --job)
#   tensorboard        tensorboard --logdir W, here
#   logs               copy every worker's logs into ./tpu_logs/NAME/
#   delete             delete the TPU (and its queued resource)
#
# Options (environment variable in brackets):
#   --name NAME [TPU_NAME]       --zone ZONE [TPU_ZONE]      --project ID [TPU_PROJECT]
#   --type TYPE [TPU_TYPE]       v4-8 (default), v4-32, v5e-8 (= v5litepod-8), v5p-8, v6e-8, ...
#                                (tools/tpu_vm.sh types lists them with their zones)
#   --version V [TPU_VERSION]    TPU software version; by default from --type
#   --spot                       a Spot VM (preemptible: see recreate and tools/relaunch.sh)
#   --service-account EMAIL [TPU_SERVICE_ACCOUNT]  the TPU VM's service account (default: the
#                                project's Compute Engine default service account)
#   --wait-minutes N             create: how long to wait for a queued resource (default 120)
#   --skip-doctor                create: skip the checks
#   --workdir URI [FLATROB_WORKDIR]  gs://BUCKET/... (train/analyze/sweep; a local path only
#                                with --allow-local-workdir: it dies with the VM and the other
#                                workers cannot see it)
#   --repo URL [FLATROB_REPO]    --ref REF [FLATROB_REF] (default main)    --wheel PATH|gs://...
#   --jax SPEC [FLATROB_JAX]     pip requirement for JAX on TPU (default jax[tpu])
#   --python V [FLATROB_PYTHON]  the workers' Python, installed by uv (default 3.11; >= 3.11)
#   --bucket gs://BUCKET[/PATH] [FLATROB_BUCKET]  data: where the dataset goes (gs://B/tfds);
#                                doctor: the bucket to check (else the --workdir's bucket)
#   --dataset NAME               data: a tfds name, e.g. cifar10
#   --worker N (attach, default 0)    --job train|analyze|sweep (attach; recreate: the job to
#                                start, default the last one started)
#   --address HOST:PORT          ray-join: the Ray head's address (ray-head prints it)
#   --env NAME=VALUE             exported in the job's script on every worker (repeatable), e.g.
#                                JAX_DEFAULT_MATMUL_PRECISION=highest for analyses on TPU
#   --dry-run                    print every gcloud (and local) command instead of running it
#
# Each job runs in a tmux session "flatrob-JOB" on every worker, through tools/relaunch.sh (a
# preempted run exits with status 75 and resumes), and writes its own log,
# ~/flatrob/logs/JOB.workerN.log (the tmux pane only shows it). What create, setup and the jobs
# were is kept here, in $FLATROB_TPU_STATE/NAME (default ~/.config/flatrob_tpu/NAME), for recreate.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DRY_RUN=0
NAME="${TPU_NAME:-}"
ZONE="${TPU_ZONE:-}"
PROJECT="${TPU_PROJECT:-}"
TYPE="${TPU_TYPE:-v4-8}"
VERSION="${TPU_VERSION:-}"
SPOT=0
SERVICE_ACCOUNT="${TPU_SERVICE_ACCOUNT:-}"
WAIT_MINUTES=120
SKIP_DOCTOR=0
WORKDIR="${FLATROB_WORKDIR:-}"
ALLOW_LOCAL=0
REPO="${FLATROB_REPO:-https://github.com/flatrob-jax/flatrob_jax}"
REF="${FLATROB_REF:-main}"
WHEEL=""
JAX_SPEC="${FLATROB_JAX:-jax[tpu]}"
PYTHON_VERSION="${FLATROB_PYTHON:-3.11}"
DATASET=""
BUCKET="${FLATROB_BUCKET:-}"
WORKER=0
JOB="train"
JOB_GIVEN=0
EXPORTS=()
STATE_ROOT="${FLATROB_TPU_STATE:-${XDG_CONFIG_HOME:-$HOME/.config}/flatrob_tpu}"
POLL_SECONDS="${FLATROB_TPU_POLL_SECONDS:-30}"
# shellcheck disable=SC2088  # the tilde is expanded by the workers' shell, not here
REMOTE_HOME='~/flatrob'
# The Ray of flatrob_jax[ray] (pyproject.toml): the driver's and every node's must match.
RAY_SPEC="ray==2.60.0"
RAY_ADDRESS=""
SCOPES="https://www.googleapis.com/auth/cloud-platform"  # access is then decided by IAM alone

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

# --------------------------------------------------------------------------- the TPU types
# What this kit knows, from Google's pages (read 2026-12-07): "TPU regions and zones"
# (https://cloud.google.com/tpu/docs/regions-zones, the North America tables and Europe's v6e
# zone) and "TPU software versions" (https://cloud.google.com/tpu/docs/runtimes). The same table,
# with the dates, is in docs/cloud_tpu.md; tools/tpu_vm.sh types prints it.
#   family|--type|software version|zones
TYPE_TABLE="\
v4|v4-8, v4-16, v4-32, ... (N TensorCores = N/2 chips)|tpu-ubuntu2204-base|us-central2-b
v5e|v5e-1, -4, -8, -16, ... -256 (= v5litepod-N; N chips)|v2-alpha-tpuv5-lite|us-central1-a us-south1-a us-west1-c us-west4-a
v5p|v5p-8, v5p-16, ... (N TensorCores = N/2 chips)|v2-alpha-tpuv5|us-central1-a us-east5-a
v6e|v6e-1, -4, -8, -16, ... -256 (N chips)|v2-alpha-tpuv6e|us-central1-b us-east1-d us-east5-a us-east5-b europe-west4-a"

known_types() {
  echo "known types: v4-8, v4-16, v4-32, ... (v4-N, N a multiple of 8); v5e-1, v5e-4, v5e-8," \
    "v5e-16, ... v5e-256 (= v5litepod-N); v5p-8, v5p-16, ... (v5p-N, N a multiple of 8);" \
    "v6e-1, v6e-4, v6e-8, v6e-16, ... v6e-256 (tools/tpu_vm.sh types)"
}

# Sets FAMILY, ACCELERATOR (gcloud's --accelerator-type) and CHIPS from --type, or dies naming
# the known types.
resolve_type() {
  local n="${TYPE##*-}" prefix="${TYPE%-*}"
  FAMILY=""
  if [[ "$TYPE" == *-* && "$n" =~ ^[1-9][0-9]*$ ]]; then
    case "$prefix" in
      v4|v5p) if (( n % 8 == 0 )); then FAMILY="$prefix"; CHIPS=$((n / 2)); fi ;;
      v5e|v5litepod|v6e)
        case "$n" in 1|4|8|16|32|64|128|256)
          FAMILY="${prefix/v5litepod/v5e}"; CHIPS="$n" ;; esac ;;
    esac
  fi
  [[ -n "$FAMILY" ]] || die "unknown --type '$TYPE': $(known_types)"
  case "$FAMILY" in
    v5e) ACCELERATOR="v5litepod-$n" ;;
    *) ACCELERATOR="$TYPE" ;;
  esac
}

family_field() { awk -F'|' -v f="$FAMILY" -v n="$1" '$1 == f { print $n }' <<< "$TYPE_TABLE"; }
default_version() { family_field 3; }
family_zones() { family_field 4; }

# Google recommends queued resources for Spot and for v5e and v6e.
uses_queued_resource() { [[ $SPOT -eq 1 || "$FAMILY" == v5e || "$FAMILY" == v6e ]]; }

cmd_types() {
  echo "The TPU types this kit knows (zones and software versions: Google's pages, read 2026-12-07)"
  awk -F'|' '{ printf "  %-4s --type %s\n       --version %s; zones: %s\n", $1, $2, $3, $4 }' \
    <<< "$TYPE_TABLE"
}

# --------------------------------------------------------------------------- the workers

# Run a command line (a string, parsed by bash on the worker) on the workers.
on_workers() {
  local workers="$1" command="$2"
  run gcloud compute tpus tpu-vm ssh "$NAME" "${SCOPE[@]}" "--worker=$workers" \
    "--command=$command"
}

# Copy a script (its text) to ~/flatrob/FILE on every worker; with --dry-run it is printed as a
# here-document, so the whole output is itself a bash script.
copy_script() {
  local file_name="$1" text="$2" file
  if [[ $DRY_RUN -eq 1 ]]; then
    file="/tmp/tpu_vm.$file_name"
    printf "cat > %s <<'EOF'\n%s\nEOF\n" "$file" "$text"
  else
    file="$(mktemp -t "tpu_vm.XXXXXX.$file_name")"
    printf '%s\n' "$text" > "$file"
  fi
  run gcloud compute tpus tpu-vm scp "$file" "$NAME:flatrob/$file_name" "${SCOPE[@]}" --worker=all
  if [[ $DRY_RUN -eq 0 ]]; then rm -f "$file"; fi
}

require_workdir() {
  need WORKDIR "set --workdir (a gs:// URI every worker can see)"
  if [[ "$WORKDIR" != gs://* && $ALLOW_LOCAL -eq 0 ]]; then
    die "--workdir '$WORKDIR' is not a gs:// URI: multi-host runs need a workdir every host" \
      "can see (gs:// or a shared mount); pass --allow-local-workdir for a shared mount"
  fi
}

# The worker's number (TPU VM metadata; the host name elsewhere), as a bash line.
WORKER_NUMBER="W=\$(curl -sf -m 5 -H Metadata-Flavor:Google $METADATA/agent-worker-number || hostname)"

# The bash lines of a job script: its body (the lines given) runs with its output going straight
# to the log file. A shutdown (Spot preemption, maintenance) sends SIGTERM and then SIGHUP to
# every process of the session, tmux included, and a terminal that goes away sends SIGHUP: no
# pipe (tee) stands between the training and its log to die first, SIGHUP is ignored here, the
# relaunch loop stops restarting, and the training saves a checkpoint on either signal.
job_script() {
  local job="$1"
  shift
  local log="$REMOTE_HOME/logs/$job.worker\$W.log"
  printf '%s\n' "#!/usr/bin/env bash" \
    "# flatrob_jax $job job, written by tools/tpu_vm.sh. Its output goes straight to its log" \
    "# (this tmux pane only shows it); a shutdown's SIGTERM and SIGHUP make the training save" \
    "# and exit with status 75, and the relaunch loop stop." \
    "trap '' HUP" \
    "source $REMOTE_HOME/venv/bin/activate" \
    "export FLATROB_DISTRIBUTED=on PYTHONUNBUFFERED=1" \
    "${EXPORTS[@]+"${EXPORTS[@]}"}" \
    "mkdir -p $REMOTE_HOME/logs" \
    "$WORKER_NUMBER" \
    "LOG=$log" \
    "signalled=''" \
    "trap 'signalled=SIGTERM' TERM" \
    "echo \"job $job: started \$(date -u +%FT%TZ) on worker \$W\" >> \"\$LOG\"" \
    "(trap '' INT; exec tail -n 0 -F \"\$LOG\" 2> /dev/null) &" \
    "tail_pid=\$!" \
    "(" \
    "  trap : TERM" \
    "$@" \
    ") >> \"\$LOG\" 2>&1 < /dev/null" \
    "status=\$?" \
    "echo \"job $job: ended \$(date -u +%FT%TZ) with exit status \$status\${signalled:+ (\$signalled received)}\" >> \"\$LOG\"" \
    "kill \"\$tail_pid\" 2> /dev/null" \
    "exit \$status"
}

# The line that starts ~/flatrob/JOB.sh in a detached tmux session "flatrob-JOB" on a worker.
start_line() {
  local job="$1" session="flatrob-$1"
  local busy="tmux session $session is already running (tools/tpu_vm.sh attach --job $job)"
  printf '%s' "if tmux has-session -t $session 2>/dev/null; then echo '$busy' >&2; exit 1; fi;\
 tmux new-session -d -s $session bash $REMOTE_HOME/$job.sh"
}

# Start a job on every worker: its script is copied to ~/flatrob/JOB.sh and run in tmux; the
# script is also kept here for recreate.
start_job() {
  local job="$1" script
  shift
  script="$(job_script "$job" "$@")"
  copy_script "$job.sh" "$script"
  on_workers all "$(start_line "$job")"
  if [[ $DRY_RUN -eq 0 ]]; then
    mkdir -p "$(state_dir)/jobs"
    printf '%s\n' "$script" > "$(state_dir)/jobs/$job.sh"
    printf '%s\n' "$job" > "$(state_dir)/last_job"
  fi
}

# --------------------------------------------------------------------------- state (recreate)

state_dir() { printf '%s/%s' "$STATE_ROOT" "$NAME"; }

# Write NAME=value lines (bash-quoted) for the variables named, to be sourced by recreate.
save_state() {
  local file="$1" var
  shift
  [[ $DRY_RUN -eq 0 ]] || return 0
  mkdir -p "$(state_dir)"
  for var in "$@"; do printf '%s=%q\n' "$var" "${!var}"; done > "$(state_dir)/$file"
}

# --------------------------------------------------------------------------- doctor

DOCTOR_FAILED=0
doctor_ok() { printf '  ok    %s\n' "$1"; }
doctor_warn() {
  printf '  warn  %s\n' "$1"
  if [[ -n "${2:-}" ]]; then printf '        check: %s\n' "$2"; fi
}
doctor_fail() {
  printf '  FAIL  %s\n        fix: %s\n' "$1" "$2"
  DOCTOR_FAILED=$((DOCTOR_FAILED + 1))
}

# Python over JSON on stdin (gcloud --format=json), for the quota and IAM checks.
json_query() { python3 -c "$1" "${@:2}"; }

QUOTA_QUERY='
import json, re, sys
family, preemptible, zone = sys.argv[1], sys.argv[2] == "1", sys.argv[3]
region = zone.rsplit("-", 1)[0]
patterns = {"v4": r"^TPUV4(Pod|Lite)?", "v5e": r"^TPUV5s?Lite", "v5p": r"^TPUV5s?P",
            "v6e": r"^TPUV6E"}
for info in json.load(sys.stdin):
    quota = info.get("quotaId", "")
    kind = quota.lower()
    if not re.search(patterns[family], quota, re.I) or "serving" in kind:
        continue
    if ("preemptible" in kind or "spot" in kind) != preemptible:
        continue
    for dims in info.get("dimensionsInfos", []):
        where = set(dims.get("applicableLocations", [])) | set(dims.get("dimensions", {}).values())
        if zone in where or region in where:
            print(quota, dims.get("details", {}).get("value", 0))
            sys.exit(0)
'

IAM_QUERY='
import json, sys
member = "serviceAccount:" + sys.argv[1]
writers = {"roles/owner", "roles/editor", "roles/storage.admin", "roles/storage.objectAdmin",
           "roles/storage.objectUser", "roles/storage.legacyBucketOwner",
           "roles/storage.legacyBucketWriter"}
roles = {b["role"] for b in json.load(sys.stdin).get("bindings", []) if member in b.get("members", [])}
print(" ".join(sorted(roles & writers)))
'

# The bucket to check: --bucket, else the bucket of a gs:// --workdir.
doctor_bucket() {
  local uri="${BUCKET:-}"
  if [[ -z "$uri" && "$WORKDIR" == gs://* ]]; then uri="$WORKDIR"; fi
  if [[ "$uri" == gs://* ]]; then uri="${uri#gs://}"; printf 'gs://%s' "${uri%%/*}"; fi
}

cmd_doctor() {
  need ZONE "set --zone or TPU_ZONE"
  resolve_type
  local version="${VERSION:-$(default_version)}" region="${ZONE%-*}" bucket spot=""
  local -x CLOUDSDK_CORE_DISABLE_PROMPTS=1  # a missing gcloud component fails, never asks
  bucket="$(doctor_bucket)"
  if [[ $SPOT -eq 1 ]]; then spot=" as Spot"; fi
  DOCTOR_FAILED=0
  echo "tpu_vm.sh doctor: --type $TYPE ($ACCELERATOR, $CHIPS chips, $version) in --zone" \
    "$ZONE$spot${bucket:+, bucket $bucket}"
  if ! command -v gcloud > /dev/null; then
    doctor_fail "gcloud is not installed" \
      "curl https://sdk.cloud.google.com | bash  (then open a new shell; https://cloud.google.com/sdk/docs/install)"
    doctor_summary; return
  fi
  doctor_ok "gcloud: $(gcloud --version 2> /dev/null | head -n 1)"
  local account
  account="$(gcloud auth list --filter=status:ACTIVE --format='value(account)' 2> /dev/null \
    | head -n 1 || true)"
  if [[ -z "$account" ]]; then
    doctor_fail "gcloud is not signed in" "gcloud auth login"
    doctor_summary; return
  fi
  doctor_ok "signed in as $account"
  local project="$PROJECT"
  if [[ -z "$project" ]]; then project="$(gcloud config get-value project 2> /dev/null || true)"; fi
  if [[ -z "$project" || "$project" == "(unset)" ]]; then
    doctor_fail "no project: neither --project / TPU_PROJECT nor gcloud's default" \
      "gcloud config set project YOUR_PROJECT_ID"
    doctor_summary; return
  fi
  doctor_ok "project $project"
  local p="--project=$project"
  if [[ "$(gcloud services list --enabled "$p" --filter=config.name=tpu.googleapis.com \
      --format='value(config.name)' 2> /dev/null)" != *tpu.googleapis.com* ]]; then
    doctor_fail "the Cloud TPU API is not enabled in $project" \
      "gcloud services enable tpu.googleapis.com $p"
  else
    doctor_ok "Cloud TPU API enabled"
    doctor_zone "$p" "$version"
    doctor_quota "$p"
  fi
  if [[ -z "$bucket" ]]; then
    doctor_warn "no bucket to check (pass --bucket gs://BUCKET or --workdir gs://BUCKET/...)"
  else
    doctor_storage "$p" "$project" "$bucket" "$region"
  fi
  doctor_summary
}

doctor_zone() {
  local p="$1" version="$2"
  if gcloud compute tpus accelerator-types describe "$ACCELERATOR" "--zone=$ZONE" "$p" \
      --format='value(type)' > /dev/null 2>&1; then
    doctor_ok "$ACCELERATOR is offered in $ZONE"
  else
    local zones other
    zones="$(family_zones)"
    other="$(tr ' ' '\n' <<< "$zones" | grep -vx "$ZONE" | head -n 1)"
    doctor_fail "$ACCELERATOR is not offered in $ZONE. Zones with $FAMILY (Google's table, read
        2026-12-07): $zones. What a zone offers:
        gcloud compute tpus accelerator-types list --zone=ZONE $p" \
      "export TPU_ZONE=$other  (or --zone $other)"
    return
  fi
  if gcloud compute tpus versions describe "$version" "--zone=$ZONE" "$p" \
      --format='value(version)' > /dev/null 2>&1; then
    doctor_ok "software version $version is offered in $ZONE"
  else
    doctor_fail "software version $version is not offered in $ZONE" \
      "gcloud compute tpus versions list --zone=$ZONE $p  (then pass --version one of them)"
  fi
}

doctor_quota() {
  local p="$1" infos found kind="on-demand"
  if [[ $SPOT -eq 1 ]]; then kind="Spot (preemptible)"; fi
  local listing="gcloud beta quotas info list --service=tpu.googleapis.com $p"
  if ! infos="$(gcloud beta quotas info list --service=tpu.googleapis.com "$p" \
      --format=json 2> /dev/null)"; then
    doctor_warn "could not read the TPU quotas (gcloud beta quotas)" "$listing"
    return
  fi
  found="$(json_query "$QUOTA_QUERY" "$FAMILY" "$SPOT" "$ZONE" <<< "$infos" || true)"
  local quota="${found% *}" value="${found##* }"
  if [[ -z "$found" ]]; then
    doctor_warn "no $kind $FAMILY quota found for $ZONE" "$listing"
  elif [[ "$value" != -1 ]] && (( value < CHIPS )); then
    doctor_fail "$kind $FAMILY quota in $ZONE is $value ($quota); $TYPE needs $CHIPS chips" \
      "gcloud beta quotas preferences create --service=tpu.googleapis.com $p --quota-id=$quota --preferred-value=$CHIPS --dimensions=zone=$ZONE --email=YOUR_EMAIL"
  else
    doctor_ok "$kind $FAMILY quota in $ZONE: $value ($quota), $CHIPS chips needed"
  fi
}

doctor_storage() {
  local p="$1" project="$2" bucket="$3" region="$4" location account number roles=""
  if ! location="$(gcloud storage buckets describe "$bucket" --format='value(location)' \
      2> /dev/null)"; then
    doctor_fail "bucket $bucket does not exist (or you cannot see it)" \
      "gcloud storage buckets create $bucket --location=$region --uniform-bucket-level-access $p"
    return
  fi
  location="$(tr '[:upper:]' '[:lower:]' <<< "$location")"
  if [[ "$location" != "$region" ]]; then
    doctor_fail "bucket $bucket is in $location, not in the TPU's region $region (slower reads,
        egress costs); a bucket cannot move: make one in $region" \
      "gcloud storage buckets create gs://A_NEW_NAME --location=$region --uniform-bucket-level-access $p"
  else
    doctor_ok "bucket $bucket in $location"
  fi
  account="$SERVICE_ACCOUNT"
  if [[ -z "$account" ]]; then
    number="$(gcloud projects describe "$project" --format='value(projectNumber)' 2> /dev/null \
      || true)"
    account="${number:-PROJECT_NUMBER}-compute@developer.gserviceaccount.com"
  fi
  roles="$(gcloud storage buckets get-iam-policy "$bucket" --format=json 2> /dev/null \
    | json_query "$IAM_QUERY" "$account" || true) $(gcloud projects get-iam-policy "$project" \
    --format=json 2> /dev/null | json_query "$IAM_QUERY" "$account" || true)"
  roles="$(xargs <<< "$roles")"
  if [[ -z "$roles" ]]; then
    doctor_fail "the TPU VM's service account $account has no role that writes to $bucket" \
      "gcloud storage buckets add-iam-policy-binding $bucket --member=serviceAccount:$account --role=roles/storage.objectAdmin"
  else
    doctor_ok "the TPU VM's service account $account can write to $bucket ($roles)"
  fi
}

doctor_summary() {
  if [[ $DOCTOR_FAILED -gt 0 ]]; then
    echo "tpu_vm.sh doctor: $DOCTOR_FAILED check(s) failed: run the fix under each, then doctor again"
    return 1
  fi
  echo "tpu_vm.sh doctor: ready"
}

# --------------------------------------------------------------------------- create, delete

queued_resource_exists() {
  gcloud compute tpus queued-resources describe "$NAME" "${SCOPE[@]}" > /dev/null 2>&1
}

# Wait (with progress) until the queued resource is ACTIVE.
wait_for_queued_resource() {
  local describe=(gcloud compute tpus queued-resources describe "$NAME" "${SCOPE[@]}"
                  "--format=value(state.state)")
  if [[ $DRY_RUN -eq 1 ]]; then run "${describe[@]}"; return; fi
  local start=$SECONDS state elapsed
  while true; do
    state="$("${describe[@]}" || echo UNKNOWN)"
    elapsed=$(( (SECONDS - start) / 60 ))
    case "$state" in
      ACTIVE) echo "tpu_vm.sh: $NAME is ACTIVE (after ${elapsed} min in the queue)"; return 0 ;;
      FAILED|SUSPENDING|SUSPENDED)
        die "the queued resource $NAME is $state (details: ${describe[*]:0:7});" \
          "tools/tpu_vm.sh delete, then create again (another zone? tools/tpu_vm.sh types)" ;;
    esac
    if (( elapsed >= WAIT_MINUTES )); then
      die "$NAME is still $state after $elapsed min; the request stays in the queue and costs" \
        "nothing until it is ACTIVE: tools/tpu_vm.sh create waits for it again," \
        "tools/tpu_vm.sh delete withdraws it"
    fi
    echo "tpu_vm.sh: $NAME: $state, ${elapsed} min so far (Google provisions it when the" \
      "chips are free; up to --wait-minutes $WAIT_MINUTES)"
    sleep "$POLL_SECONDS"
  done
}

cmd_create() {
  resolve_type
  scope
  local version="${VERSION:-$(default_version)}"
  if [[ $DRY_RUN -eq 0 && $SKIP_DOCTOR -eq 0 ]]; then
    cmd_doctor || die "the checks above failed: fix them (or pass --skip-doctor), then create again"
  fi
  local extra=("--scopes=$SCOPES")
  if [[ -n "$SERVICE_ACCOUNT" ]]; then extra+=("--service-account=$SERVICE_ACCOUNT"); fi
  if [[ $SPOT -eq 1 ]]; then extra+=(--spot); fi
  if uses_queued_resource; then
    if [[ $DRY_RUN -eq 0 ]] && queued_resource_exists; then
      echo "tpu_vm.sh: the queued resource $NAME exists already: waiting for it"
    else
      run gcloud compute tpus queued-resources create "$NAME" "--node-id=$NAME" "${SCOPE[@]}" \
        "--accelerator-type=$ACCELERATOR" "--runtime-version=$version" "${extra[@]}"
    fi
    wait_for_queued_resource
  else
    run gcloud compute tpus tpu-vm create "$NAME" "${SCOPE[@]}" \
      "--accelerator-type=$ACCELERATOR" "--version=$version" "${extra[@]}"
  fi
  save_state tpu.env TYPE VERSION SPOT SERVICE_ACCOUNT
}

cmd_delete() {
  scope
  local queued=0
  if [[ $DRY_RUN -eq 1 ]]; then
    resolve_type
    if uses_queued_resource; then queued=1; fi
  elif queued_resource_exists; then
    queued=1
  fi
  if [[ $queued -eq 1 ]]; then
    # --force deletes the TPU VM with it.
    run gcloud compute tpus queued-resources delete "$NAME" "${SCOPE[@]}" --force --quiet
  else
    run gcloud compute tpus tpu-vm delete "$NAME" "${SCOPE[@]}" --quiet
  fi
}

cmd_status() {
  scope
  if [[ $DRY_RUN -eq 1 ]] || queued_resource_exists; then
    run gcloud compute tpus queued-resources describe "$NAME" "${SCOPE[@]}"
  fi
  run gcloud compute tpus tpu-vm describe "$NAME" "${SCOPE[@]}"
}

# --------------------------------------------------------------------------- setup, data

# Waits until apt is free: at first boot cloud-init and unattended-upgrades hold its locks.
# shellcheck disable=SC2016  # expanded on the workers
APT_WAIT='wait_for_apt() {
  if command -v cloud-init > /dev/null; then sudo cloud-init status --wait > /dev/null 2>&1 || true; fi
  local waited=0
  while sudo fuser /var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock \
      > /dev/null 2>&1; do
    if [[ $waited -ge 1800 ]]; then echo "apt is still busy after 30 min" >&2; return 1; fi
    echo "waiting for apt (unattended-upgrades at first boot holds its lock) ..."
    sleep 10
    waited=$((waited + 10))
  done
}
apt_install() {
  wait_for_apt
  local try
  for try in 1 2 3; do
    if sudo DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq \
        && sudo DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 \
          install -y -qq "$@" > /dev/null; then
      return 0
    fi
    echo "apt-get failed (try $try of 3): waiting for apt again"
    wait_for_apt
  done
  return 1
}'

# uv, installed for this user when missing (~/.local/bin).
# shellcheck disable=SC2016  # expanded on the workers
UV_INSTALL='command -v uv > /dev/null || curl -LsSf https://astral.sh/uv/install.sh | env UV_NO_MODIFY_PATH=1 sh'

check_python_version() {
  if [[ ! "$PYTHON_VERSION" =~ ^3\.([0-9]+)(\.[0-9]+)?$ ]] || (( BASH_REMATCH[1] < 11 )); then
    die "--python '$PYTHON_VERSION': jax >= 0.7 needs Python >= 3.11 (e.g. 3.11, 3.12)"
  fi
}

# The setup script every worker runs: its output also goes to ~/flatrob/logs/setup.log, and a
# failure names the worker and the step.
setup_script() {
  local install="$1"
  local venv="$REMOTE_HOME/venv" check
  check="import sys, jax; assert sys.version_info >= (3, 11), sys.version;"
  check+=" print(jax.process_index(), jax.local_device_count(), jax.devices())"
  printf '%s\n' "#!/usr/bin/env bash" \
    "# flatrob_jax setup of one worker, written by tools/tpu_vm.sh" \
    "set -Eeuo pipefail" \
    "$WORKER_NUMBER" \
    "mkdir -p $REMOTE_HOME/logs" \
    "exec > >(tee -a $REMOTE_HOME/logs/setup.log) 2>&1" \
    "rm -f $REMOTE_HOME/setup.ok" \
    "trap 'echo \"[worker \$W] setup FAILED (exit status \$?) at: \$BASH_COMMAND\" >&2' ERR" \
    "$APT_WAIT" \
    "apt_install tmux git curl" \
    "$UV_INSTALL" \
    "export PATH=\"\$HOME/.local/bin:\$PATH\"" \
    "# The images' Python is 3.10; jax >= 0.7 needs >= 3.11: uv installs Python $PYTHON_VERSION." \
    "rm -rf $venv" \
    "uv venv --seed --python $PYTHON_VERSION $venv" \
    "uv pip install --python $venv/bin/python $(quote "$JAX_SPEC")" \
    "uv pip install --python $venv/bin/python $install" \
    "chmod +x $REMOTE_HOME/relaunch.sh" \
    "$venv/bin/python -c $(quote "$check")" \
    "touch $REMOTE_HOME/setup.ok" \
    "echo \"[worker \$W] setup done: \$($venv/bin/python --version)\""
}

cmd_setup() {
  scope
  check_python_version
  local install
  on_workers all "mkdir -p $REMOTE_HOME/logs"
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
  copy_script setup.sh "$(setup_script "$install")"
  local failed="setup failed on a worker: its error is above (and in ~/flatrob/logs/setup.log there)"
  on_workers all "bash $REMOTE_HOME/setup.sh" || die "$failed"
  # gcloud's ssh to all workers: make sure every worker finished, whatever it reported.
  on_workers all "$WORKER_NUMBER; test -f $REMOTE_HOME/setup.ok || { echo \"[worker \$W] setup\
 did not finish; the end of $REMOTE_HOME/logs/setup.log:\" >&2;\
 tail -n 30 $REMOTE_HOME/logs/setup.log >&2; exit 1; }" || die "$failed"
  save_state setup.env REPO REF WHEEL JAX_SPEC PYTHON_VERSION
}

cmd_data() {
  scope
  check_python_version
  need DATASET "set --dataset (a tfds name, e.g. cifar10)"
  need BUCKET "set --bucket (gs://BUCKET/tfds)"
  [[ "$BUCKET" == gs://* ]] || die "--bucket '$BUCKET' must be a gs:// URI"
  # tfds builds datasets with TensorFlow; training and analysis read them without it. TensorFlow
  # stays in a venv of its own: in the training venv it would make etils read gs:// paths with
  # tf.io.gfile instead of gcsfs.
  local venv="$REMOTE_HOME/tfds-venv"
  local build="import sys, tensorflow_datasets as tfds; tfds.builder(sys.argv[1],"
  build+=" data_dir=sys.argv[2]).download_and_prepare(file_format=\"array_record\")"
  on_workers 0 "set -e; $UV_INSTALL; export PATH=\"\$HOME/.local/bin:\$PATH\";\
 uv venv --allow-existing --python $PYTHON_VERSION $venv;\
 uv pip install -q --python $venv/bin/python tensorflow-cpu tensorflow-datasets;\
 $venv/bin/python -c $(quote "$build") $(quote "$DATASET") /tmp/tfds;\
 gcloud storage cp -r $(quote "/tmp/tfds/$DATASET") $(quote "${BUCKET%/}/")"
}

# --------------------------------------------------------------------------- jobs

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

# --------------------------------------------------------------------------- Ray (docs/fleet.md)

# Ray in the training venv (the version of flatrob_jax[ray]), then `ray start` with the line given.
ray_start_line() {
  local venv="$REMOTE_HOME/venv"
  printf '%s' "set -e; export PATH=\"\$HOME/.local/bin:\$PATH\";\
 uv pip install -q --python $venv/bin/python $(quote "$RAY_SPEC");\
 export RAY_USAGE_STATS_ENABLED=0; $venv/bin/ray start $1\
 --resources='{\"flatrob_tpu_host\": 1}'"
}

cmd_ray-head() {
  scope
  on_workers 0 "$(ray_start_line "--head --port=6379"); echo \"Ray head: \$(hostname -I |\
 awk '{print \$1}'):6379 (tools/tpu_vm.sh ray-join --address it on the other TPU VMs)\""
}

cmd_ray-join() {
  scope
  need RAY_ADDRESS "set --address HOST:PORT (the head's, which ray-head printed)"
  on_workers all "$(ray_start_line "--address=$(quote "$RAY_ADDRESS")")"
}

# After a preemption (a Spot TPU stays PREEMPTED until it is deleted): delete, create, setup as
# they were last run from here for --name, then start the last job's script again; the run
# resumes from its checkpoint in the bucket.
cmd_recreate() {
  scope
  local state
  state="$(state_dir)"
  [[ -f "$state/tpu.env" && -f "$state/setup.env" ]] \
    || die "no record of how $NAME was created and set up in $state (create and setup write it);" \
      "run tools/tpu_vm.sh delete, create, setup and your job by hand"
  # shellcheck source=/dev/null
  source "$state/tpu.env"
  # shellcheck source=/dev/null
  source "$state/setup.env"
  if [[ $JOB_GIVEN -eq 0 && -f "$state/last_job" ]]; then JOB="$(cat "$state/last_job")"; fi
  local script="$state/jobs/$JOB.sh"
  [[ -f "$script" ]] || die "no $JOB job was started from here for $NAME ($script)"
  echo "tpu_vm.sh recreate: $NAME ($TYPE, Spot: $SPOT), then the $JOB job"
  if ! (cmd_delete); then
    echo "tpu_vm.sh recreate: deleting $NAME failed (gone already?): creating it anyway" >&2
  fi
  cmd_create
  cmd_setup
  copy_script "$JOB.sh" "$(cat "$script")"
  on_workers all "$(start_line "$JOB")"
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

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; }

COMMANDS="doctor, types, create, setup, data, train, analyze, sweep, ray-head, ray-join, recreate,\
 status, attach, tensorboard, logs, delete"

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
      --service-account) SERVICE_ACCOUNT="$2"; shift ;;
      --wait-minutes) WAIT_MINUTES="$2"; shift ;;
      --skip-doctor) SKIP_DOCTOR=1 ;;
      --workdir) WORKDIR="$2"; shift ;;
      --allow-local-workdir) ALLOW_LOCAL=1 ;;
      --repo) REPO="$2"; shift ;;
      --ref) REF="$2"; shift ;;
      --wheel) WHEEL="$2"; shift ;;
      --jax) JAX_SPEC="$2"; shift ;;
      --python) PYTHON_VERSION="$2"; shift ;;
      --dataset) DATASET="$2"; shift ;;
      --bucket) BUCKET="$2"; shift ;;
      --worker) WORKER="$2"; shift ;;
      --job) JOB="$2"; JOB_GIVEN=1; shift ;;
      --address) RAY_ADDRESS="$2"; shift ;;
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
  [[ "$WAIT_MINUTES" =~ ^[0-9]+$ ]] || die "--wait-minutes '$WAIT_MINUTES': expected minutes"
  case "$command" in
    doctor|types|create|setup|data|recreate|status|attach|tensorboard|logs|delete|ray-head|ray-join)
      "cmd_$command" ;;
    train|analyze|sweep) "cmd_$command" "${args[@]+"${args[@]}"}" ;;
    "") usage >&2; exit 2 ;;
    *) die "unknown command '$command' ($COMMANDS)" ;;
  esac
}

main "$@"
