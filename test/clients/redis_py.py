# redis-py's Sentinel (Debian's python3-redis), default options but a socket
# timeout, as its documentation shows (see README.md).
import os, signal, sys, time
from redis.sentinel import Sentinel

stop = False
def on_term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_term)

addrs = [(a.rsplit(":", 1)[0], int(a.rsplit(":", 1)[1])) for a in os.environ["SENTINELS"].split(",")]
pw = os.environ.get("SENTINEL_PASSWORD")
sentinel = Sentinel(addrs, socket_timeout=2, sentinel_kwargs={"socket_timeout": 2, **({"password": pw} if pw else {})})
master = sentinel.master_for(os.environ["MASTER"], socket_timeout=2)
prefix = os.environ["PREFIX"]
interval = float(os.environ.get("INTERVAL_MS", "5")) / 1000
n = 0
while not stop:
    n += 1
    try:
        master.set(f"{prefix}:{n}", str(n))
        sys.stdout.write(f"ack {n} {time.time() * 1000:.1f}\n")
    except Exception as e:  # every error goes back to the application
        reason = " ".join(f"{type(e).__name__}: {e}".split())[:200]
        sys.stdout.write(f"fail {n} {time.time() * 1000:.1f} {reason}\n")
    sys.stdout.flush()
    if interval > 0:
        time.sleep(interval)
sys.stdout.write(f"done {n}\n")
sys.stdout.flush()
