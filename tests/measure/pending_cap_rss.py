"""Fill the bridge's pending-authorization cap from many client addresses and report its RSS.

    cargo build --release && python3 tests/measure/pending_cap_rss.py target/release/mcp-oauth-bridge 25000

Starts the binary with local users on 127.0.0.1:18080 (the loopback peer is a trusted proxy, so
each request's X-Forwarded-For is its client address), registers one client, then sends N
authorizations from N addresses with `state` and `nonce` at their length limits, 4,000 over the
limits, and N/4 more; it prints the answers and the process's RSS after each round.
"""
import http.client, json, os, subprocess, sys, tempfile, time, urllib.parse, random, string
from concurrent.futures import ThreadPoolExecutor

binary, n = sys.argv[1], int(sys.argv[2])
port = 18080
cfg = f"""
server:
  address: "127.0.0.1:{port}"
  public_url: "http://127.0.0.1:{port}"
  trusted_proxies: ["127.0.0.1/32"]
oauth:
  audience: "http://127.0.0.1:{port}/mcp"
  dcr: {{ enabled: true, allowed_redirect_profiles: [loopback] }}
  local_users:
    - username: demo
      password_hash: "$2b$04$zSPsb4ku4Rk/1yqvikaUTuZEvji.VPcDb5fbK9htM7HZiku4a9pJG"
storage: {{ backend: memory }}
"""
d = tempfile.mkdtemp()
open(f"{d}/c.yaml", "w").write(cfg)
proc = subprocess.Popen([binary, "--config", f"{d}/c.yaml"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

def rss():
    for line in open(f"/proc/{proc.pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
def req(method, path, body=None, headers={}):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request(method, path, body=body, headers=headers)
    r = c.getresponse(); data = r.read(); c.close()
    return r.status, data
for _ in range(100):
    try:
        if req("GET", "/.well-known/oauth-authorization-server")[0] == 200: break
    except OSError: time.sleep(0.1)
status, body = req("POST", "/oauth/register", json.dumps({"redirect_uris": ["http://127.0.0.1:9/cb"], "token_endpoint_auth_method": "none"}), {"content-type": "application/json"})
client_id = json.loads(body)["client_id"]
print(f"idle RSS {rss():.1f} MiB")

def text(k): return "".join(random.choices(string.ascii_letters, k=k))
def authorize(i, over=False):
    extra = 1 if over else 0
    q = {"response_type": "code", "client_id": client_id, "redirect_uri": "http://127.0.0.1:9/cb",
         "state": text(1024 + extra), "nonce": text(512), "scope": "openid email profile offline_access",
         "code_challenge": text(43), "code_challenge_method": "S256"}
    addr = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
    return req("GET", "/oauth/authorize?" + urllib.parse.urlencode(q), headers={"x-forwarded-for": addr})[0]

def run(count, over=False, offset=0):
    tally = {}
    t = time.time()
    with ThreadPoolExecutor(16) as pool:
        for s in pool.map(lambda i: authorize(offset + i, over), range(count)):
            tally[s] = tally.get(s, 0) + 1
    return tally, time.time() - t
try:
    tally, secs = run(n)
    print(f"{n} authorizations at the limits in {secs:.1f} s: {tally}; RSS {rss():.1f} MiB")
    tally, secs = run(4000, over=True, offset=n)
    print(f"4000 over the limits in {secs:.1f} s: {tally}; RSS {rss():.1f} MiB")
    tally, secs = run(n // 4, offset=2 * n)
    print(f"{n // 4} more at the limits: {tally}; RSS {rss():.1f} MiB")
finally:
    proc.terminate()
    proc.wait()
