#!/usr/bin/env python3
"""The compose cluster test: deploy/docker-compose.yml run for real, in containers.

Three replicated nodes (each its own container and address on the compose network) serve a
bank load through every edge that is up, while: the three, started on the previous cluster
format's build (image playhouse:previous, scripts/build-previous.sh), are upgraded to today's
one container at a time (while builds are mixed the cluster's format stays at the old one and
every follower keeps up with its leader; once all are upgraded the format is raised); a node
is killed (SIGKILL) and started again;
a node is cut off by disconnecting it from the network, then connected again; a fourth node
joins and is admitted; a founder is drained, leaves and is stopped; and every remaining
container is replaced in turn (stopped, removed, created again on its volume). After each step
every account reads the same through every serving edge. At the end every credit sent has one
answer (unknown outcomes are retried with their Idempotency-Key), and each balance is its
opening balance plus the credits answered 2xx: nothing acknowledged was lost or applied twice.
Prints each step's wall time and share of 2xx answers, and the whole run's.

Usage: python3 scripts/compose-test.py   (after scripts/docker-images.sh built playhouse:latest,
and playhouse:previous from scripts/build-previous.sh's binary)
Always takes the cluster down (containers and volumes), also when a step fails.
"""
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROJECT = "playhouse-ci"
NETWORK = f"{PROJECT}_default"
EDGE_PORTS = {"node-1": 8081, "node-2": 8082, "node-3": 8083, "node-4": 8084}
CONFIG = "/etc/playhouse/node.toml"
ACCOUNTS = 6
OPENING = 10_000
CLIENTS = 3
# cluster.partitions, as deploy/config/node.toml leaves it.
PARTITIONS = 64
# store.command_retention_seconds for the run: short, so that retention cuts (one every
# tenth of it) are proposed while the builds are mixed, were the format not gating them; long
# enough that every credit without an answer is retried well within it.
RETENTION_SECONDS = 60
# How long a client retries a credit without an answer, with its key, before moving on.
RETRY_FOR_SECONDS = 20
TODAY, PREVIOUS = "playhouse:latest", "playhouse:previous"


class Failed(Exception):
    pass


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class Compose:
    def __init__(self, secrets):
        self.env = {
            **os.environ,
            "PLAYHOUSE_SECRETS": secrets,
            "PLAYHOUSE_IMAGE": PREVIOUS,
            "PLAYHOUSE_COMMAND_RETENTION_SECONDS": str(RETENTION_SECONDS),
        }

    def use_image(self, tag):
        """Containers created from now on run `tag`."""
        self.env["PLAYHOUSE_IMAGE"] = tag

    def run(self, *args, check=True):
        command = ["docker-compose", "-f", "deploy/docker-compose.yml", "-p", PROJECT, *args]
        done = subprocess.run(command, cwd=ROOT, env=self.env, capture_output=True, text=True)
        if check and done.returncode != 0:
            raise Failed(f"{' '.join(command[5:])} failed:\n{done.stdout}{done.stderr}")
        return done.stdout

    def container(self, node):
        found = self.run("--profile", "grow", "ps", "-q", node).strip()
        if not found:
            raise Failed(f"no container for {node}")
        return found

    def playhouse(self, node, *args):
        """`playhouse ARGS` inside `node`'s container (its config signs admin tokens)."""
        command = ["docker", "exec", self.container(node), "playhouse", *args]
        return subprocess.run(command, capture_output=True, text=True)


