# Start-up time of `triage serve` (built-in catalog and model) until /health answers 200, the
# RSS then, and the stripped binary size: the README code map's binary table.
# Usage: python3 scripts/startup.py BIN [runs]
import os, subprocess, sys, time, urllib.request, tempfile, shutil, statistics, socket
bin_ = os.path.abspath(sys.argv[1]); runs = int(sys.argv[2]) if len(sys.argv) > 2 else 7
d = tempfile.mkdtemp()
stripped = os.path.join(d, "stripped"); subprocess.run(["strip", "-o", stripped, bin_], check=True)
print(f"size: {os.path.getsize(bin_)/1e6:.1f} MB as built, {os.path.getsize(stripped)/1e6:.1f} MB stripped")
times = []; rss = []
for i in range(runs):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    t0 = time.perf_counter()
    p = subprocess.Popen([bin_, "serve", "--listen", f"127.0.0.1:{port}"], cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "TRIAGE_CONFIG": ""})
    while True:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).status == 200: break
        except Exception: time.sleep(0.002)
    times.append((time.perf_counter() - t0) * 1000)
    with open(f"/proc/{p.pid}/status") as f:
        rss.append(int([l for l in f if l.startswith("VmRSS")][0].split()[1]) / 1024)
    p.terminate(); p.wait()
print(f"start-up to /health 200: median {statistics.median(times):.0f} ms (min {min(times):.0f}, max {max(times):.0f}, {runs} runs); RSS after start {statistics.median(rss):.0f} MB")
shutil.rmtree(d)
