"""Runs `playhouse config check` on the config each deployment file gives every node.

deploy/docker-compose.yml: every service, with its environment, on deploy/config/node.toml (the
file deploy/Dockerfile puts in the image). deploy/kubernetes/: every pod of the StatefulSet,
with its environment, on the node.toml of the ConfigMap it mounts. Secrets are replaced by
stand-in files of the right length. Also checks that the stop grace each orchestrator gives is
longer than the node's shutdown grace, and that mounts and config paths agree.

Usage: python scripts/deploy_configs.py path/to/playhouse
"""

import os
import re
import subprocess
import sys
import tempfile
import tomllib

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fail(message):
    print(f"deploy configs: {message}", file=sys.stderr)
    sys.exit(1)


def interpolated(value):
    """`value` as Compose passes it with none of the variables it names set: each
    `${NAME:-default}` its default; a `${NAME}` without one is an error here (the config would
    get an empty string)."""
    def default(match):
        if match.group(2) is None:
            fail(f"{match.group(0)} has no default: the config check cannot know its value")
        return match.group(2)

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}", default, value)


def check(binary, config_path, env, node, where):
    """`playhouse config check` with only `env` (and PATH) set; it must pass as `node`."""
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
    run = subprocess.run(
        [binary, "config", "check", config_path], env=clean, capture_output=True, text=True
    )
    if run.returncode != 0:
        fail(f"{where}: config check failed:\n{run.stderr}")
    printed = tomllib.loads(run.stdout)
    if printed["node_name"] != node:
        fail(f"{where}: runs as {printed['node_name']!r}, expected {node!r}")
    names = [member["name"] for member in printed["cluster"]["members"]]
    if node not in names:
        fail(f"{where}: {node} is not among the members {names}")
    print(f"ok   {where}: node {node}, members {', '.join(names)}")
    return printed


def seconds(duration):
    """'30s', '1m' or '1m30s' as seconds."""
    total, number = 0, ""
    for char in duration:
        if char.isdigit():
            number += char
        else:
            total += int(number) * {"s": 1, "m": 60, "h": 3600}[char]
            number = ""
    return total


def stand_in_secrets(directory):
    key = os.path.join(directory, "jwt-key")
    cookie = os.path.join(directory, "cluster-cookie")
    with open(key, "w") as file:
        file.write("a-stand-in-signing-key-of-32-bytes-or-more")
    with open(cookie, "w") as file:
        file.write("a-stand-in-cluster-cookie")
    return {"PLAYHOUSE_AUTH__KEY_FILE": key, "PLAYHOUSE_CLUSTER__COOKIE_FILE": cookie}


def compose(binary, secrets):
    with open(os.path.join(ROOT, "deploy/docker-compose.yml")) as file:
        spec = yaml.safe_load(file)
    config = os.path.join(ROOT, "deploy/config/node.toml")
    with open(config, "rb") as file:
        shipped = tomllib.load(file)
    grace_ms = shipped["edge"]["shutdown_grace_ms"]
    # Compose mounts secret `x` at /run/secrets/x.
    for key, path in [("auth.key_file", shipped["auth"]["key_file"]), ("cluster.cookie_file", shipped["cluster"]["cookie_file"])]:
        if os.path.basename(path) not in spec["secrets"] or os.path.dirname(path) != "/run/secrets":
            fail(f"{key} {path} is not one of the compose secrets {sorted(spec['secrets'])}")
    listen_port = shipped["cluster"]["listen"].rsplit(":", 1)[1]
    for name, service in spec["services"].items():
        # Compose fills in ${NAME:-default} from its own environment, here empty: the default.
        env = {key: interpolated(str(value)) for key, value in service.get("environment", {}).items()}
        env = {**env, **secrets}
        printed = check(binary, config, env, name, f"docker-compose.yml service {name}")
        # Each member is reached at its service's name, on the port nodes listen on.
        for member in printed["cluster"]["members"]:
            if member["address"] != f"{member['name']}:{listen_port}":
                fail(f"member {member['name']} is at {member['address']}, not {member['name']}:{listen_port}")
            if member["name"] not in spec["services"]:
                fail(f"member {member['name']} is not a compose service")
        stop = seconds(service.get("stop_grace_period", "10s"))
        if stop * 1000 <= grace_ms:
            fail(f"service {name}: stop_grace_period {stop} s is not longer than the shutdown grace {grace_ms} ms")
        if not any(v.endswith(":/var/lib/playhouse") for v in service.get("volumes", [])):
            fail(f"service {name}: no volume for /var/lib/playhouse")
        if set(service.get("secrets", [])) != {"jwt_key", "cluster_cookie"}:
            fail(f"service {name}: needs the secrets jwt_key and cluster_cookie")