def request(node, method, path, token, body=None, key=None, timeout=5.0):
    """(status, parsed JSON or None); status 0 when no answer came (refused, reset, timeout)."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    if key:
        headers["Idempotency-Key"] = key
    url = f"http://127.0.0.1:{EDGE_PORTS[node]}{path}"
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, data=data, method=method, headers=headers), timeout=timeout
        ) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as error:
        try:
            return error.code, json.loads(error.read() or b"null")
        except ValueError:
            return error.code, None
    except (OSError, ValueError):
        return 0, None


def wait_for(what, check, seconds):
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if check():
            return time.monotonic() - started
        time.sleep(0.5)
    raise Failed(f"{what}: not within {seconds} s")


class Bank:
    """Credits of 1 to random accounts through the serving edges, each with its own key."""

    def __init__(self, token, accounts):
        self.token, self.accounts = token, accounts
        self.serving = set()
        self.lock = threading.Lock()
        self.sent = {}  # key -> (account, status of its last answer)
        self.first_sent = {}  # key -> when it was first sent (time.monotonic())
        # Set once the cluster's format is raised: from then on ids are forgotten after
        # RETENTION_SECONDS, and a credit retried later than that could apply twice.
        self.forgetting = False
        self.answers = []  # (step, status)
        self.step = "start"
        self.stopping = threading.Event()
        self.running = threading.Event()
        self.running.set()
        self.in_flight = 0
        self.threads = [threading.Thread(target=self.client, args=(n,), daemon=True) for n in range(CLIENTS)]

    def start(self):
        for thread in self.threads:
            thread.start()

    def stop(self):
        self.stopping.set()
        for thread in self.threads:
            thread.join()

    def client(self, seed):
        rng = random.Random(seed)
        while not self.stopping.is_set():
            with self.lock:
                edges = sorted(self.serving) if self.running.is_set() else []
                self.in_flight += 1 if edges else 0
            if not edges:
                time.sleep(0.1)
                continue
            account, key = rng.choice(self.accounts), str(uuid.uuid4())
            # Without an answer, the same credit again with its key (through any edge), well
            # within the retention: once its id is forgotten, it would apply again.
            deadline = time.monotonic() + RETRY_FOR_SECONDS
            with self.lock:
                self.first_sent[key] = time.monotonic()
            while True:
                node = rng.choice(edges)
                status, _ = request(node, "POST", f"/api/v1/accounts/{account}/credit", self.token, {"amount": 1}, key)
                with self.lock:
                    self.sent[key] = (account, status)
                    self.answers.append((self.step, node, status))
                    edges = sorted(self.serving) or edges
                if 200 <= status < 500 or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            with self.lock:
                self.in_flight -= 1
            time.sleep(0.02)

    def serve(self, node):
        """Sends credits through `node`'s edge too (the clients read the set under the lock)."""
        with self.lock:
            self.serving.add(node)

    def unserve(self, node):
        with self.lock:
            self.serving.discard(node)

    def pause(self):
        """Stops sending, once the credits in flight are answered (for reading still balances)."""
        self.running.clear()
        wait_for("credits in flight answered", lambda: self.in_flight == 0, 30)

    def resume(self):
        self.running.set()

    def share(self, step):
        with self.lock:
            statuses = [status for s, _, status in self.answers if s == step]
        ok = sum(1 for status in statuses if 200 <= status < 300)
        return ok, len(statuses)

    def settle(self):
        """Retries every credit without a definite answer with its key, until it has one."""
        unknown = [(key, account) for key, (account, status) in self.sent.items() if not 200 <= status < 500]
        for key, account in unknown:
            age = time.monotonic() - self.first_sent[key]
            if self.forgetting and age > RETENTION_SECONDS - 10:
                raise Failed(f"credit {key} to {account}: no answer for {age:.0f} s; retried now, after the retention ({RETENTION_SECONDS} s), it could apply twice")
            for _ in range(60):
                node = random.choice(sorted(self.serving))
                status, _ = request(node, "POST", f"/api/v1/accounts/{account}/credit", self.token, {"amount": 1}, key)
                if 200 <= status < 500:
                    self.sent[key] = (account, status)
                    break
                time.sleep(0.5)
            else:
                raise Failed(f"credit {key} to {account}: no answer after 60 tries")
        return len(unknown)

    def expected(self):
        balances = {account: OPENING for account in self.accounts}
        for account, status in self.sent.values():
            if 200 <= status < 300:
                balances[account] += 1
            elif status != 409:
                raise Failed(f"a credit to {account} answered {status}")
        return balances


def cluster_view(node, token):
    status, view = request(node, "GET", "/admin/cluster", token)
    return view if status == 200 else None


def settled(nodes, token, members):
    """The cluster, as `nodes` report it: its roster is `members`, no move is under way, and
    every partition's leader counts three voters, all among `members`."""
    leaders, roster = {}, None
    for node in nodes:
        view = cluster_view(node, token)
        if not view or not view.get("replication"):
            return False
        replication = view["replication"]
        if replication.get("moves"):
            return False
        if replication.get("metadata"):
            roster = sorted(member["name"] for member in replication["metadata"]["roster"])
        for group in replication.get("partitions", []):
            if group["role"] == "leader":
                leaders[group["partition"]] = [r["member"] for r in group["replicas"] if r["voter"]]
    return (
        roster == sorted(members)
        and len(leaders) == PARTITIONS
        and all(len(voters) == 3 and set(voters) <= set(members) for voters in leaders.values())
    )


def formats(nodes, token):
    """(the cluster's format, the format the node's build reads) as each of `nodes` reports."""
    seen = {}
    for node in nodes:
        view = cluster_view(node, token)
        replication = (view or {}).get("replication") or {}
        metadata = replication.get("metadata") or {}
        seen[node] = (metadata.get("format"), replication.get("reads_format"))
    return seen


