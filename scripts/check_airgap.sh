#!/usr/bin/env bash
# Prove the default gateway touches loopback only: strace every connect() of every process
# over a start, a few requests (plain and streamed) and a shutdown; fail on any other address.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
command -v strace >/dev/null || { apt-get update -qq && apt-get install -y -qq strace >/dev/null; }
out="${1:-$(mktemp -d)}"; mkdir -p "$out"
port=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export HF_HUB_OFFLINE=1 LITELLM_LOCAL_MODEL_COST_MAP=True
strace -f -qq -e trace=connect -o "$out/connect.trace" \
  .venv/bin/slm-router serve --port "$port" > "$out/serve.log" 2>&1 &
pid=$!
for _ in $(seq 1 300); do
  curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 1
done
.venv/bin/python - "$port" <<'PY'
import sys, openai
c = openai.OpenAI(base_url=f"http://127.0.0.1:{sys.argv[1]}/v1", api_key="x", max_retries=0)
for q in ["What is 2 plus 2?", "Write a python hello world."]:
    r = c.chat.completions.create(model="auto", messages=[{"role": "user", "content": q}], max_tokens=8)
    print("answer:", r.model, repr(r.choices[0].message.content))
for _ in c.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}], max_tokens=8, stream=True):
    pass
PY
# SIGINT the gateway itself (strace would only detach on it), then wait for strace to finish.
pkill -INT -f "slm-router serve --port $port" || true
wait "$pid" || true
.venv/bin/python - "$out/connect.trace" <<'PY'
import re, sys
ok_v4 = re.compile(r'inet_addr\("127\.')
ok_v6 = re.compile(r'inet_pton\(AF_INET6, "(::1|::ffff:127\.[0-9.]+)"')
bad, total = [], 0
for line in open(sys.argv[1]):
    if "connect(" not in line:
        continue
    total += 1
    if "AF_INET6" in line:
        if not ok_v6.search(line):
            bad.append(line.strip())
    elif "AF_INET" in line and not ok_v4.search(line):
        bad.append(line.strip())
print(f"connect() calls: {total}; to non-loopback addresses: {len(bad)}")
for b in bad[:20]:
    print("  ", b)
sys.exit(1 if bad else 0)
PY