def kubernetes(binary, secrets, directory):
    documents = []
    kube = os.path.join(ROOT, "deploy/kubernetes")
    for name in sorted(os.listdir(kube)):
        with open(os.path.join(kube, name)) as file:
            documents += [d for d in yaml.safe_load_all(file) if d]
    by_kind = {}
    for document in documents:
        by_kind.setdefault(document["kind"], []).append(document)
    (statefulset,) = by_kind["StatefulSet"]
    (configmap,) = by_kind["ConfigMap"]
    config = os.path.join(directory, "node.toml")
    with open(config, "w") as file:
        file.write(configmap["data"]["node.toml"])
    pod = statefulset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    if container["args"][-1] != os.path.join(mounts["config"], "node.toml"):
        fail(f"the container runs {container['args']}, but the ConfigMap is mounted at {mounts['config']}")
    # The pods it starts, and one more, as `kubectl scale` would add: that one joins.
    founders = statefulset["spec"]["replicas"]
    for replica in range(founders + 1):
        node = f"{statefulset['metadata']['name']}-{replica}"
        pod_env = {"PLAYHOUSE_NODE_NAME": node, **secrets}
        for key, value in env.items():
            if value is not None:
                # Kubernetes expands $(NAME) of a variable defined before it.
                for name, known in pod_env.items():
                    value = value.replace(f"$({name})", known)
                pod_env[key] = value
        printed = check(binary, config, pod_env, node, f"kubernetes pod {node}")
        if printed["cluster"]["join"] != (replica >= founders):
            fail(f"kubernetes pod {node}: cluster.join is {printed['cluster']['join']}")
        if replica >= founders:
            print(f"ok   kubernetes pod {node} (scaled up) joins the cluster")
    shipped = tomllib.loads(configmap["data"]["node.toml"])
    for key, path in [("key_file", shipped["auth"]["key_file"]), ("cookie_file", shipped["cluster"]["cookie_file"])]:
        if os.path.dirname(path) != mounts["secrets"]:
            fail(f"{key} {path} is not in the Secret's mount {mounts['secrets']}")
    grace_ms = printed["edge"]["shutdown_grace_ms"]
    if pod["terminationGracePeriodSeconds"] * 1000 <= grace_ms:
        fail(f"terminationGracePeriodSeconds is not longer than the shutdown grace {grace_ms} ms")
    if mounts["data"] != printed["data_dir"]:
        fail(f"the volume is mounted at {mounts['data']}, the data dir is {printed['data_dir']}")
    service = statefulset["spec"]["serviceName"]
    listen_port = printed["cluster"]["listen"].rsplit(":", 1)[1]
    for member in printed["cluster"]["members"]:
        expected = f"{member['name']}.{service}:{listen_port}"
        if member["address"] != expected:
            fail(f"member {member['name']} is at {member['address']}, not {expected} (its pod's name in the headless Service)")


def main():
    binary = os.path.abspath(sys.argv[1])
    with tempfile.TemporaryDirectory() as directory:
        secrets = stand_in_secrets(directory)
        compose(binary, secrets)
        kubernetes(binary, secrets, directory)


if __name__ == "__main__":
    main()
