"""A stand-in for the ``gcloud`` CLI, for testing tools/tpu_vm.sh without Google Cloud.

The world it answers from is a JSON file (``$FAKE_GCLOUD_WORLD``), read and written back on
every call, so a command that creates something (a queued resource) changes what later calls
see. Every call is appended to ``$FAKE_GCLOUD_LOG`` (one JSON argv per line), and ``scp`` keeps
a copy of what it would copy (``copies`` in the world: the source file's text). The keys:

    account           the signed-in account ("" : not signed in)
    project           gcloud's default project ("" : unset)
    project_number    for the Compute Engine default service account
    services          enabled APIs, e.g. ["tpu.googleapis.com"]
    zones             {zone: [accelerator types offered]}
    versions          {zone: [software versions offered]}
    quotas            what `gcloud beta quotas info list --format=json` prints (None: it fails)
    buckets           {"gs://b": {"location": "US-EAST5", "iam": {"bindings": [...]}}}
    project_iam       {"bindings": [...]}
    queued            {name: [states to report, one per describe; the last one stays]}
    ssh_fail          a worker command substring that makes `tpu-vm ssh` fail
"""

import json
import os
import sys


def _flag(argv, name, default=None):
    for i, a in enumerate(argv):
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
        if a == name and i + 1 < len(argv):
            return argv[i + 1]
    return default


def _fail(message, code=1):
    print(f"ERROR: (gcloud) {message}", file=sys.stderr)
    return code


def _answer(world, argv):
    words = [a for a in argv if not a.startswith("-")]
    if argv[:1] == ["--version"]:
        print("Google Cloud SDK 999.0.0 (fake)")
        return 0
    if words[:2] == ["auth", "list"]:
        if world.get("account"):
            print(world["account"])
        return 0
    if words[:3] == ["config", "get-value", "project"]:
        print(world.get("project") or "")
        return 0
    if words[:2] == ["services", "list"]:
        for service in world.get("services", []):
            if service in (_flag(argv, "--filter") or service):
                print(service)
        return 0
    if words[:4] == ["compute", "tpus", "accelerator-types", "describe"]:
        zone = _flag(argv, "--zone")
        if words[4] not in world.get("zones", {}).get(zone, []):
            return _fail(f"NOT_FOUND: accelerator type {words[4]} in {zone}")
        print(words[4])
        return 0
    if words[:4] == ["compute", "tpus", "versions", "describe"]:
        zone = _flag(argv, "--zone")
        if words[4] not in world.get("versions", {}).get(zone, []):
            return _fail(f"NOT_FOUND: version {words[4]} in {zone}")
        print(words[4])
        return 0
    if words[:4] == ["beta", "quotas", "info", "list"]:
        if world.get("quotas") is None:
            return _fail("beta component not installed")
        print(json.dumps(world["quotas"]))
        return 0
    if words[:3] == ["storage", "buckets", "describe"]:
        bucket = world.get("buckets", {}).get(words[3])
        if bucket is None:
            return _fail(f"NOT_FOUND: {words[3]}")
        print(bucket["location"])
        return 0
    if words[:3] == ["storage", "buckets", "get-iam-policy"]:
        print(json.dumps(world.get("buckets", {}).get(words[3], {}).get("iam", {})))
        return 0
    if words[:2] == ["projects", "describe"]:
        print(world.get("project_number", "123456789012"))
        return 0
    if words[:2] == ["projects", "get-iam-policy"]:
        print(json.dumps(world.get("project_iam", {})))
        return 0
    if words[:3] == ["compute", "tpus", "queued-resources"]:
        queued = world.setdefault("queued", {})
        name = words[4]
        if words[3] == "create":
            queued[name] = ["WAITING_FOR_RESOURCES", "PROVISIONING", "ACTIVE"]
        elif words[3] == "delete":
            queued.pop(name, None)
        elif words[3] == "describe":
            states = queued.get(name)
            if not states:
                return _fail(f"NOT_FOUND: queued resource {name}")
            print(states.pop(0) if len(states) > 1 else states[0])
        return 0
    if words[:4] == ["compute", "tpus", "tpu-vm", "ssh"]:
        command = _flag(argv, "--command") or ""
        if world.get("ssh_fail") and world["ssh_fail"] in command:
            return _fail("[worker 1] command failed", code=1)
        return 0
    if words[:4] == ["compute", "tpus", "tpu-vm", "scp"]:
        source = words[4]
        if os.path.isfile(source):
            with open(source) as f:
                world.setdefault("copies", {})[words[5]] = f.read()
        return 0
    return 0  # create, delete, describe, ...: done


def main(argv):
    with open(os.environ["FAKE_GCLOUD_LOG"], "a") as f:
        f.write(json.dumps(argv) + "\n")
    path = os.environ["FAKE_GCLOUD_WORLD"]
    with open(path) as f:
        world = json.load(f)
    code = _answer(world, argv)
    with open(path, "w") as f:
        json.dump(world, f)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