def followers_keep_up(nodes, token):
    """Every partition's leader among `nodes` has every replica holding its whole log (with the
    load paused): no follower is stuck on an entry it cannot read."""
    for node in nodes:
        view = cluster_view(node, token)
        if not view or not view.get("replication"):
            return False
        for group in view["replication"].get("partitions", []):
            if group["role"] == "leader" and any(replica["lag"] != 0 for replica in group["replicas"]):
                return False
    return True


def same_everywhere(bank, token, nodes):
    """Every account reads the same balance through each of `nodes`."""

    def agree():
        seen = {}
        for node in nodes:
            for account in bank.accounts:
                status, body = request(node, "GET", f"/api/v1/accounts/{account}", token)
                if status != 200:
                    return False
                seen.setdefault(account, set()).add(body["balance"])
        return all(len(balances) == 1 for balances in seen.values())

    return agree


def main():
    started = time.monotonic()
    for tool in ("docker", "docker-compose"):
        if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode != 0:
            print(f"compose cluster test: `{tool}` is not installed (Docker Engine and Compose are needed)", file=sys.stderr)
            return 1
    secrets = tempfile.mkdtemp(prefix="playhouse-secrets-")
    with open(os.path.join(secrets, "jwt_key"), "w") as file:
        file.write(os.urandom(32).hex())
    with open(os.path.join(secrets, "cluster_cookie"), "w") as file:
        file.write(os.urandom(24).hex())
    compose = Compose(secrets)
    compose.run("--profile", "grow", "down", "--volumes", "--remove-orphans", check=False)
    steps = []
    bank = None
    try:

        def step(name, action):
            log(f"step: {name}")
            if bank:
                bank.step = name
            began = time.monotonic()
            detail = action()
            took = time.monotonic() - began
            if bank:
                # Credits still without an answer retried now, within the retention.
                bank.pause()
                bank.settle()
                bank.resume()
            ok, total = bank.share(name) if bank else (0, 0)
            share = f"{ok}/{total} 2xx ({100.0 * ok / total:.1f}%)" if total else "no load"
            steps.append((name, took, share, detail))
            log(f"done: {name} in {took:.1f} s, {share}{'; ' + detail if detail else ''}")

        founders = ["node-1", "node-2", "node-3"]
        compose.run("up", "-d", "--no-build", *founders)
        token = compose.playhouse("node-1", "token", "--sub", "compose-test", "--role", "writer", "--role", "admin", "--ttl", "2h", "--config", CONFIG)
        if token.returncode != 0:
            raise Failed(f"playhouse token: {token.stderr}")
        token = token.stdout.strip()
        step("three nodes formed", lambda: f"settled after {wait_for('three settled nodes', lambda: settled(founders, token, founders), 180):.1f} s")

        accounts = []
        for n in range(ACCOUNTS):
            status, body = request(founders[n % 3], "POST", "/api/v1/accounts", token, {"owner": f"compose-{n}", "initial_balance": OPENING}, key=f"open-{n}")
            if status != 201:
                raise Failed(f"opening account {n} through {founders[n % 3]}: {status} {body}")
            accounts.append(body["id"])
        bank = Bank(token, accounts)
        for node in founders:
            bank.serve(node)
        bank.start()
        step("load", lambda: time.sleep(5))

        def upgrade_each():
            compose.use_image(TODAY)
            took = []
            for n, node in enumerate(founders):
                bank.unserve(node)
                began = time.monotonic()
                compose.run("up", "-d", "--no-build", "--no-deps", "--force-recreate", node)
                wait_for(f"{node} serving", lambda: request(node, "GET", "/health/ready", token)[0] == 200, 120)
                bank.serve(node)
                wait_for("the cluster settled", lambda: settled(founders, token, founders), 180)
                took.append(f"{node} {time.monotonic() - began:.1f} s")
                if n == len(founders) - 1:
                    break
                # Mixed builds, under load for longer than a retention cut takes to come
                # round: the format stays, and followers of the previous build keep up.
                time.sleep(RETENTION_SECONDS / 10 + 2)
                seen = formats(founders, token)
                if any(cluster != 1 for cluster, _ in seen.values()) or seen[node][1] != 2:
                    raise Failed(f"with {n + 1} of 3 nodes upgraded, (cluster format, reads) per node: {seen}")
                bank.pause()
                wait_for("every follower level with its leader", lambda: followers_keep_up(founders, token), 30)
                bank.resume()
            raised = wait_for("the cluster's format raised", lambda: all(f == (2, 2) for f in formats(founders, token).values()), 60)
            bank.forgetting = True
            return f"{PREVIOUS} (format 1) to {TODAY} (format 2) one at a time: {', '.join(took)}; format 2 recorded on every node {raised:.1f} s after the last"

        step("upgrade each container", upgrade_each)

        def kill_and_start():
            victim = "node-3"
            bank.unserve(victim)
            subprocess.run(["docker", "kill", "--signal", "KILL", compose.container(victim)], check=True, capture_output=True)
            time.sleep(5)
            compose.run("start", victim)
            back = wait_for(f"{victim} back", lambda: request(victim, "GET", "/health/ready", token)[0] == 200, 120)
            bank.serve(victim)
            wait_for("the cluster settled", lambda: settled(founders, token, founders), 120)
            return f"{victim} killed (SIGKILL) for 5 s, serving {back:.1f} s after its start"

        step("kill node-3", kill_and_start)

        def cut_and_heal():
            victim = "node-2"
            container = compose.container(victim)
            bank.unserve(victim)
            subprocess.run(["docker", "network", "disconnect", NETWORK, container], check=True, capture_output=True)
            time.sleep(8)
            subprocess.run(["docker", "network", "connect", "--alias", victim, NETWORK, container], check=True, capture_output=True)
            back = wait_for(f"{victim} serving", lambda: request(victim, "GET", "/health/ready", token)[0] == 200, 120)
            bank.serve(victim)
            wait_for("the cluster settled", lambda: settled(founders, token, founders), 120)
            return f"{victim} disconnected from {NETWORK} for 8 s, serving {back:.1f} s after reconnection"

        step("cut node-2 off", cut_and_heal)
        bank.pause()
        wait_for("balances agree", same_everywhere(bank, token, founders), 60)
        bank.resume()

        def grow():
            compose.run("--profile", "grow", "up", "-d", "--no-build", "node-4")

            def admitted():
                added = compose.playhouse("node-1", "cluster", "add", "node-4", "--edge", "127.0.0.1:8080", "--config", CONFIG)
                return added.returncode == 0

            asked = wait_for("node-4 admitted", admitted, 120)
            members = founders + ["node-4"]
            placed = wait_for("node-4's partitions placed", lambda: settled(members, token, members), 300)
            bank.serve("node-4")
            return f"admitted {asked:.1f} s after it started, every partition placed {placed:.1f} s later"

        step("add node-4", grow)

        def drain():
            drained = compose.playhouse("node-2", "cluster", "drain", "node-1", "--edge", "127.0.0.1:8080", "--config", CONFIG)
            if drained.returncode != 0:
                raise Failed(f"drain node-1: {drained.stdout}{drained.stderr}")
            rest = ["node-2", "node-3", "node-4"]
            left = wait_for("node-1 drained and gone", lambda: settled(rest, token, rest), 300)
            bank.unserve("node-1")
            compose.run("stop", "node-1")
            return f"node-1 left {left:.1f} s after the drain was asked, and was stopped"

        step("drain node-1", drain)
        rest = ["node-2", "node-3", "node-4"]
        bank.pause()
        wait_for("balances agree", same_everywhere(bank, token, rest), 60)
        bank.resume()

        def replace_each():
            took = []
            for node in rest:
                bank.unserve(node)
                began = time.monotonic()
                compose.run("--profile", "grow", "up", "-d", "--no-build", "--no-deps", "--force-recreate", node)
                wait_for(f"{node} serving", lambda: request(node, "GET", "/health/ready", token)[0] == 200, 120)
                bank.serve(node)
                wait_for("the cluster settled", lambda: settled(rest, token, rest), 180)
                took.append(f"{node} {time.monotonic() - began:.1f} s")
            return "replaced one at a time: " + ", ".join(took)

        step("replace each container", replace_each)
        bank.stop()
        retried = bank.settle()
        expected = bank.expected()
        wait_for("balances agree", same_everywhere(bank, token, rest), 60)
        for account, balance in expected.items():
            for node in rest:
                status, body = request(node, "GET", f"/api/v1/accounts/{account}", token)
                if status != 200 or body["balance"] != balance:
                    raise Failed(f"account {account} through {node}: {status} {body}, expected balance {balance}")
        acknowledged = sum(1 for _, status in bank.sent.values() if 200 <= status < 300)
        log(f"every balance as acknowledged: {len(bank.sent)} credits sent, {acknowledged} applied, {retried} retried with their key after no answer")
    except Failed as failure:
        log(f"FAILED: {failure}")
        for node in EDGE_PORTS:
            logs = subprocess.run(
                ["docker-compose", "-f", "deploy/docker-compose.yml", "-p", PROJECT, "--profile", "grow", "logs", "--tail", "30", node],
                cwd=ROOT, env=compose.env, capture_output=True, text=True,
            )
            print(logs.stdout[-6000:], file=sys.stderr)
        return 1
    finally:
        if bank:
            bank.stopping.set()
        compose.run("--profile", "grow", "down", "--volumes", "--remove-orphans", check=False)
    print("compose cluster test: every step passed")
    for name, took, share, detail in steps:
        print(f"  {name:<24} {took:6.1f} s  {share}")
    print(f"  wall time {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
