#!/usr/bin/env bash
# Sets up and runs the whole platform on this machine, so you can watch data flow:
#   throwaway PostgreSQL -> cloud-hub <- gRPC <- edge-agent <- Modbus TCP <- simulated SDM630
#                                                           <- Modbus TCP + SCPI <- simulated PV rig
# Everything runs in the foreground of this script; Ctrl-C stops it all.
#
#   scripts/demo.sh            debug build (faster to build)
#   scripts/demo.sh --release  optimised build
#
# Logs, configs and the agent's buffer go to target/demo/; PostgreSQL's data goes to
# a temp dir that is deleted on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

profile=debug
cargo_flags=()
if [ "${1:-}" = "--release" ]; then profile=release; cargo_flags=(--release); fi

say() { printf '\033[1m[demo]\033[0m %s\n' "$*"; }

scripts/setup.sh

say "building ($profile)..."
cargo build --workspace --bins --locked "${cargo_flags[@]}"
bin="$root/target/$profile"

run="$root/target/demo"
rm -rf "$run"
mkdir -p "$run"
pgdir=$(mktemp -d /tmp/qi-demo-pg.XXXXXX)
pids=()

cleanup() {
  trap - EXIT INT TERM
  say "stopping..."
  # Newest first: the agent flushes its buffer, the hub closes its connections,
  # then PostgreSQL shuts down.
  for (( i=${#pids[@]}-1; i>=0; i-- )); do
    kill -TERM "${pids[$i]}" 2>/dev/null || true
    wait "${pids[$i]}" 2>/dev/null || true
  done
  rm -rf "$pgdir"
  say "stopped. Logs are in $run"
}
trap cleanup EXIT INT TERM

# A port: the preferred one if free, else any free one.
port() {
  python3 - "$1" <<'PY'
import socket, sys
pref = int(sys.argv[1])
for p in (pref, 0):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); print(s.getsockname()[1]); break
    except OSError:
        pass
    finally:
        s.close()
PY
}
pg_port=$(port 55432); grpc_port=$(port 50051); hub_port=$(port 8081)
agent_port=$(port 8080); sim_port=$(port 5020); mqtt_port=$(port 1883)
rig_modbus=$(port 5021); rig_scpi=$(port 5025); rig_control=$(port 5030)

# PostgreSQL refuses to run as root; use the postgres system user then.
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
as_pg=()
if [ "$(id -u)" -eq 0 ]; then chown postgres: "$pgdir"; as_pg=(runuser -u postgres --); fi
say "starting PostgreSQL on 127.0.0.1:$pg_port (data in $pgdir)"
"${as_pg[@]}" "$pgbin/initdb" -D "$pgdir/data" -U postgres --auth=trust -E UTF8 --no-instructions >"$run/initdb.log" 2>&1
"${as_pg[@]}" "$pgbin/postgres" -D "$pgdir/data" -p "$pg_port" -k "$pgdir" -c listen_addresses=127.0.0.1 >"$run/postgres.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do "$pgbin/pg_isready" -q -h 127.0.0.1 -p "$pg_port" && break; sleep 0.1; done
"$pgbin/pg_isready" -q -h 127.0.0.1 -p "$pg_port" || { tail "$run/postgres.log"; exit 1; }

cat >"$run/cloud-hub.toml" <<TOML
[database]
url = "postgres://postgres@127.0.0.1:$pg_port/postgres"

[grpc]
listen = "127.0.0.1:$grpc_port"

[http]
listen = "127.0.0.1:$hub_port"
TOML

cat >"$run/edge-agent.toml" <<TOML
gateway_id = "demo-gateway"
profiles_dir = "$root/firmware-profiles"

[buffer]
path = "$run/buffer"

[uplink]
hub_url = "http://127.0.0.1:$grpc_port"

[http]
listen = "127.0.0.1:$agent_port"

# The site bus on loopback, open to anonymous clients for the demo only.
[mqtt]
listen = "127.0.0.1:$mqtt_port"
site = "demo"
allow_anonymous = true
accept_unknown_devices = true

[[mqtt.users]]
name = "anonymous"
publish = ["site/demo/+/+/telemetry"]
subscribe = ["site/#"]

[[devices]]
id = "sdm630-demo"
profile = "eastron-sdm630"
transport = { tcp = "127.0.0.1:$sim_port" }
poll_interval_ms = 1000

# The simulated PV rig (pv-rig-sim, simulator/README.md): five Modbus devices
# behind one gateway (unit ids 1-5) and a Keithley 2450 SMU on a raw SCPI socket.
[[devices]]
id = "chamber"
profile = "binder-kmf115"
transport = { tcp = "127.0.0.1:$rig_modbus" }
unit_id = 1
poll_interval_ms = 2000

[[devices]]
id = "daq"
profile = "pv-rig-daq"
transport = { tcp = "127.0.0.1:$rig_modbus" }
unit_id = 2
poll_interval_ms = 2000

[[devices]]
id = "supply"
profile = "dc-supply"
transport = { tcp = "127.0.0.1:$rig_modbus" }
unit_id = 3
poll_interval_ms = 2000

[[devices]]
id = "bias"
profile = "dc-supply"
transport = { tcp = "127.0.0.1:$rig_modbus" }
unit_id = 4
poll_interval_ms = 2000

[[devices]]
id = "hipot"
profile = "insulation-tester"
transport = { tcp = "127.0.0.1:$rig_modbus" }
unit_id = 5
poll_interval_ms = 2000

[[devices]]
id = "smu"
profile = "keithley-2450"
transport = { tcp = "127.0.0.1:$rig_scpi" }
poll_interval_ms = 2000

# Protocol runs (docs/runs.md): the shipped templates; the engine's clock runs
# as fast as the rig's (60x).
[runs]
protocols_dir = "$root/protocols"
time_scale = 60

# The rig as a test bench: appended below from examples/pv-rig/devices-and-bench.toml
# (its [[benches]] entry names the devices above, no ports).
TOML
# The bench entry exactly as the example ships it, so the two cannot drift apart.
sed -n '/^\[\[benches\]\]/,$p' examples/pv-rig/devices-and-bench.toml >>"$run/edge-agent.toml"
grep -q '^\[\[benches\]\]' "$run/edge-agent.toml" || { say "no [[benches]] in examples/pv-rig/devices-and-bench.toml"; exit 1; }

# Every REST operation but the health probes needs a credential: a viewer
# API key for the demo's requests (kept in the run directory, mode 600).
(umask 077; "$bin/cloud-hub" --config "$run/cloud-hub.toml" key create --name demo --role viewer \
  >"$run/hub-api-key" 2>>"$run/cloud-hub.log") || { tail -20 "$run/cloud-hub.log"; exit 1; }
auth="Authorization: Bearer $(cat "$run/hub-api-key")"

say "starting cloud-hub (gRPC :$grpc_port, REST :$hub_port)"
"$bin/cloud-hub" --config "$run/cloud-hub.toml" >"$run/cloud-hub.log" 2>&1 &
pids+=($!)
for _ in $(seq 150); do curl -fs "http://127.0.0.1:$hub_port/ready" >/dev/null && break; sleep 0.2; done
curl -fs "http://127.0.0.1:$hub_port/ready" >/dev/null || { tail -20 "$run/cloud-hub.log"; exit 1; }

say "starting simulated Eastron SDM630 on Modbus TCP 127.0.0.1:$sim_port"
"$bin/instrument-sim" --profile firmware-profiles/eastron-sdm630.toml --listen "127.0.0.1:$sim_port" >"$run/instrument-sim.log" 2>&1 &
pids+=($!)

say "starting the simulated PV rig (Modbus TCP :$rig_modbus, SCPI :$rig_scpi, control :$rig_control; 60x time)"
"$bin/pv-rig-sim" --modbus "127.0.0.1:$rig_modbus" --scpi "127.0.0.1:$rig_scpi" \
  --control "127.0.0.1:$rig_control" --time-scale 60 >"$run/pv-rig-sim.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q '^listening control' "$run/pv-rig-sim.log" && break; sleep 0.1; done
grep -q '^listening control' "$run/pv-rig-sim.log" || { tail -20 "$run/pv-rig-sim.log"; exit 1; }

# The agent's local API needs a login: a demo operator (password on stdin).
printf '%s\n' demo-operator-password | "$bin/edge-agent" --config "$run/edge-agent.toml" \
  user add demo --role operator >/dev/null 2>&1 || true

say "starting edge-agent (status :$agent_port)"
"$bin/edge-agent" --config "$run/edge-agent.toml" >"$run/edge-agent.log" 2>&1 &
pids+=($!)

api="http://127.0.0.1:$hub_port/api/v1"
for _ in $(seq 100); do
  n=$(curl -fs -H "$auth" "$api/readings?limit=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["count"])' 2>/dev/null || echo 0)
  [ "$n" -gt 0 ] && break; sleep 0.2
done

# A protocol run through the agent's local API (docs/runs.md): STC power on a
# sample while the module is at 25 Cel (the criteria want 25 +- 2 Cel), then the
# hub's evaluation of it. A run that fails is reported; the demo goes on.
sample="sample:DEMO-0001"
say "starting an STC power run (stc-power, rated_pmax 400 W) on $sample, bench pv-rig"
python3 - "$agent_port" "$api" "$run/hub-api-key" "$sample" <<'PY' || say "the STC run did not finish as expected (see $run/edge-agent.log)"
import json, sys, time, urllib.error, urllib.request
agent = "http://127.0.0.1:%s" % sys.argv[1]
api, key_file, sample = sys.argv[2], sys.argv[3], sys.argv[4]
hub_auth = {"Authorization": "Bearer " + open(key_file).read().strip()}

def call(url, body=None, headers=None):
    req = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                 headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.load(r), r.headers
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null"), e.headers

def say(text):
    print("\033[1m[demo]\033[0m " + text, flush=True)

def until(what, seconds, check):
    end = time.time() + seconds
    while time.time() < end:
        v = check()
        if v is not None:
            return v
        time.sleep(0.5)
    sys.exit("timed out waiting for " + what)

# The local API needs a login (docs/configuration.md): the session cookie, and
# the CSRF token on every state change.
status, login, headers = call(agent + "/api/v1/login",
                              {"username": "demo", "password": "demo-operator-password"})
if status != 200:
    sys.exit("agent login: %s %s" % (status, login))
session = {"cookie": headers["set-cookie"].split(";")[0], "x-csrf-token": login["csrf_token"]}

def devices_online():
    _, h, _ = call(agent + "/health", headers=session)
    d = h.get("devices", [])
    return True if d and all(x["state"] == "online" for x in d) else None
until("the devices online", 60, devices_online)

status, run, _ = call(agent + "/api/v1/runs", {"protocol": "stc-power", "bench": "pv-rig",
                      "sample_id": sample, "parameters": {"rated_pmax": 400}}, session)
if status != 201:
    sys.exit("start refused: %s %s" % (status, run))
rid = run["id"]

def ended():
    _, v, _ = call("%s/api/v1/runs/%s" % (agent, rid), headers=session)
    return v if v["state"] not in ("running", "paused") else None
v = until("the run to end", 120, ended)
vals = v["values"]
say("agent: run %s %s after %d/%d steps: Pmax %.1f W (Isc %.2f A, Voc %.2f V, FF %.1f %%) at %.0f W/m2, %.1f Cel"
    % (rid, v["state"], v["steps_done"], v["executed_steps"], vals.get("stc.pmax", float("nan")),
       vals.get("stc.isc", float("nan")), vals.get("stc.voc", float("nan")), vals.get("stc.ff", float("nan")),
       vals.get("conditions.irradiance", float("nan")), vals.get("conditions.cell_temperature", float("nan"))))
say("agent: provisional verdicts: " + ", ".join("%s %s" % (c["criterion"], c["verdict"]) for c in v["verdicts"]))

def evaluated():
    _, l, _ = call("%s/runs?sample=%s" % (api, sample), headers=hub_auth)
    r = next((r for r in l.get("runs", []) if r["run_id"] == rid), None)
    return r if r and r["state"] == "completed" and r.get("verdict") else None
r = until("the hub's evaluation", 60, evaluated)
_, one, _ = call("%s/runs/%s" % (api, rid), headers=hub_auth)
e = one["evaluation"]
say("hub: run %s of %s on %s: %s, verdict %s (simulated: %s)"
    % (rid, r["protocol_id"], r["sample_id"], r["state"], r["verdict"], str(e["simulated"]).lower()))
for c in e["results"]:
    say("hub:   " + c["explanation"])
PY

# Something to watch: the chamber heads for 60 Cel at its 3 Cel/min ramp (simulated).
python3 - "$rig_control" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"set chamber temperature_setpoint 60\n")
reply = s.makefile().readline().strip()
sys.exit(0 if reply == "ok" else "pv-rig-sim: " + reply)
PY

cat <<TXT

  The platform is running. Readings flow every second:
    simulated SDM630 --Modbus TCP--> edge-agent --gRPC--> cloud-hub --> PostgreSQL
    simulated PV rig --Modbus TCP + SCPI--> edge-agent (every 2 s; the rig runs 60x faster than real time)

  The gateway's web page (docs/web.md): open http://127.0.0.1:$agent_port/ in a browser
    and log in as demo / demo-operator-password (an operator: writes and runs allowed).

  The hub's REST API needs a credential; a viewer API key for this demo is in
  $run/hub-api-key (docs/security.md: users, roles, keys):
    auth="Authorization: Bearer \$(cat $run/hub-api-key)"
  Latest readings (REST):   curl -H "\$auth" '$api/readings?device=sdm630-demo&metric=voltage_l1&limit=5'
  The simulated PV rig (simulator/README.md), its readings and its whole state:
    curl -H "\$auth" '$api/readings?device=chamber&metric=temperature&limit=5'
    curl -H "\$auth" '$api/readings?device=smu&metric=current&limit=5'
    python3 -c "import socket; s=socket.create_connection(('127.0.0.1',$rig_control)); s.sendall(b'state\\n'); print(s.makefile().readline())"
    (other control commands: silence chamber, answer chamber, help)
  Drive its chamber: log in (below), then with the login answer's csrf_token:
    curl -b $run/agent.cookies -H 'content-type: application/json' -H "X-CSRF-Token: \$csrf" \\
      -d '{"point":"temperature_setpoint","value":60}' http://127.0.0.1:$agent_port/api/v1/devices/chamber/write
  Protocol runs (docs/runs.md), at the gateway (after the login below) and at the hub:
    curl -b $run/agent.cookies http://127.0.0.1:$agent_port/api/v1/runs
    curl -H "\$auth" '$api/runs?sample=$sample'
  All metrics, newest 20:   curl -H "\$auth" '$api/readings?device=sdm630-demo&limit=20'
  Known devices:            curl -H "\$auth" '$api/devices'
  The meter's twin (model from its profile, live state): curl -H "\$auth" '$api/twins/instrument:demo-gateway:sdm630-demo'
  Twins (docs/twins.md):    curl -H "\$auth" '$api/twins?kind=instrument'
  As an AAS environment:    curl -H "\$auth" '$api/aas/shells'
  Hub readiness / metrics:  curl http://127.0.0.1:$hub_port/ready;  curl -H "\$auth" http://127.0.0.1:$hub_port/metrics
  Gateway health:           curl http://127.0.0.1:$agent_port/health   (status only without a login)
  Gateway login (demo / demo-operator-password), then the full health and devices:
    curl -c $run/agent.cookies -H 'content-type: application/json' \\
      -d '{"username":"demo","password":"demo-operator-password"}' http://127.0.0.1:$agent_port/api/v1/login
    curl -b $run/agent.cookies http://127.0.0.1:$agent_port/api/v1/devices
  Site MQTT bus:            mosquitto_sub -p $mqtt_port -t 'site/#' -v   (Debian: mosquitto-clients)
  Publish a reading:        mosquitto_pub -p $mqtt_port -q 1 -t site/demo/thermo/th-1/telemetry -m temp=21.5
  PostgreSQL:               psql postgres://postgres@127.0.0.1:$pg_port/postgres
  Logs and configs:         $run/

  Press Ctrl-C to stop everything.

TXT

# Show the data arriving until stopped.
while true; do
  for q in "device=sdm630-demo&metric=voltage_l1" "device=chamber&metric=temperature" "device=daq&metric=module_temperature"; do
    curl -fs -H "$auth" "$api/readings?$q&limit=1" | python3 -c '
import json, sys
d = json.load(sys.stdin)
for r in d["readings"]:
    print("[demo] {ts}  {device_id}  {metric} = {value:.2f} {unit}".format(**r))
' 2>/dev/null || say "hub not answering (see $run/cloud-hub.log)"
  done
  for pid in "${pids[@]}"; do
    kill -0 "$pid" 2>/dev/null || { say "a process exited; see logs in $run"; exit 1; }
  done
  sleep 5
done
