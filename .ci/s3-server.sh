# Sourced by .ci/run (and usable by hand: `source .ci/s3-server.sh`): installs the moto S3
# server from PyPI into a virtual environment (once), starts it on a free loopback port,
# creates the test bucket and exports what the tests and the demo read:
#   FLOWSTATE_S3_URL, AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION,
#   AWS_ALLOW_HTTP, FLOWSTATE_S3_PID.
# The server is stopped when the sourcing shell exits (trap on EXIT).

FLOWSTATE_MOTO_VENV="${FLOWSTATE_MOTO_VENV:-$HOME/.cache/flowstate/moto-venv}"
if ! "$FLOWSTATE_MOTO_VENV/bin/moto_server" --help >/dev/null 2>&1; then
    echo "== installing the moto S3 server into $FLOWSTATE_MOTO_VENV"
    python3 -m venv "$FLOWSTATE_MOTO_VENV"
    "$FLOWSTATE_MOTO_VENV/bin/pip" install --quiet --disable-pip-version-check 'moto[server]>=5,<6'
fi

FLOWSTATE_S3_PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
FLOWSTATE_S3_LOG="${TMPDIR:-/tmp}/flowstate-moto-$FLOWSTATE_S3_PORT.log"
"$FLOWSTATE_MOTO_VENV/bin/moto_server" -H 127.0.0.1 -p "$FLOWSTATE_S3_PORT" >"$FLOWSTATE_S3_LOG" 2>&1 &
export FLOWSTATE_S3_PID=$!
trap 'kill "$FLOWSTATE_S3_PID" 2>/dev/null || true' EXIT

export AWS_ENDPOINT_URL="http://127.0.0.1:$FLOWSTATE_S3_PORT"
export AWS_ACCESS_KEY_ID=flowstate-test
export AWS_SECRET_ACCESS_KEY=flowstate-test
export AWS_REGION=us-east-1
export AWS_ALLOW_HTTP=true
export FLOWSTATE_S3_URL="s3://flowstate-test"

# Wait for the server (at most 30 s), then create the bucket.
python3 - <<'PY'
import os, time, urllib.request
endpoint = os.environ["AWS_ENDPOINT_URL"]
deadline = time.time() + 30
while True:
    try:
        urllib.request.urlopen(endpoint + "/", timeout=2).read()
        break
    except Exception:
        if time.time() > deadline:
            raise SystemExit("the moto S3 server did not start; see its log")
        time.sleep(0.2)
req = urllib.request.Request(endpoint + "/flowstate-test", method="PUT")
urllib.request.urlopen(req, timeout=10).read()
PY
echo "== S3-compatible server (moto) at $AWS_ENDPOINT_URL, bucket flowstate-test (pid $FLOWSTATE_S3_PID)"
